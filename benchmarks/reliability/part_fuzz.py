"""Part 1b: coverage-guided fuzzing of the header parser and reader (atheris / libFuzzer).

The committed corpus (``benchmarks/reliability/corpus/``, kept under 1 MB) seeds the run; the run
works in a scratch copy, and with ``keep_corpus`` (``--full``) the run's corpus (libFuzzer keeps
only inputs that added coverage) replaces it, smallest files first up to the size cap.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parent / "corpus"
CORPUS_CAP_BYTES = 1_000_000
MAX_LEN = 4096


def seed_corpus(directory: Path) -> int:
    """Write the seeds: small valid LoRAs of each format and the small hostile catalogue files."""
    import hashlib

    import numpy as np

    from benchmarks.reliability.inputs import catalogue
    from harness.lora_files import adapter_config, kohya_lora, peft_adapter, safetensors_bytes

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    tiny = [
        peft_adapter(2, layers=1, hidden=8, rank=2),
        safetensors_bytes(kohya_lora([("mid_block.attentions.0.proj_in", 8, 8, "conv1x1"), ("mid_block.attentions.0.proj_out", 8, 8, "linear")], "lora_unet", 2, 2.0, rng)),
        safetensors_bytes(kohya_lora([("text_model.encoder.layers.0.mlp.fc1", 16, 8, "linear")], "lora_te", 2, None, rng, "float32")),
    ]  # fmt: skip
    items: list[bytes] = []
    for data in tiny:
        items += [bytes([2]) + data, bytes([1]) + data, bytes([0]) + data]
    for item in catalogue():
        if len(item.data) <= MAX_LEN:
            items.append(bytes([0]) + item.data)
    items.append(
        bytes([3]) + peft_adapter(1, layers=1, hidden=8, rank=2) + b"\n\n" + adapter_config(2, 4)
    )
    items.append(bytes([0]) + struct.pack("<Q", 2) + b"{}")
    for data in items:
        (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)
    return len(items)


def _corpus_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())


def keep(corpus: Path) -> dict[str, Any]:
    """Replace the committed corpus with this run's (libFuzzer keeps only inputs that added coverage),
    smallest files first up to :data:`CORPUS_CAP_BYTES`."""
    files = sorted(
        (p for p in corpus.iterdir() if p.is_file()), key=lambda p: (p.stat().st_size, p.name)
    )
    chosen, size = [], 0
    for f in files:
        if size + f.stat().st_size > CORPUS_CAP_BYTES:
            break
        chosen.append(f)
        size += f.stat().st_size
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    CORPUS.mkdir(parents=True)
    for f in chosen:
        shutil.copy2(f, CORPUS / f.name)
    return {"files": len(chosen), "bytes": size, "left_out": len(files) - len(chosen)}


def run(root: Path, *, seconds: int, keep_corpus: bool = False) -> dict[str, Any]:
    work = root / "fuzz"
    if work.exists():
        shutil.rmtree(work)
    corpus, artifacts = work / "corpus", work / "artifacts"
    artifacts.mkdir(parents=True)
    if CORPUS.is_dir() and any(CORPUS.iterdir()):
        shutil.copytree(CORPUS, corpus)
    else:
        seed_corpus(corpus)
    seeds = sum(1 for _ in corpus.iterdir())
    cmd = [
        sys.executable, "-m", "benchmarks.reliability.fuzz_target", str(corpus),
        f"-max_total_time={seconds}", f"-max_len={MAX_LEN}", "-timeout=10", "-rss_limit_mb=2048",
        f"-artifact_prefix={artifacts}/", "-print_final_stats=1", "-seed=1",
    ]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=seconds + 300,
        cwd=Path(__file__).resolve().parents[2],
    )
    wall = time.monotonic() - t0
    log = proc.stdout + proc.stderr
    (work / "fuzz.log").write_text(log)
    stats = {m[1]: int(m[2]) for m in re.finditer(r"stat::(\w+):\s+(\d+)", log)}
    crashes = sorted(p.name for p in artifacts.iterdir())
    cov = re.findall(r"cov: (\d+) ft: (\d+)", log)
    crash_excerpt = None
    if proc.returncode != 0 or crashes:
        idx = log.find("Uncaught Python exception")
        crash_excerpt = log[idx : idx + 2000] if idx >= 0 else log[-2000:]
    kept = None
    if keep_corpus and proc.returncode == 0 and not crashes:
        kept = keep(corpus)
    return {
        "seconds_budget": seconds,
        "wall_seconds": round(wall, 1),
        "returncode": proc.returncode,
        "executions": stats.get("number_of_executed_units"),
        "execs_per_second": round(stats["number_of_executed_units"] / wall, 1)
        if stats.get("number_of_executed_units")
        else None,
        "peak_rss_mb": stats.get("peak_rss_mb"),
        "new_units": stats.get("new_units_added"),
        "coverage_edges": int(cov[-1][0]) if cov else None,
        "features": int(cov[-1][1]) if cov else None,
        "seed_inputs": seeds,
        "corpus_after": sum(1 for _ in corpus.iterdir()),
        "crashes": len(crashes),
        "crash_files": crashes[:10],
        "crash_excerpt": crash_excerpt,
        "corpus_kept": kept,
    }
