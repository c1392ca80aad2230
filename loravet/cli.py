"""The one console entry point, `loravet`, dispatching to subcommands that live with their package.

Each subcommand is a ``main(argv) -> int`` in its own package, imported only when used, so that
`loravet inspect` never pays for torch and `loravet serve` never imports the research stack.

    loravet inspect adapter_model.safetensors --config adapter_config.json --json
    loravet zoo build --recipe digits --count 100 --out zoos/digits --jobs 2
"""

from __future__ import annotations

import importlib
import sys

#: subcommand -> (module, one-line help). The module must define ``main(argv: list[str]) -> int``.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "inspect": ("lora_io.inspect_cli", "summarise and check a LoRA file without running anything"),
    "vet": ("workers.vet_cli", "full vetting report for one adapter, no server needed"),
    "zoo": ("zoo.cli", "build or verify a zoo of real LoRA finetunes with measured labels"),
    "train": ("training.train_cli", "train a predictor (GL-net or a baseline) on a zoo"),
    "evaluate": ("training.evaluate_cli", "evaluate a trained predictor on a zoo split"),
    "via-task": (
        "training.via_task_cli",
        "a quality predictor that reads quality through the task",
    ),
    "ensemble": ("training.ensemble_cli", "combine GL-net predictors trained with different seeds"),
    "calibrate": (
        "training.calibrate_cli",
        "fit a predictor's probabilities, review band or interval",
    ),
    "compact": (
        "training.compact_cli",
        "store a predictor's parameters in float16 (half the bytes)",
    ),
    "bench": ("benchmarks.bench_cli", "run the benchmark experiments that are missing or outdated"),
    "serve": ("loravet.serve_cli", "embedded Redis + API + one worker on localhost"),
    "api": ("service.api_cli", "the HTTP API alone"),
    "worker": ("workers.worker_cli", "a resident vetting worker"),
    "predictors": (
        "workers.predictors_cli",
        "publish predictors to the content store for workers elsewhere",
    ),
}


def usage() -> str:
    lines = ["usage: loravet <command> [options]", "", "commands:"]
    lines += [f"  {name:<9} {text}" for name, (_, text) in SUBCOMMANDS.items()]
    lines.append("\nrun `loravet <command> --help` for the options of one command.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(
            f"error: unknown command {name!r}; accepted: {', '.join(SUBCOMMANDS)}", file=sys.stderr
        )
        return 2
    module_name, _ = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name.split(".")[0]):
            print(f"error: `loravet {name}` is not available in this version yet", file=sys.stderr)
            return 2
        raise
    return int(module.main(rest))


if __name__ == "__main__":
    sys.exit(main())
