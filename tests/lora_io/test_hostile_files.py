"""A catalogue of malformed and hostile files (modelled on the safetensors reference's attack list).

Each case asserts its own error class and the words of its message, so a user is told what is wrong.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import lora_io
from harness.hostile_files import CASES, good_pair, pickle_creating
from harness.lora_files import safetensors_bytes
from lora_io import errors as E


def test_catalogue_is_large_enough() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize(("name", "data", "error", "words"), CASES, ids=[c[0] for c in CASES])
def test_hostile_file_is_refused_with_its_own_reason(
    name: str, data: bytes, error: type, words: str, tmp_path: Path
) -> None:
    with pytest.raises(error) as info:
        lora_io.load_adapter(data)
    assert words in str(info.value)
    # the same file on disk, through the path API, gives the same error
    path = tmp_path / "upload.safetensors"
    path.write_bytes(data)
    with pytest.raises(error):
        lora_io.load_adapter(path)


def test_every_error_says_what_is_accepted_or_why() -> None:
    """Errors are for people: each message is a full sentence, never a bare key or repr."""
    for _, data, _, _ in CASES:
        with pytest.raises(E.LoraFileError) as info:
            lora_io.load_adapter(data)
        assert len(info.value.message) > 25


def test_header_is_refused_from_the_first_bytes_of_a_stream() -> None:
    """The API sees only the first bytes while an upload streams in: that is enough to refuse."""
    good = safetensors_bytes(good_pair())
    n = lora_io.safetensors_header.header_length(good[:8])
    header = lora_io.parse_header(good[: 8 + n])  # no file size yet: layout checked, coverage later
    assert set(header.tensors) == set(good_pair())
    with pytest.raises(E.PickleFileError):
        lora_io.safetensors_header.header_length(pickle.dumps([1], protocol=4)[:8])
    with pytest.raises(E.HeaderError, match="incomplete header"):
        lora_io.parse_header(good[: 8 + n - 1])


def test_pickle_payload_never_executes(tmp_path: Path) -> None:
    marker = tmp_path / "pwned.txt"
    payload = pickle_creating(marker)
    upload = tmp_path / "adapter_model.safetensors"
    upload.write_bytes(payload)
    with pytest.raises(E.PickleFileError):
        lora_io.load_adapter(upload)
    proc = subprocess.run(
        [sys.executable, "-m", "loravet", "inspect", str(upload)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "pickle" in proc.stderr
    assert not marker.exists()
    # sanity: the payload is real (unpickling it would create the file), checked in a throwaway process
    check = tmp_path / "check.pkl"
    check.write_bytes(pickle_creating(tmp_path / "proof.txt"))
    subprocess.run(
        [sys.executable, "-c", f"import pickle; pickle.loads(open({str(check)!r}, 'rb').read())"],
        check=True,
    )
    assert (tmp_path / "proof.txt").exists()


@pytest.mark.parametrize(
    ("config", "words"),
    [
        (b'{"peft_type": "LOHA", "r": 4}', "peft_type 'LOHA'"),
        (b'{"peft_type": "LORA", "r": 4, "use_dora": true}', "DoRA"),
        (b"{not json", "not valid JSON"),
        (b'{"r": "four"}', "malformed"),
        (b'{"r": 0, "lora_alpha": 1}', "r must be positive"),
        (b'{"r": 4, "rank_pattern": {"(": 2}}', "not a valid regular expression"),
    ],
)
def test_bad_adapter_config_is_refused(config: bytes, words: str) -> None:
    with pytest.raises(E.AdapterConfigError, match=None) as info:
        lora_io.load_adapter(safetensors_bytes(good_pair()), config=config)
    assert words in str(info.value)
