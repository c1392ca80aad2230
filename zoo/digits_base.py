"""The digits recipe's data and base model: sklearn's bundled ``load_digits`` and a small MLP.

``load_digits`` has only 1797 images, too few to keep base data, finetune pool and test set apart
at the sizes the sweep draws (a 600-sample finetune on 3 classes). So the originals are split first
(base 1400 / pool 250 / test 147, seed 0) and only then each split is expanded x9 by 1-pixel
shifts: no image, shifted or not, is in two splits. The base MLP (64-128-128-10, ReLU) is trained
here deterministically on the shifted base split (one thread, fixed seed), cached as safetensors
(never pickle) and rebuilt bit-identically if missing.

    from zoo.digits_base import load_digits_splits, ensure_base_mlp, load_base_mlp
    path = ensure_base_mlp(Path("zoos/digits/base"))
    model = load_base_mlp(path)
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

SPLIT_SEED = 0
N_BASE, N_POOL = 1400, 250
"""Originals in the base and finetune-pool splits; the remaining 147 are the test split."""
SIDE = 8
"""Images are SIDE x SIDE, pixel values 0..16 scaled to 0..1."""
BASE_EPOCHS, BASE_LR, BASE_BATCH, BASE_SEED = 15, 1e-3, 32, 0
BASE_FILE = "digits-mlp.safetensors"
BASE_MODEL_NAME = "loravet/digits-mlp-64-128-128-10"


class DigitsMLP(nn.Module):
    """64-128-128-10 ReLU classifier; its three Linear layers are the LoRA targets."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 128)
        self.fc2 = nn.Linear(128, 128)
        self.fc3 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 64) in [0, 1] -> logits (B, 10)."""
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


@dataclass(frozen=True)
class DigitsSplits:
    """Shifted splits as float32 (N, 64) in [0, 1] and int64 labels; ``digest`` identifies them."""

    base_x: np.ndarray
    base_y: np.ndarray
    pool_x: np.ndarray
    pool_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    digest: str


def shift_augment(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nine copies of each image, shifted by (dy, dx) in {-1, 0, 1}^2 with zero fill."""
    images = x.reshape(-1, SIDE, SIDE)
    out = []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            shifted = np.zeros_like(images)
            src_y = slice(max(0, -dy), SIDE - max(0, dy))
            dst_y = slice(max(0, dy), SIDE - max(0, -dy))
            src_x = slice(max(0, -dx), SIDE - max(0, dx))
            dst_x = slice(max(0, dx), SIDE - max(0, -dx))
            shifted[:, dst_y, dst_x] = images[:, src_y, src_x]
            out.append(shifted.reshape(len(x), -1))
    return np.concatenate(out), np.tile(y, 9)


@functools.cache
def load_digits_splits() -> DigitsSplits:
    """Split the originals (seed 0), then shift-augment each split separately."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    parts = np.split(order, [N_BASE, N_BASE + N_POOL])
    arrays = [shift_augment(x[p], y[p]) for p in parts]
    digest = hashlib.sha256()
    for ax, ay in arrays:
        digest.update(ax.tobytes())
        digest.update(ay.tobytes())
    (bx, by), (px, py), (tx, ty) = arrays
    return DigitsSplits(bx, by, px, py, tx, ty, digest.hexdigest())


def train_base_mlp() -> DigitsMLP:
    """Train the base MLP deterministically (one thread, fixed seeds): about 5 s on one core."""
    torch.set_num_threads(1)
    splits = load_digits_splits()
    torch.manual_seed(BASE_SEED)
    model = DigitsMLP()
    opt = torch.optim.Adam(model.parameters(), lr=BASE_LR)
    x = torch.from_numpy(splits.base_x)
    y = torch.from_numpy(splits.base_y)
    gen = torch.Generator().manual_seed(BASE_SEED)
    fit_classifier(model, opt, x, y, epochs=BASE_EPOCHS, batch_size=BASE_BATCH, generator=gen)
    return model


def fit_classifier(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
) -> None:
    """Minibatch cross-entropy in the order the generator draws, then eval mode.

    One loop for the base model and every digits finetune, so a seed gives the same bits in both.
    """
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            idx = perm[start : start + batch_size]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()


def base_accuracy(model: DigitsMLP) -> float:
    splits = load_digits_splits()
    with torch.inference_mode():
        pred = model(torch.from_numpy(splits.test_x)).argmax(1).numpy()
    return float((pred == splits.test_y).mean())


def ensure_base_mlp(cache_dir: Path) -> Path:
    """Return the cached base weights in ``cache_dir``, training and writing them atomically if absent."""
    path = cache_dir / BASE_FILE
    if path.is_file():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    model = train_base_mlp()
    info = {
        "model": BASE_MODEL_NAME,
        "data_digest": load_digits_splits().digest,
        "test_accuracy": round(base_accuracy(model), 4),
        "training": {"epochs": BASE_EPOCHS, "lr": BASE_LR, "batch": BASE_BATCH, "seed": BASE_SEED},
    }
    # one metadata key: safetensors writes metadata in hash-map order, so several keys would make
    # the file's sha256 differ from run to run even with identical weights
    meta = {"loravet": json.dumps(info, sort_keys=True)}
    tmp = cache_dir / f".{BASE_FILE}.{os.getpid()}.tmp"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def load_base_mlp(path: Path) -> DigitsMLP:
    """Load base weights from safetensors (no pickle), in eval mode."""
    model = DigitsMLP()
    model.load_state_dict(load_file(str(path)))
    model.eval()
    return model
