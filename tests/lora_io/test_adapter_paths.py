"""A PEFT adapter directory resolves to its weights and config; anything ambiguous is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from lora_io import LoraFileError, resolve_adapter_paths


def test_directory_gives_weights_and_config(tmp_path: Path) -> None:
    (tmp_path / "adapter_model.safetensors").write_bytes(b"x")
    (tmp_path / "adapter_config.json").write_bytes(b"{}")
    (tmp_path / "other.safetensors").write_bytes(b"y")  # the PEFT name wins over other files
    assert resolve_adapter_paths(tmp_path) == (
        tmp_path / "adapter_model.safetensors",
        tmp_path / "adapter_config.json",
    )
    explicit = tmp_path / "mine.json"
    explicit.write_bytes(b"{}")
    assert resolve_adapter_paths(tmp_path, explicit)[1] == explicit


def test_single_safetensors_without_config(tmp_path: Path) -> None:
    (tmp_path / "pytorch_lora_weights.safetensors").write_bytes(b"x")
    assert resolve_adapter_paths(tmp_path) == (tmp_path / "pytorch_lora_weights.safetensors", None)
    assert resolve_adapter_paths(tmp_path / "pytorch_lora_weights.safetensors") == (
        tmp_path / "pytorch_lora_weights.safetensors",
        None,
    )


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        ((), "directory without a .safetensors file"),
        (
            ("a.safetensors", "b.safetensors"),
            "holds 2 .safetensors files (a.safetensors, b.safetensors)",
        ),
    ],
)
def test_ambiguous_or_empty_directories_are_refused(
    tmp_path: Path, files: tuple[str, ...], needle: str
) -> None:
    for name in files:
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(LoraFileError) as info:
        resolve_adapter_paths(tmp_path)
    assert needle in str(info.value)


def test_missing_paths_are_named(tmp_path: Path) -> None:
    with pytest.raises(LoraFileError, match="no such file or directory"):
        resolve_adapter_paths(tmp_path / "absent.safetensors")
    (tmp_path / "a.safetensors").write_bytes(b"x")
    with pytest.raises(LoraFileError, match=r"absent\.json: no such file"):
        resolve_adapter_paths(tmp_path / "a.safetensors", tmp_path / "absent.json")
