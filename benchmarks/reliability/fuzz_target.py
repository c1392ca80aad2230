"""Atheris target: ``lora_io.parse_header`` and ``lora_io.load_adapter`` on arbitrary bytes.

A crash is any exception other than :class:`lora_io.LoraFileError` (and any hang or memory blow-up
libFuzzer catches with ``-timeout`` / ``-rss_limit_mb``). Run through
``python -m benchmarks.reliability.fuzz_target CORPUS_DIR -max_total_time=120`` (what
``benchmarks.reliability.part_fuzz`` does); libFuzzer flags pass straight through.

The first input byte picks the target, so one run covers the header parser alone, the full
reader, and the reader with the rest split into a file and an ``adapter_config.json``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["lora_io"]):
    import lora_io
    from lora_io import LoraFileError
    from lora_io.safetensors_header import header_length


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0] % 4, data[1:]
    try:
        if mode == 0:
            lora_io.parse_header(body)
        elif mode == 1:
            lora_io.parse_header(body, len(body))
        elif mode == 2:
            header_length(body[:16])
            lora_io.load_adapter(body, allow_non_finite=bool(data[0] & 0x80))
        else:
            cut = body.find(b"\n\n{")
            if cut < 0:
                lora_io.load_adapter(body)
            else:
                lora_io.load_adapter(body[:cut], config=body[cut + 2 :])
    except LoraFileError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
