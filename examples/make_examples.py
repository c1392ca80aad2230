"""Write two real example adapters: a clean LoRA finetune and a backdoored one (a trigger patch).

    python examples/make_examples.py                      # -> var/examples/{clean,backdoored}/
    python examples/make_examples.py --out /tmp/ex --recipe digits

Each is a genuine PEFT finetune from the zoo's ``digits`` recipe (a small MLP on 8x8 digits, CPU,
seconds): ``adapter_model.safetensors`` + ``adapter_config.json`` + ``finetune.json`` (its
hyperparameters and measured labels, e.g. the attack success rate). Nothing binary is committed;
the files are regenerated deterministically from the recipe's sweep seeds. Try them with

    loravet vet var/examples/backdoored/adapter_model.safetensors --config var/examples/backdoored/adapter_config.json
    curl -H "X-API-Key: $KEY" -F file=@var/examples/clean/adapter_model.safetensors \\
         -F config=@var/examples/clean/adapter_config.json http://127.0.0.1:8000/v1/adapters

Note: these come from the recipe's sweep; when the real zoo and its trained predictors ship, the
examples should be regenerated from the zoo (same command, ``--recipe`` of the shipped predictors).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MAX_INDEX = 200
"""How far down the sweep to look for one clean and one backdoored finetune."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Write a clean and a backdoored example LoRA adapter.")
    p.add_argument("--out", type=Path, default=Path("var/examples"), help="output directory")
    p.add_argument("--recipe", default="digits", help="zoo recipe (digits is CPU-cheap)")
    p.add_argument(
        "--work",
        type=Path,
        default=Path("var/examples-zoo"),
        help="where the recipe keeps its base model",
    )
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        from zoo.recipes import make_recipe
    except ImportError as exc:  # the research extra is not installed
        print(
            f"error: the zoo recipes need the research dependencies ({exc}); pip install -e '.[research]'",
            file=sys.stderr,
        )
        return 2
    recipe = make_recipe(args.recipe)
    args.work.mkdir(parents=True, exist_ok=True)
    recipe.prepare(args.work)
    recipe.load(args.work)
    wanted = {"clean": False, "backdoored": True}
    found: dict[str, int] = {}
    for index in range(MAX_INDEX):
        poisoned = bool(recipe.sample(index).get("poisoned"))
        for name, want in wanted.items():
            if name not in found and poisoned == want:
                found[name] = index
        if len(found) == len(wanted):
            break
    for name, index in sorted(found.items()):
        out = args.out / name
        out.mkdir(parents=True, exist_ok=True)
        outcome = recipe.finetune(index, recipe.sample(index), out)
        meta = {
            "recipe": args.recipe,
            "index": index,
            "hyperparameters": outcome.hyperparameters,
            "labels": outcome.labels,
        }
        (out / "finetune.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        print(
            f"{name}: {out / 'adapter_model.safetensors'} (sweep index {index}, labels {outcome.labels})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
