"""Part 5: security checks against the real stack.

* every route needs the API key but health and metrics (routes enumerated from the served OpenAPI;
  each is called without a key, with a wrong key and with the key in the query string: 401);
* keys never appear in logs (API and worker logs captured at DEBUG, grepped for every key, every
  presented wrong key, their sha256 digests and the webhook secrets; the Redis AOF too);
* a pickle whose payload would create a file is uploaded (raw, multipart, in a torch zip, as the
  config part): refused, and the file never appears;
* path-like upload filenames (``../../etc/passwd``, absolute paths, backslashes, a NUL byte) never
  escape the store: every file the stack wrote is a content-addressed blob inside it;
* callback URLs to private, loopback, link-local, CGNAT, ULA and metadata addresses are refused: IP
  literals by the API (422), DNS names that resolve to them (a resolver override in the stack's
  processes, no DNS traffic) at delivery, on the address; a connect guard in those processes logs
  and blocks any non-loopback connection, so a policy failure can never send traffic anywhere.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from benchmarks.reliability.suite_stack import suite_config
from harness.client import upload, wait_job
from harness.lora_files import peft_adapter
from harness.profile import KEYS
from harness.stack import REPO, ProcessStack

PUBLIC = {"/healthz", "/readyz", "/metrics"}
WRONG_KEY = "rel-wrong-key-5d4c3b2a19f8e7d6c5b4a39281"
RESOLVER = Path(__file__).resolve().parent / "resolver"

FORBIDDEN_LITERALS = [
    "http://127.0.0.1:9/h", "http://127.8.9.10/h", "http://10.0.0.5/h", "http://172.16.3.4/h",
    "http://192.168.1.1/h", "http://169.254.169.254/latest/meta-data/", "http://169.254.1.1/h",
    "http://100.64.0.1/h", "http://0.0.0.0/h", "http://[::1]/h", "http://[fe80::1]/h",
    "http://[fd00::1]/h", "http://[::ffff:127.0.0.1]/h", "http://[::ffff:169.254.169.254]/h",
    "http://metadata.google.internal/computeMetadata/v1/", "http://[fd00:ec2::254]/h",
]  # fmt: skip
NUMERIC_FORMS = [
    "http://2130706433/h",
    "http://0x7f000001/h",
    "http://127.1/h",
    "http://017700000001/h",
]
NAMES = {
    "loopback.rebind.test": ["127.0.0.1"],
    "private.rebind.test": ["10.1.2.3"],
    "private192.rebind.test": ["192.168.0.10"],
    "linklocal.rebind.test": ["169.254.1.1"],
    "metadata.rebind.test": ["169.254.169.254"],
    "cgnat.rebind.test": ["100.64.0.1"],
    "v6loopback.rebind.test": ["::1"],
    "v6ula.rebind.test": ["fd00::1"],
    "mapped.rebind.test": ["::ffff:10.0.0.1"],
    "mixed.rebind.test": ["127.0.0.1", "10.9.9.9"],
}
FILENAMES = [b"../../etc/passwd", b"/etc/passwd", b"..\\..\\windows\\system32\\evil.dll",
             b"a\x00b.safetensors", b"../" * 12 + b"tmp/pwned.safetensors", b"%2e%2e%2fpwned"]  # fmt: skip


def _pickle_creating(path: Path) -> bytes:
    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (open, (str(path), "w"))

    return pickle.dumps(Payload(), protocol=2)


def _fill(path: str) -> str:
    values = {"job_id": "vet_0", "report_id": "0" * 64, "sub_id": "whs_0"}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m[1], "x"), path)


def auth_checks(stack: ProcessStack) -> dict[str, Any]:
    schema = httpx.get(f"{stack.url}/openapi.json", timeout=10).json()
    rows, failures = [], []
    with httpx.Client() as client:
        for path, ops in schema["paths"].items():
            for method in ops:
                url = f"{stack.url}{_fill(path)}"
                if path in PUBLIC:
                    code = client.request(method.upper(), url, timeout=10).status_code
                    rows.append(
                        {"route": f"{method.upper()} {path}", "no_key": code, "public": True}
                    )
                    continue
                codes = {
                    "no_key": client.request(method.upper(), url, timeout=10).status_code,
                    "wrong_key": client.request(method.upper(), url, headers={"X-API-Key": WRONG_KEY}, timeout=10).status_code,
                    "wrong_bearer": client.request(method.upper(), url, headers={"Authorization": f"Bearer {WRONG_KEY}"}, timeout=10).status_code,
                    "key_in_query": client.request(method.upper(), url, params={"api_key": KEYS[0], "key": KEYS[0]}, timeout=10).status_code,
                }  # fmt: skip
                rows.append({"route": f"{method.upper()} {path}", **codes})
                if any(c != 401 for c in codes.values()):
                    failures.append(rows[-1])
        other = _non_schema_routes(stack, client)
    return {
        "routes": rows,
        "routes_checked": len(rows),
        "failures": failures,
        "non_schema_routes": other,
    }


def _non_schema_routes(stack: ProcessStack, client: httpx.Client) -> dict[str, Any]:
    """Routes the app has beyond the OpenAPI (web pages, docs): what each answers without a key."""
    from service.main import create_app
    from service.settings import ApiSettings

    app = create_app(
        ApiSettings(
            redis_url=stack.redis.url,
            storage_dir=stack.root / "scratch-store",
            keys=[SecretStr(k) for k in KEYS],
        )
    )
    schema_paths = set(httpx.get(f"{stack.url}/openapi.json", timeout=10).json()["paths"])
    out = {}
    for route in _walk(app.router.routes):
        path = getattr(route, "path", None)
        if not path or path in schema_paths:
            continue
        methods = sorted((getattr(route, "methods", None) or {"GET"}) - {"HEAD"})
        for method in methods:
            r = client.request(
                method, f"{stack.url}{_fill(path)}", timeout=10, follow_redirects=False
            )
            out[f"{method} {path}"] = {
                "status": r.status_code,
                "location": r.headers.get("location"),
            }
    return out


def _walk(routes: Any) -> Any:
    """Every route, through FastAPI's nested included routers."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _walk(inner.routes)
        else:
            yield route


def pickle_checks(stack: ProcessStack, scratch: Path) -> dict[str, Any]:
    scratch.mkdir(parents=True, exist_ok=True)
    marker = scratch / "pwned-by-pickle.txt"
    payload = _pickle_creating(marker)
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr("archive/data.pkl", payload)
    statuses = {}
    with httpx.Client() as client:
        statuses["raw"] = upload(client, stack.url, KEYS[0], payload, raw=True).status_code
        statuses["multipart"] = upload(
            client, stack.url, KEYS[0], payload, filename=b"adapter_model.safetensors"
        ).status_code
        statuses["as .bin name"] = upload(
            client, stack.url, KEYS[0], payload, filename=b"pytorch_model.bin"
        ).status_code
        statuses["torch zip"] = upload(
            client, stack.url, KEYS[0], zbuf.getvalue(), raw=True
        ).status_code
        statuses["as config part"] = upload(
            client, stack.url, KEYS[0], peft_adapter(501), config=payload
        ).status_code
    time.sleep(3)  # give a worker every chance to (wrongly) touch it
    return {
        "statuses": statuses,
        "marker_created": marker.exists(),
        "refused": all(s in (415, 422) for s in statuses.values()),
    }


def filename_checks(stack: ProcessStack) -> dict[str, Any]:
    before = {p for p in stack.root.rglob("*") if p.is_file()}
    rows = []
    with httpx.Client() as client:
        for i, name in enumerate(FILENAMES):
            r = upload(client, stack.url, KEYS[0], peft_adapter(600 + i), filename=name)
            job = r.json().get("job_id") if r.status_code == 202 else None
            status = (
                wait_job(client, stack.url, KEYS[0], job, timeout_s=60)["status"] if job else None
            )
            rows.append(
                {"filename": name.decode("latin-1"), "status": r.status_code, "job": status}
            )
        traversal = {
            u: client.get(f"{stack.url}{u}", headers=stack.headers(), timeout=10).status_code
            for u in ("/v1/reports/..%2F..%2F..%2Fetc%2Fpasswd", "/v1/reports/../../etc/passwd",
                      "/v1/jobs/..%2F..%2Fetc%2Fpasswd", "/v1/webhooks/..%2F..%2Fx")
        }  # fmt: skip
    store = stack.store.resolve()
    blob = re.compile(
        r"(adapters/[0-9a-f]{2}/[0-9a-f]{64}\.safetensors|(configs|reports)/[0-9a-f]{2}/[0-9a-f]{64}\.json)"
    )
    new = [p for p in stack.root.rglob("*") if p.is_file() and p not in before]
    stray = []
    for p in new:
        rel = p.resolve()
        if store in rel.parents:
            if not blob.fullmatch(str(rel.relative_to(store))):
                stray.append(str(rel.relative_to(stack.root)))
        elif not str(rel.relative_to(stack.root)).startswith(("logs/", "redis/")):
            stray.append(str(rel.relative_to(stack.root)))
    escaped = [
        str(p)
        for p in (Path("/tmp/pwned.safetensors"), stack.root.parent / "etc" / "passwd")
        if p.exists()
    ]
    return {"uploads": rows, "traversal_urls": traversal, "stray_files": stray, "escaped": escaped,
            "temp_files_left": sorted(p.name for p in (store / "tmp").iterdir())}  # fmt: skip


def callback_checks(stack: ProcessStack, connect_log: Path) -> dict[str, Any]:
    literal = {}
    with httpx.Client() as client:
        h = stack.headers(2)
        for url in FORBIDDEN_LITERALS:
            r = client.post(f"{stack.url}/v1/webhooks", json={"url": url}, headers=h)
            literal[url] = r.status_code
        accepted: dict[str, str] = {}
        numeric: dict[str, dict[str, Any]] = {}
        for url in NUMERIC_FORMS:
            r = client.post(f"{stack.url}/v1/webhooks", json={"url": url}, headers=h)
            numeric[url] = {"api": r.status_code}
            if r.status_code == 201:
                accepted[url] = r.json()["id"]
        names: dict[str, dict[str, Any]] = {}
        for name in NAMES:
            url = f"http://{name}:8080/hook"
            r = client.post(f"{stack.url}/v1/webhooks", json={"url": url}, headers=h)
            names[url] = {"api": r.status_code}
            if r.status_code == 201:
                accepted[url] = r.json()["id"]
        # one finished job: a report.completed event for each of those subscriptions
        up = upload(client, stack.url, KEYS[2], peft_adapter(777), raw=True)
        wait_job(client, stack.url, KEYS[2], up.json()["job_id"], timeout_s=60)
        deadline = time.monotonic() + 30
        outcomes: dict[str, list[str]] = {}
        while time.monotonic() < deadline:
            outcomes = {
                url: [d["outcome"] + ": " + d["detail"] for d in client.get(f"{stack.url}/v1/webhooks/{sid}/deliveries", headers=h).json()]
                for url, sid in accepted.items()
            }  # fmt: skip
            if all(outcomes.values()):
                break
            time.sleep(0.5)
    for url, got in outcomes.items():
        (numeric if url in numeric else names)[url]["delivery"] = got[0] if got else "no attempt"
    attempts = connect_log.read_text().split() if connect_log.exists() else []
    ok_literals = all(c == 422 for c in literal.values())
    ok_rest = all(
        v["api"] == 422 or str(v.get("delivery", "")).startswith("refused")
        for v in (*numeric.values(), *names.values())
    )
    return {"ip_literals": literal, "numeric_forms": numeric, "dns_names": names,
            "non_loopback_connect_attempts": attempts, "all_refused": ok_literals and ok_rest and not attempts}  # fmt: skip


def key_leak_checks(stack: ProcessStack, secrets_seen: list[str]) -> dict[str, Any]:
    text = stack.log_text()
    aof = "".join(p.read_text(errors="replace") for p in (stack.root / "redis").rglob("*.aof"))
    needles = {f"key{i}": k for i, k in enumerate(KEYS)} | {"wrong_key": WRONG_KEY}
    needles |= {
        f"sha256(key{i})": hashlib.sha256(k.encode()).hexdigest() for i, k in enumerate(KEYS)
    }
    needles |= {f"webhook_secret{i}": s for i, s in enumerate(secrets_seen)}
    found_logs = sorted(n for n, v in needles.items() if v in text)
    found_aof = sorted(
        n for n, v in needles.items() if v in aof and not n.startswith("webhook_secret")
    )
    return {"log_bytes": len(text), "log_lines": text.count("\n"), "found_in_logs": found_logs,
            "found_in_redis_aof": found_aof}  # fmt: skip


def run(root: Path) -> dict[str, Any]:
    base = root / "security"
    connect_log = base / "connect-attempts.log"
    env = {
        "PYTHONPATH": f"{RESOLVER}:{REPO}",
        "LORAVET_TEST_RESOLVE": json.dumps(NAMES),
        "LORAVET_TEST_CONNECT_LOG": str(connect_log),
    }
    cfg = suite_config(
        workers=1,
        api_env={"LORAVET_API_LOG_LEVEL": "DEBUG"},
        worker_env={"LORAVET_WORKER_LOG_LEVEL": "DEBUG"},
        extra_env=env,
    )
    with ProcessStack(base / "stack", cfg) as stack:
        stack.wait_workers_registered()
        out: dict[str, Any] = {"auth": auth_checks(stack)}
        out["pickle"] = pickle_checks(stack, base / "scratch")
        out["filenames"] = filename_checks(stack)
        out["callbacks"] = callback_checks(stack, connect_log)
        with (
            httpx.Client() as client
        ):  # keys typed into the web sign-in form must not be logged either
            out["web_sign_in"] = {
                name: client.post(
                    f"{stack.url}/ui/sign-in", data={"api_key": key}, timeout=10
                ).status_code
                for name, key in (("valid key", KEYS[4]), ("wrong key", WRONG_KEY))
            }
        with httpx.Client() as client:  # a secret that exists, to look for in the logs
            made = client.post(
                f"{stack.url}/v1/webhooks",
                json={"url": "https://hooks.example.com/x"},
                headers=stack.headers(3),
            )
            secrets_seen = [made.json().get("secret", "")] if made.status_code == 201 else []
        time.sleep(1)
        out["keys_in_logs"] = key_leak_checks(stack, secrets_seen)
        out["crashes"] = stack.crashed()
    return out
