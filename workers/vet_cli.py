"""``loravet vet``: the full vetting report of one adapter on this machine, no server needed.

    loravet vet ./my-adapter                # a PEFT adapter directory (its config is read too)
    loravet vet adapter_model.safetensors --config adapter_config.json
    loravet vet adapter_model.safetensors --json > report.json
    loravet vet lora.safetensors --predictors ./predictors

Same pipeline as the service (``workers.vetting_pipeline``), so the report is the one the API would
give. Invalid input prints one ``error: ...`` line on stderr and exits with status 2.
Exit status 0 means the report was produced (whatever the verdict); see ``verdict`` for the outcome.
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
    p = Parser(prog="loravet vet", description="Vet one LoRA adapter and print its report.")
    p.add_argument("adapter", type=Path, help="the .safetensors file, or a PEFT adapter directory")
    p.add_argument(
        "--config",
        type=Path,
        help="its adapter_config.json (PEFT keeps lora_alpha there; found by itself in a directory)",
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
    try:
        weights, config_path = resolve_adapter_paths(args.adapter, args.config)
        if weights.stat().st_size > MAX_CLI_FILE_BYTES:
            raise LoraFileError(f"{weights}: file is larger than {MAX_CLI_FILE_BYTES:,} bytes")
        adapter = weights.read_bytes()
        config = config_path.read_bytes() if config_path else None
        from workers.vetting_pipeline import vet_one
        from workers.worker_runtime import load_registry

        registry, _ = load_registry(args.predictors, args.device)
        report = vet_one(adapter, config, registry)
    except (LoraFileError, DeviceUnavailableError, OSError) as exc:
        message = (
            exc.message
            if isinstance(exc, LoraFileError)
            else str(exc)
            if isinstance(exc, DeviceUnavailableError)
            else (exc.strerror and f"{exc.filename}: {exc.strerror}") or str(exc)
        )
        print(f"error: {message}", file=sys.stderr)
        return 2
    try:
        print(report.model_dump_json(indent=2) if args.json else render_text(report))
    except BrokenPipeError:  # `loravet vet x --json | head`
        sys.stderr.close()
    return 0
