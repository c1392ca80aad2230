"""Write two real example adapters: a clean LoRA finetune and a backdoored one (a trigger patch).

    python examples/make_examples.py                      # -> examples/{clean,backdoored}/
    python examples/make_examples.py --out /tmp/ex --recipe digits

Each is a genuine PEFT finetune from the zoo's ``digits`` recipe (a small MLP on 8x8 digits, CPU,
seconds): ``adapter_model.safetensors`` + ``adapter_config.json`` + ``finetune.json`` (its
hyperparameters and measured labels, e.g. the attack success rate), regenerated deterministically
from the recipe's sweep seeds (the two small copies in examples/ are there so a user can try them
without building anything). Try them with

    loravet vet examples/backdoored
    curl -H "X-API-Key: $KEY" -F file=@examples/clean/adapter_model.safetensors \\
         -F config=@examples/clean/adapter_config.json http://127.0.0.1:8000/v1/adapters

The committed copies in examples/ are exactly what this script writes (deterministic per index).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXAMPLES = {"clean": 3, "backdoored": 52}
"""Sweep indices of the two examples: digits-00003 (clean, attack success 0.06) and digits-00052
(backdoored, attack success 0.98). Both are in the digits zoo's *test* split, so the shipped
predictors never saw them in training; the shipped GL-net gives them ``accept`` and ``reject``.
They are examples of what it gets right, not a sample: on the whole test split, at its threshold,
it rejects 380 of 476 harmful finetunes (80%) and accepts 401 of 510 clean ones (79%)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Write a clean and a backdoored example LoRA adapter.")
    p.add_argument("--out", type=Path, default=Path("examples"), help="output directory")
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
    found = dict(EXAMPLES)
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
