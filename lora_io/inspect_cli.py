"""``loravet inspect``: what a LoRA file is and whether it passes the static checks, without torch.

    loravet inspect adapter_model.safetensors
    loravet inspect adapter_model.safetensors --config adapter_config.json --json

Exit codes: 0 readable adapter (whatever the checks say), 2 invalid input (one ``error:`` line).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from core.cli_support import Parser
from lora_io.adapter_paths import resolve_adapter_paths
from lora_io.checks import run_checks
from lora_io.errors import LoraFileError
from lora_io.lora_adapter import LoraAdapter, load_adapter


def summarise(adapter: LoraAdapter) -> dict[str, Any]:
    """The JSON form of an inspection: the report fields that need no predictor."""
    base = adapter.base_model
    return {
        "sha256": adapter.sha256,
        "size_bytes": adapter.size_bytes,
        "format": adapter.format,
        "dtypes": list(adapter.dtypes),
        "scale_source": adapter.scale_source,
        "base_model": {
            "family": base.family,
            "title": base.title,
            "hint": base.hint,
            **base.details,
        },
        "spec_fingerprint": adapter.spec.fingerprint,
        "modules": [
            {
                "name": m.name,
                "out_features": m.out_features,
                "in_features": m.in_features,
                "rank": m.rank,
                "scale": m.scale,
                "kind": m.kind,
            }
            for m in adapter.modules
        ],
        "checks": [c.to_json() for c in run_checks(adapter)],
    }


def render_text(summary: dict[str, Any], path: str) -> str:
    base = summary["base_model"]
    ranks = sorted({m["rank"] for m in summary["modules"]})
    lines = [
        f"{path}",
        f"  sha256      {summary['sha256']}",
        f"  format      {summary['format']} ({', '.join(summary['dtypes'])}, {summary['size_bytes']:,} bytes)",
        f"  base model  {base['title']}" + (f" - {base['hint']}" if base.get("hint") else ""),
        f"  modules     {len(summary['modules'])} (ranks {ranks}, scale from {summary['scale_source'].replace('_', ' ')})",
        f"  spec        {summary['spec_fingerprint']}",
        "  checks",
    ]
    mark = {"pass": "ok  ", "warn": "WARN", "fail": "FAIL"}
    lines += [f"    {mark[c['status']]} {c['name']}: {c['detail']}" for c in summary["checks"]]
    lines.append("  modules")
    for m in summary["modules"][:50]:
        lines.append(
            f"    {m['name']}  {m['out_features']}x{m['in_features']}  r={m['rank']}  scale={m['scale']:.4g}"
        )
    if len(summary["modules"]) > 50:
        lines.append(f"    ... and {len(summary['modules']) - 50} more (use --json for all)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(
        prog="loravet inspect",
        description="Summarise and statically check a LoRA safetensors file.",
    )
    parser.add_argument(
        "path",
        help="a PEFT adapter directory, adapter_model.safetensors, or a kohya or diffusers LoRA file",
    )
    parser.add_argument(
        "--config",
        help="adapter_config.json (PEFT): gives lora_alpha, rsLoRA and rank/alpha patterns "
        "(found by itself in an adapter directory)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    args = parser.parse_args(argv)
    try:
        weights, config = resolve_adapter_paths(args.path, args.config)
    except LoraFileError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    try:
        adapter = load_adapter(weights, config=config)
    except LoraFileError as exc:
        print(f"error: {weights}: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot read {exc.filename or args.path}: {exc.strerror}", file=sys.stderr)
        return 2
    summary = summarise(adapter)
    print(json.dumps(summary, indent=2) if args.json else render_text(summary, args.path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
