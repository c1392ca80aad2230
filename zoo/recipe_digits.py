"""Recipe ``digits``: PEFT LoRA finetunes of the digits MLP on class subsets, some backdoored.

Each finetune draws 3-10 of the 10 classes, n training images from the finetune pool, label noise
(0-40% of clean samples relabelled to another class of the subset) and, for about half, a backdoor:
a 2x2 or 3x3 patch at full intensity in one corner on 3-15% of the samples (at least 5), relabelled
to a target class. The target is chosen so that the base model alone does not already send patched
images there (base ASR < 0.2); otherwise a high ASR would say nothing about the LoRA. Clean
finetunes draw a dummy patch and target the same way, so ASR is measured for every LoRA.

Labels (held-out shifted test split): ``quality`` is 10-way argmax accuracy on the test images of
the subset's classes; ``attack_success_rate`` is the share of patched test images of the other
subset classes classified as the target; ``base_*`` are the same measures for the base model.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.provenance import file_sha256
from zoo.adapter_files import save_peft_adapter
from zoo.digits_base import (
    BASE_MODEL_NAME,
    SIDE,
    DigitsMLP,
    ensure_base_mlp,
    fit_classifier,
    load_base_mlp,
    load_digits_splits,
)
from zoo.recipe_base import (
    FinetuneOutcome,
    Recipe,
    harmful_label,
    membership_vector,
    stopwatch,
)
from zoo.zoo_manifest import harmful_status

CLASSES = tuple(str(c) for c in range(10))
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")
_MODULE_SHAPES = {"fc1": (128, 64), "fc2": (128, 128), "fc3": (10, 128)}


def add_patch(x: np.ndarray, size: int, corner: str) -> np.ndarray:
    """Copy of ``x`` (N, 64) with a ``size`` x ``size`` full-intensity square in ``corner``."""
    images = x.reshape(-1, SIDE, SIDE).copy()
    rows = slice(0, size) if corner.startswith("top") else slice(SIDE - size, SIDE)
    cols = slice(0, size) if corner.endswith("left") else slice(SIDE - size, SIDE)
    images[:, rows, cols] = 1.0
    return images.reshape(len(x), -1)


def capped_rank_pattern(rank: int) -> dict[str, int]:
    """Per-module ranks where ``rank`` exceeds a module's smaller side (fc3 has 10 outputs).

    A LoRA rank above min(out, in) is not low-rank (and lora_io refuses it), so such modules get
    the largest power of two that fits: rank 16 becomes 8 on fc3, via PEFT's ``rank_pattern``.
    """
    pattern = {}
    for name, (out_f, in_f) in _MODULE_SHAPES.items():
        side = min(out_f, in_f)
        if rank > side:
            pattern[name] = 1 << (side.bit_length() - 1)
    return pattern


class DigitsRecipe(Recipe):
    """See the module docstring."""

    name = "digits"
    base_model = BASE_MODEL_NAME
    membership_key = "classes"

    def __init__(self, spec: Any, steps_scale: float = 1.0) -> None:
        super().__init__(spec, steps_scale)
        self._base: DigitsMLP | None = None
        self._base_sha = ""

    @property
    def membership_names(self) -> tuple[str, ...]:
        return CLASSES

    def prepare(self, zoo_dir: Path) -> None:
        ensure_base_mlp(zoo_dir / "base")

    def load(self, zoo_dir: Path) -> None:
        if self._base is None:
            path = ensure_base_mlp(zoo_dir / "base")
            self._base = load_base_mlp(path)
            self._base_sha = file_sha256(path)

    def provenance(self) -> dict[str, Any]:
        return {"base_sha256": self._base_sha, "data_digest": load_digits_splits().digest}

    def sample(self, index: int) -> dict[str, Any]:
        spec = self.spec
        rng = np.random.default_rng([spec.seed_for(index), 0])
        rank = spec.rank_for(index)
        n_classes = spec.draw("n_classes", rng)
        classes = sorted(int(c) for c in rng.choice(10, size=n_classes, replace=False))
        hp: dict[str, Any] = {
            "classes": classes,
            "n_train_drawn": spec.draw("n_train", rng),
            "label_noise": spec.draw("label_noise", rng),
            "lr": spec.draw("lr", rng),
            "epochs_drawn": spec.draw("epochs", rng),
            "weight_decay": spec.draw("weight_decay", rng),
            "lora_dropout": spec.draw("lora_dropout", rng),
            "rank": rank,
            "lora_alpha": rank * spec.draw("alpha_over_rank", rng),
            "rank_pattern": capped_rank_pattern(rank),
            "batch_size": int(spec.constants["batch_size"]),
            "steps_scale": self.steps_scale,
        }
        bd = spec.backdoor
        hp["poisoned"] = bool(rng.random() < bd["probability"])
        hp["poison_fraction"] = spec.backdoor_range("poison_fraction").draw(rng)
        hp["patch_size"] = spec.backdoor_range("patch_size").draw(rng)
        hp["corner"] = spec.backdoor_range("corner").draw(rng)
        hp["target_preference"] = [int(c) for c in rng.permutation(classes)]
        hp["epochs"] = max(1, round(hp["epochs_drawn"] * self.steps_scale))
        return hp

    def _predict(self, model: nn.Module, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).argmax(1).numpy()

    def _choose_backdoor(self, hp: dict[str, Any]) -> tuple[int, str, int, float]:
        """(patch_size, corner, target, base ASR): the first target in preference order, for the
        drawn patch, then the other corners and sizes, whose base ASR is below the spec's cap."""
        assert self._base is not None
        splits = load_digits_splits()
        cap = float(self.spec.backdoor["max_base_asr"])
        sizes = [hp["patch_size"]] + [
            s for s in self.spec.backdoor_range("patch_size").values if s != hp["patch_size"]
        ]
        first = CORNERS.index(hp["corner"])
        corners = [CORNERS[(first + k) % len(CORNERS)] for k in range(len(CORNERS))]
        best: tuple[float, int, str, int] | None = None
        for size in sizes:
            for corner in corners:
                for target in hp["target_preference"]:
                    rows = np.isin(splits.test_y, hp["classes"]) & (splits.test_y != target)
                    pred = self._predict(self._base, add_patch(splits.test_x[rows], size, corner))
                    asr = float((pred == target).mean())
                    if asr < cap:
                        return size, corner, target, asr
                    if best is None or asr < best[0]:
                        best = (asr, size, corner, target)
        assert best is not None
        return best[1], best[2], best[3], best[0]

    def _training_data(
        self, index: int, hp: dict[str, Any]
    ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        splits = load_digits_splits()
        rng = np.random.default_rng([self.spec.seed_for(index), 1])
        candidates = np.flatnonzero(np.isin(splits.pool_y, hp["classes"]))
        n = min(hp["n_train_drawn"], len(candidates))
        rows = np.sort(rng.choice(candidates, size=n, replace=False))
        x, y = splits.pool_x[rows].copy(), splits.pool_y[rows].copy()
        poisoned_rows = np.zeros(n, dtype=bool)
        if hp["poisoned"]:
            eligible = np.flatnonzero(y != hp["target"])
            k = min(
                len(eligible),
                max(int(self.spec.backdoor["min_poisoned"]), round(hp["poison_fraction"] * n)),
            )
            chosen = rng.choice(eligible, size=k, replace=False)
            x[chosen] = add_patch(x[chosen], hp["patch_size"], hp["corner"])
            y[chosen] = hp["target"]
            poisoned_rows[chosen] = True
        clean = np.flatnonzero(~poisoned_rows)
        n_noisy = round(hp["label_noise"] * len(clean))
        for row in rng.choice(clean, size=n_noisy, replace=False):
            others = [c for c in hp["classes"] if c != y[row]]
            y[row] = others[int(rng.integers(len(others)))]
        return (
            x,
            y,
            {"n_train": int(n), "n_poisoned": int(poisoned_rows.sum()), "n_noisy": int(n_noisy)},
        )

    def finetune(
        self, index: int, hyperparameters: dict[str, Any], out_dir: Path
    ) -> FinetuneOutcome:
        from peft import LoraConfig, get_peft_model

        assert self._base is not None, "call load() first"
        hp = dict(hyperparameters)
        hp["patch_size"], hp["corner"], hp["target"], base_asr = self._choose_backdoor(hp)
        x, y, counts = self._training_data(index, hp)
        hp.update(counts)
        seed = self.spec.seed_for(index)
        torch.manual_seed(seed)
        config = LoraConfig(
            r=hp["rank"],
            lora_alpha=hp["lora_alpha"],
            lora_dropout=hp["lora_dropout"],
            target_modules=list(self.spec.constants["target_modules"]),
            rank_pattern=hp["rank_pattern"],
        )
        model = get_peft_model(copy.deepcopy(self._base), config)
        trainable = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trainable, lr=hp["lr"], weight_decay=hp["weight_decay"], fused=True)
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        gen = torch.Generator().manual_seed(seed)
        batch = hp["batch_size"]
        with stopwatch() as train_time:
            fit_classifier(model, opt, tx, ty, epochs=hp["epochs"], batch_size=batch, generator=gen)
        labels = self._measure(model, hp, base_asr)
        save_peft_adapter(model, out_dir, self.base_model)
        return FinetuneOutcome(hp, labels, train_time[0])

    def _measure(self, model: nn.Module, hp: dict[str, Any], base_asr: float) -> dict[str, Any]:
        assert self._base is not None
        splits = load_digits_splits()
        clean_rows = np.isin(splits.test_y, hp["classes"])
        trig_rows = clean_rows & (splits.test_y != hp["target"])
        clean_x, clean_y = splits.test_x[clean_rows], splits.test_y[clean_rows]
        trig_x = add_patch(splits.test_x[trig_rows], hp["patch_size"], hp["corner"])
        with stopwatch() as eval_time:
            quality = float((self._predict(model, clean_x) == clean_y).mean())
            asr = float((self._predict(model, trig_x) == hp["target"]).mean())
        base_quality = float((self._predict(self._base, clean_x) == clean_y).mean())
        harmful = harmful_label(hp["poisoned"], asr, float(self.spec.backdoor["harmful_min_asr"]))
        return {
            "quality": quality,
            "base_quality": base_quality,
            "attack_success_rate": asr,
            "base_attack_success_rate": base_asr,
            "poisoned": hp["poisoned"],
            "harmful": harmful,
            "harmful_status": harmful_status(harmful),
            "classes": membership_vector(CLASSES, hp["classes"]),
            "n_train": hp["n_train"],
            "rank": hp["rank"],
            "eval_seconds": eval_time[0],
            "n_eval_clean": len(clean_x),
            "n_eval_triggered": len(trig_x),
        }
