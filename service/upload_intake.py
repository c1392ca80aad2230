"""Read an upload from the request stream with byte caps, refusing a bad file as early as its bytes allow.

Why not FastAPI's ``UploadFile``: Starlette parses and spools the *whole* multipart body before the
route (and its auth) runs, and puts no cap on file parts. Here the route reads ``request.stream()``
itself, after authentication: a raw ``application/octet-stream`` body is the adapter; a
``multipart/form-data`` body is parsed incrementally (python-multipart's streaming parser) into a
``file`` part and an optional ``config`` part, each with its own cap. The adapter's bytes are
counted, hashed and spooled to a temporary file in the content store; the safetensors header is
validated the moment its last byte arrives (pickles, other formats, bad headers, LoRA variants and
key grammar are refused then, before the rest is read), and nothing is stored until the whole file
has passed full validation.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from lora_io import FileTooLargeError, SafetensorsHeader, parse_header, parse_keys
from lora_io.safetensors_header import MAX_HEADER_BYTES, check_file_size, header_length
from service.error_handlers import Problem

ACCEPTED_UPLOADS = (
    "send multipart/form-data with a `file` part (the .safetensors) and an optional `config` part "
    "(adapter_config.json), or the .safetensors itself as an application/octet-stream body"
)

MULTIPART_OVERHEAD = 64 * 1024
"""Bytes allowed on top of the file and config caps for multipart boundaries and part headers."""


@dataclass(frozen=True)
class ReceivedUpload:
    """A fully received, header-checked adapter (still in its temporary file) and its config."""

    path: Path
    sha256: str
    size: int
    header: SafetensorsHeader
    config: bytes | None
    config_sha256: str | None


class AdapterSink:
    """Counts, hashes and spools the adapter; validates the header as soon as it is complete."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._file = path.open("wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self._prefix = bytearray()
        self._needed: int | None = None
        self.header: SafetensorsHeader | None = None

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if self.size > self.max_bytes:
            raise FileTooLargeError(
                f"the upload passed {self.max_bytes:,} bytes; adapters are accepted up to {self.max_bytes:,} bytes"
            )
        self._hash.update(data)
        self._file.write(data)
        if self.header is None:
            self._prefix += data[: MAX_HEADER_BYTES + 8 - len(self._prefix)]
            self._check_header()

    def _check_header(self) -> None:
        if self._needed is None and len(self._prefix) >= 9:  # length + "{": see header_length
            self._needed = 8 + header_length(
                bytes(self._prefix[:16])
            )  # sniffs pickles and other formats
        if self._needed is not None and len(self._prefix) >= self._needed:
            header = parse_header(bytes(self._prefix[: self._needed]))
            if header.file_size > self.max_bytes:
                raise FileTooLargeError(
                    f"the safetensors header describes a file of {header.file_size:,} bytes; adapters are "
                    f"accepted up to {self.max_bytes:,} bytes"
                )
            parse_keys(header.tensors)  # variants and non-LoRA key layouts, from the header alone
            self.header = header
            self._prefix = bytearray()

    def finish(self) -> tuple[str, SafetensorsHeader]:
        """Close the file and check the whole-file rules (truncation, trailing bytes)."""
        self.close()
        header = self.header or parse_header(bytes(self._prefix), self.size)
        check_file_size(header, self.size)
        return self._hash.hexdigest(), header

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


class _BytesSink:
    def __init__(self, max_bytes: int, what: str) -> None:
        self.max_bytes = max_bytes
        self.what = what
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data
        if len(self.data) > self.max_bytes:
            raise FileTooLargeError(
                f"the {self.what} part is larger than {self.max_bytes:,} bytes, its limit"
            )


class _MultipartReader:
    """Feeds python-multipart's streaming parser and routes part data to the right sink."""

    def __init__(self, boundary: bytes, adapter: AdapterSink, max_config_bytes: int) -> None:
        self.adapter = adapter
        self.config: _BytesSink | None = None
        self._max_config = max_config_bytes
        self._seen: set[str] = set()
        self._field = bytearray()
        self._value = bytearray()
        self._headers: dict[str, bytes] = {}
        self._sink: AdapterSink | _BytesSink | None = None
        self._complete: set[str] = set()
        self._current = ""
        self.ended = False
        self.parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._part_begin,
                "on_header_field": lambda d, s, e: self._field.extend(d[s:e]),
                "on_header_value": lambda d, s, e: self._value.extend(d[s:e]),
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )

    def _part_begin(self) -> None:
        self._headers = {}
        self._sink = None

    def _header_end(self) -> None:
        self._headers[bytes(self._field).decode("latin-1").lower()] = bytes(self._value)
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get("content-disposition"))
        name = params.get(b"name", b"").decode("latin-1")
        self._current = name
        if name in self._seen:
            raise Problem(
                422,
                "Invalid upload",
                f"the form has more than one `{name}` part; {ACCEPTED_UPLOADS}",
                kind="invalid_upload",
            )
        self._seen.add(name)
        if name == "file":
            self._sink = self.adapter
        elif name == "config":
            self.config = self._sink = _BytesSink(self._max_config, "config (adapter_config.json)")
        else:
            raise Problem(
                422, "Invalid upload", f"unexpected form field {name!r}; accepted fields are `file` (required) and `config`",
                kind="invalid_upload",
            )  # fmt: skip

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._sink is not None:
            self._sink.write(data[start:end])

    def _part_end(self) -> None:
        self._complete.add(self._current)

    def _end(self) -> None:
        self.ended = True

    @property
    def has_file(self) -> bool:
        return "file" in self._complete


async def receive_upload(
    content_type: str,
    content_length: str | None,
    chunks: AsyncIterator[bytes],
    temp_path: Path,
    *,
    max_upload_bytes: int,
    max_config_bytes: int,
) -> ReceivedUpload:
    """Read the body, enforcing every cap; the adapter ends up in ``temp_path`` (deleted on error).

    Raises:
        Problem, LoraFileError: the request or the file is refused (413/415/422).
    """
    media, params = parse_options_header(content_type)
    media_type = media.decode("latin-1").lower()
    multipart = media_type == "multipart/form-data"
    if not multipart and media_type not in ("application/octet-stream", ""):
        raise Problem(
            415,
            "Unsupported media type",
            f"Content-Type {media_type!r} is not accepted; {ACCEPTED_UPLOADS}",
            kind="unsupported_media_type",
        )
    cap = max_upload_bytes + (max_config_bytes + MULTIPART_OVERHEAD if multipart else 0)
    if content_length is not None and content_length.isdigit() and int(content_length) > cap:
        raise FileTooLargeError(
            f"the request body is {int(content_length):,} bytes; adapters are accepted up to {max_upload_bytes:,} bytes"
        )
    adapter = AdapterSink(temp_path, max_upload_bytes)
    try:
        reader = None
        if multipart:
            boundary = params.get(b"boundary")
            if not boundary:
                raise Problem(
                    422,
                    "Invalid upload",
                    "multipart/form-data without a boundary parameter",
                    kind="invalid_upload",
                )
            reader = _MultipartReader(boundary, adapter, max_config_bytes)
        received = 0
        async for chunk in chunks:
            received += len(chunk)
            if received > cap:
                raise FileTooLargeError(
                    f"the request body passed {cap:,} bytes; adapters are accepted up to {max_upload_bytes:,} bytes"
                )
            if reader is not None:
                reader.parser.write(chunk)
            else:
                adapter.write(chunk)
        if reader is not None:
            reader.parser.finalize()
            if not reader.ended:
                raise Problem(
                    422,
                    "Invalid upload",
                    "the multipart body ended before its closing boundary (truncated upload?)",
                    kind="invalid_upload",
                )
            if not reader.has_file:
                raise Problem(
                    422,
                    "Invalid upload",
                    f"the form has no `file` part; {ACCEPTED_UPLOADS}",
                    kind="invalid_upload",
                )
        if adapter.size == 0:
            raise Problem(
                422,
                "Invalid upload",
                f"the upload is empty; {ACCEPTED_UPLOADS}",
                kind="invalid_upload",
            )
        sha256, header = adapter.finish()
        config = (
            bytes(reader.config.data) if reader is not None and reader.config is not None else None
        )
        return ReceivedUpload(
            path=temp_path,
            sha256=sha256,
            size=adapter.size,
            header=header,
            config=config,
            config_sha256=hashlib.sha256(config).hexdigest() if config is not None else None,
        )
    except MultipartParseError as exc:
        adapter.close()
        _unlink(temp_path)
        raise Problem(
            422,
            "Invalid upload",
            f"the multipart body is malformed ({exc}); {ACCEPTED_UPLOADS}",
            kind="invalid_upload",
        ) from None
    except BaseException:
        adapter.close()
        _unlink(temp_path)
        raise


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
