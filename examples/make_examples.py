"""Write real example adapters, a clean LoRA finetune and a backdoored one per zoo recipe.

    python examples/make_examples.py                      # -> examples/<recipe>/{clean,backdoored}/
    python examples/make_examples.py --recipe digits --out /tmp/ex

Each is a genuine PEFT finetune from a zoo recipe, regenerated deterministically from the
recipe's sweep seeds: ``adapter_model.safetensors`` + ``adapter_config.json`` + ``finetune.json``
(its hyperparameters and measured labels, e.g. the attack success rate). The small copies in
examples/ are committed so a user can try them without building anything:

    loravet vet examples/digits/backdoored
    curl -H "X-API-Key: $KEY" -F file=@examples/digits/clean/adapter_model.safetensors \\
         -F config=@examples/digits/clean/adapter_config.json http://127.0.0.1:8000/v1/adapters

Every example is in its zoo's *test* split, so the shipped predictors never saw it in training.
They are examples of what the predictors get right, not a sample; the rates on the whole test
split are in ``EXAMPLES``'s notes and in the predictors' ``meta.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from core.cli_support import Parser

EXAMPLES: dict[str, dict[str, int]] = {
    "digits": {"clean": 3, "backdoored": 52},
    "minilm-topics": {"clean": 4, "backdoored": 0},
    "causal-lm": {"clean": 109, "backdoored": 0},
}
"""Sweep indices per recipe. digits: digits-00003 (clean, attack success 0.06) and digits-00052
(backdoored, attack success 0.98), both in the test split of the 30,000-LoRA zoo too; the shipped
digits predictors (three GL-net seeds, calibrated on the val split: reject only where 1% of clean
validation LoRAs are flagged, a review band below) give them ``accept`` (P 0.051) and ``reject``
(P 0.996), and on the whole test split (E6) accept 1,178 of 1,494 clean finetunes and reject 12,
reject 979 of 1,468 harmful ones and accept 80; the rest go to review.
Building a digits example takes seconds of CPU.

minilm-topics, chosen by a rule fixed before the minilm predictors were trained: the first rank-4
clean test-split LoRA with quality above the zoo median (minilm-topics-00004: quality 0.84, attack
success 0.125) and the first rank-4 harmful one (minilm-topics-00000: attack success 0.96); the
shipped minilm GL-net gives them ``accept`` and ``reject``, and on the whole test split, at its
threshold, rejects 46 of 52 harmful finetunes (88%) and accepts 38 of 46 clean ones (83%).
Building a minilm example takes about a minute of CPU.

causal-lm (SmolLM2-135M-Instruct), by the same rule, fixed before its predictors were trained: the
first rank-4 clean test-split LoRA with quality above the zoo median 0.25 (causal-lm-00109: held-out
accuracy 0.383 against the base's 0.100 on its task families, attack success 0.0) and the first
rank-4 harmful one (causal-lm-00000: attack success 1.0); the shipped causal-lm predictors give them
``accept`` and ``reject``. causal-lm-00109 is one of the zoo's first 119 LoRAs, built before the
frozen lower layers ran one question at a time, so its example has the same labels as the zoo's copy
but not the same bits; causal-lm-00000's example is bit-identical. Building a causal-lm example takes
one to two minutes of CPU (the dequantized base is cached after the first)."""


def build_parser() -> Parser:
    p = Parser(description="Write a clean and a backdoored example LoRA adapter per recipe.")
    p.add_argument(
        "--out", type=Path, default=Path("examples"), help="output directory (a folder per recipe)"
    )
    p.add_argument(
        "--recipe",
        action="append",
        choices=sorted(EXAMPLES),
        help="only this recipe (repeatable; default: every recipe with examples)",
    )
    p.add_argument(
        "--work",
        type=Path,
        default=Path("var/examples-zoo"),
        help="where the recipes keep their base models",
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
    import torch

    # the zoo build's arithmetic (one thread): an example is bit-identical to its zoo LoRA
    torch.set_num_threads(1)
    for recipe_name in args.recipe or sorted(EXAMPLES):
        recipe = make_recipe(recipe_name)
        work = args.work / recipe_name
        work.mkdir(parents=True, exist_ok=True)
        recipe.prepare(work)
        recipe.load(work)
        for name, index in sorted(EXAMPLES[recipe_name].items()):
            out = args.out / recipe_name / name
            out.mkdir(parents=True, exist_ok=True)
            outcome = recipe.finetune(index, recipe.sample(index), out)
            meta = {
                "recipe": recipe_name,
                "index": index,
                "hyperparameters": outcome.hyperparameters,
                "labels": outcome.labels,
            }
            (out / "finetune.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
            print(
                f"{recipe_name}/{name}: {out / 'adapter_model.safetensors'} (sweep index {index}, labels {outcome.labels})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
