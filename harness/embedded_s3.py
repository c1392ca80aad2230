"""Start a private S3-compatible server (moto's server mode) as a child process, for the tests.

Why moto: it speaks the S3 protocol over real HTTP (signatures, multipart uploads, error codes) and
is a pip package, so the S3 content store is tested against a real server on a machine with nothing
but Python. It listens on loopback only and keeps everything in memory (a stopped server forgets its
objects).

Credentials are enforced like a real store's: the server starts open, :meth:`EmbeddedS3.start`
creates the bucket, an IAM user with an ``s3:*`` policy and its access key, then switches moto's
IAM authentication on for every later request (moto's ``/moto-api/reset-auth``, the server-mode
form of its ``INITIAL_NO_AUTH_ACTION_COUNT`` setting). From then on an unknown key id or a wrong
secret is refused (``InvalidAccessKeyId``, ``SignatureDoesNotMatch``), as MinIO or AWS would.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO

import boto3

from harness.embedded_redis import free_port

REGION = "us-east-1"
_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}
_SETUP_CREDENTIALS = {"aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
"""Used only before authentication is switched on, when moto accepts any signature."""


class EmbeddedS3:
    """One moto server bound to ``host:port`` holding ``bucket``; its log in ``log_dir``."""

    def __init__(
        self,
        log_dir: str | Path,
        *,
        bucket: str = "loravet-test",
        port: int | None = None,
        host: str = "127.0.0.1",
        require_auth: bool = True,
    ) -> None:
        self.log_dir = Path(log_dir).resolve()
        self.bucket = bucket
        self.host = host
        self.port = port or free_port(host)
        self.require_auth = require_auth
        self.access_key_id = "open"
        """The key to use; any key is accepted when ``require_auth`` is off."""
        self.secret_access_key = "open"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "moto-server.log"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]

    def settings(self, prefix: str = "") -> dict[str, Any]:
        """The ``ContentStoreSettings`` fields (API and worker alike) that use this server."""
        return {
            "store_backend": "s3",
            "s3_endpoint_url": self.url,
            "s3_bucket": self.bucket,
            "s3_region": REGION,
            "s3_access_key_id": self.access_key_id,
            "s3_secret_access_key": self.secret_access_key,
            "s3_prefix": prefix,
        }

    def client(self, access_key_id: str | None = None, secret_access_key: str | None = None) -> Any:
        """A plain boto3 S3 client on this server (for a test's own look at the bucket)."""
        return self._client(
            "s3",
            aws_access_key_id=access_key_id or self.access_key_id,
            aws_secret_access_key=secret_access_key or self.secret_access_key,
        )

    def start(self, timeout_s: float = 30.0) -> EmbeddedS3:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_file.open("ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
        # own session: a Ctrl-C in the terminal reaches the test runner, which stops us in order
        self.process = subprocess.Popen(
            self.command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
        deadline = time.monotonic() + timeout_s
        while not self._answers():
            if self.process.poll() is not None:
                self._close_log()
                raise RuntimeError(f"the S3 server exited at start (see {self.log_file})")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"the S3 server did not answer within {timeout_s:g} s")
            time.sleep(0.1)
        try:
            self._provision()
        except BaseException:
            self.kill()
            raise
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it hangs. Its objects are gone (moto keeps them in memory)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait()
        self._close_log()

    def __enter__(self) -> EmbeddedS3:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- internals
    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _client(self, service: str, **credentials: str) -> Any:
        session = boto3.session.Session(region_name=REGION, **credentials)
        return session.client(service, endpoint_url=self.url)

    def _provision(self) -> None:
        """The bucket, then (with ``require_auth``) a user, its key, and authentication on."""
        self._client("s3", **_SETUP_CREDENTIALS).create_bucket(Bucket=self.bucket)
        if not self.require_auth:
            return
        iam = self._client("iam", **_SETUP_CREDENTIALS)
        iam.create_user(UserName="loravet")
        iam.put_user_policy(
            UserName="loravet", PolicyName="loravet-s3", PolicyDocument=json.dumps(_POLICY)
        )
        key = iam.create_access_key(UserName="loravet")["AccessKey"]
        self.access_key_id, self.secret_access_key = key["AccessKeyId"], key["SecretAccessKey"]
        # authenticate every request from now on (0 more unauthenticated actions)
        request = urllib.request.Request(
            f"{self.url}/moto-api/reset-auth",
            data=b"0",
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.status != 200:
                raise RuntimeError(
                    f"the S3 server refused to switch authentication on ({response.status})"
                )

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
