"""``loravet vet``: the full vetting report of one adapter on this machine, no server needed.

    loravet vet ./my-adapter                # a PEFT adapter directory (its config is read too)
    loravet vet adapter_model.safetensors --config adapter_config.json
    loravet vet adapter_model.safetensors --json > report.json
    loravet vet lora.safetensors --predictors ./predictors

Several adapters at once (a backlog of uploads, a zoo) are vetted in batches through the same
``vet_batch`` the resident worker runs, each predictor once per batch and rank::

    loravet vet uploads/*/ --json > reports.jsonl   # one report per line, in the order given

Same pipeline as the service (``workers.vetting_pipeline``), so the report is the one the API would
give. Invalid input prints one ``error: ...`` line on stderr (with several adapters, one line per
adapter that could not be vetted, the others are still vetted) and exits with status 2.
Exit status 0 means every report was produced (whatever the verdicts); see ``verdict``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from core.cli_support import Parser
from core.contracts import Report
from lora_io import LoraFileError, resolve_adapter_paths
from loravet import SHIPPED_PREDICTORS
from workers.worker_runtime import DeviceUnavailableError

MAX_CLI_FILE_BYTES = 1 << 30


def build_parser() -> Parser:
    p = Parser(prog="loravet vet", description="Vet LoRA adapters and print their reports.")
    p.add_argument(
        "adapter",
        type=Path,
        nargs="+",
        help="a .safetensors file or a PEFT adapter directory; several are vetted in batches",
    )
    p.add_argument(
        "--config",
        type=Path,
        help="its adapter_config.json (PEFT keeps lora_alpha there; found by itself in a directory); "
        "one adapter only",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="adapters vetted together (one predictor pass per batch and rank; default 16)",
    )
    p.add_argument(
        "--predictors",
        type=Path,
        default=SHIPPED_PREDICTORS,
        help="predictor directory (default: the shipped ones)",
    )
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="cpu", help="where predictors run"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def render_text(report: Report) -> str:
    """A readable report: verdict and reasons first, then what was measured."""
    lines = [
        f"verdict: {report.verdict.upper()}",
        *[f"  - {r.message}" for r in report.reasons],
        f"file: sha256 {report.sha256}, {report.size_bytes:,} bytes, format {report.format}",
        f"base model: {report.base_model.title}"
        + (f" ({report.base_model.hint})" if report.base_model.hint else "")
        + f", spec {report.base_model.spec_fingerprint}, {report.base_model.module_count} modules",
        f"scale: from {report.scale_source.replace('_', ' ')}",
        "checks:",
        *[f"  {c.status:<4} {c.name}: {c.detail}" for c in report.checks],
        "predictions:"
        if report.predictions
        else "predictions: none (no predictor for this base model)",
        *[
            f"  {p.task:<10} {p.value:.4f}"
            + (f" (review from {p.review_threshold:.4f})" if p.review_threshold is not None else "")
            + (f" (threshold {p.threshold:.4f})" if p.threshold is not None else "")
            + (
                f" ({p.interval_coverage:.0%} interval {p.interval[0]:.3f} to {p.interval[1]:.3f})"
                if p.interval is not None and p.interval_coverage is not None
                else ""
            )
            + (f" -> {p.label}" if p.label else "")
            + f"  [{p.predictor_id}@{p.predictor_version}]"
            + (f"\n             {p.note}" if p.note else "")
            + (
                "\n             answers these inputs far more than clean finetunes do: "
                + ", ".join(f"{e.probe!r} (z {e.z:.1f}, {e.module})" for e in p.evidence)
                if p.evidence
                else ""
            )
            for p in report.predictions
        ],
    ]
    ranks = sorted({m.rank for m in report.modules})
    lines.append(f"modules: {len(report.modules)}, ranks {ranks}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.getLogger("loravet").addHandler(
        logging.NullHandler()
    )  # the report itself says "no predictor"
    many = len(args.adapter) > 1
    if many and args.config is not None:
        print(
            "error: --config applies to one adapter; to vet several, give PEFT adapter directories "
            "(each with its adapter_config.json) or files whose scale needs no config",
            file=sys.stderr,
        )
        return 2
    if args.batch_size < 1:
        print(f"error: --batch-size {args.batch_size}: at least 1 is accepted", file=sys.stderr)
        return 2
    try:
        from workers.vetting_pipeline import VetInput, vet_batch
        from workers.worker_runtime import load_registry

        registry, _ = load_registry(args.predictors, args.device)
    except (DeviceUnavailableError, OSError) as exc:
        print(f"error: {_message(exc)}", file=sys.stderr)
        return 2
    failed = 0
    verdicts: dict[str, int] = {}
    for start in range(0, len(args.adapter), args.batch_size):
        chunk = args.adapter[start : start + args.batch_size]
        inputs: list[tuple[Path, VetInput | Exception]] = []
        for path in chunk:
            try:
                inputs.append((path, VetInput(*_read_input(path, args.config))))
            except (LoraFileError, OSError) as exc:
                inputs.append((path, exc))
        ready = [item for _, item in inputs if isinstance(item, VetInput)]
        results = iter(vet_batch(ready, registry) if ready else [])
        for path, item in inputs:
            result = next(results) if isinstance(item, VetInput) else item
            if isinstance(result, Exception):
                failed += 1
                where = f"{path}: " if many else ""
                print(f"error: {where}{_message(result)}", file=sys.stderr)
                continue
            verdicts[result.verdict] = verdicts.get(result.verdict, 0) + 1
            if not _print_report(result, path if many else None, args.json):
                return 0 if not failed else 2
    if many and not args.json:
        counts = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items()))
        _print_line(
            f"vetted {len(args.adapter)} adapters: {counts or 'no reports'}"
            + (f"; {failed} could not be vetted (see the error lines)" if failed else "")
        )
    return 2 if failed else 0


def _read_input(path: Path, config: Path | None) -> tuple[bytes, bytes | None]:
    weights, config_path = resolve_adapter_paths(path, config)
    if weights.stat().st_size > MAX_CLI_FILE_BYTES:
        raise LoraFileError(f"{weights}: file is larger than {MAX_CLI_FILE_BYTES:,} bytes")
    return weights.read_bytes(), (config_path.read_bytes() if config_path else None)


def _message(exc: Exception) -> str:
    """One line for a user: what is wrong, never a traceback."""
    if isinstance(exc, LoraFileError):
        return exc.message
    if isinstance(exc, OSError) and not isinstance(exc, DeviceUnavailableError):
        return (exc.strerror and f"{exc.filename}: {exc.strerror}") or str(exc)
    return str(exc) or type(exc).__name__


def _print_report(report: Report, path: Path | None, as_json: bool) -> bool:
    """Print one report (JSON Lines when several); False when stdout was closed (``| head``)."""
    if as_json:
        text = report.model_dump_json(indent=None if path is not None else 2)
    else:
        text = (f"== {path}\n" if path is not None else "") + render_text(report)
        text += "\n" if path is not None else ""
    return _print_line(text)


def _print_line(text: str) -> bool:
    try:
        print(text)
        return True
    except BrokenPipeError:  # `loravet vet x --json | head`
        sys.stderr.close()
        return False
