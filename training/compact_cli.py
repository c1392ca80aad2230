"""``loravet compact``: store a predictor's learned parameters in float16, computed in float32.

    loravet compact predictors/digits-harmful-gl_net --zoo zoos/digits
    loravet calibrate predictors/digits-harmful-gl_net --zoo zoos/digits

Why: shipped checkpoints count against the repository's data budget, and half the bytes per
weight lets an ensemble carry more members in the same space (the digits harmful ensemble holds
seven GL-net seeds in the bytes three took). Buffers (fitted statistics, token-scan baselines,
quality-map thresholds) are kept as they are. With ``--zoo`` the largest change of a raw output
(logit or quality value) over the zoo's validation split is measured and recorded in
``meta.json``. Outputs move a little, so calibrate again afterwards. Bad input ends in one
``error:`` line and exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.cli_support import Parser, fail
from models.checkpoint import WEIGHTS_FILE, CheckpointError, load_checkpoint
from models.predictor import HALF_STORAGE, load_predictor, save_predictor
from training.calibrate_cli import raw_outputs, update_meta
from training.zoo_dataset import Zoo, ZooError

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def compact(directory: Path, dtype: torch.dtype, zoo_dir: Path | None = None) -> dict[str, Any]:
    """Rewrite ``directory``'s weights with parameters in ``dtype``; returns what ``meta.json``
    records (bytes before and after, and the largest validation output change when a zoo is given).

    Raises:
        ValueError: the predictor's parameters are already stored in half precision.
    """
    torch.set_num_threads(1)
    predictor = load_predictor(directory)
    stored = {t.dtype for t in _stored_parameters(directory, predictor)}
    if stored & set(HALF_STORAGE):
        raise ValueError(
            f"{directory}: its parameters are already stored as {sorted(map(str, stored))}"
        )
    zoo = Zoo.open(zoo_dir) if zoo_dir is not None else None
    before = raw_outputs(predictor, zoo, "val")[0] if zoo is not None else None
    bytes_before = (directory / WEIGHTS_FILE).stat().st_size
    save_predictor(predictor, directory, parameters_dtype=dtype)
    record: dict[str, Any] = {
        "parameters_dtype": str(dtype).removeprefix("torch."),
        "weights_bytes_before": bytes_before,
        "weights_bytes_after": (directory / WEIGHTS_FILE).stat().st_size,
    }
    if zoo is not None and before is not None:
        after = raw_outputs(load_predictor(directory), zoo, "val")[0]
        record["max_val_output_change"] = float(np.max(np.abs(after - before)))
        record["val_loras"] = len(after)
    update_meta(directory, {"compacted": record})
    return record


def _stored_parameters(directory: Path, predictor: Any) -> list[torch.Tensor]:
    """The stored tensors of the predictor's learned parameters (not its buffers)."""
    tensors = load_checkpoint(directory)[0]
    names = {name for name, _ in predictor.model.named_parameters()}
    return [t for name, t in tensors.items() if name in names]


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="loravet compact", description=__doc__.split("\n")[0])
    p.add_argument("predictor", type=Path, help="predictor directory (rewritten in place)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float16",
                   help="storage dtype of the learned parameters (default float16)")  # fmt: skip
    p.add_argument("--zoo", type=Path, default=None,
                   help="measure the largest output change on this zoo's val split")  # fmt: skip
    args = p.parse_args(argv)
    try:
        record = compact(args.predictor, DTYPES[args.dtype], args.zoo)
    except (ZooError, CheckpointError, ValueError, OSError) as exc:
        return fail(str(exc))
    line = (
        f"{args.predictor}: parameters stored as {record['parameters_dtype']}, "
        f"{record['weights_bytes_before']:,} -> {record['weights_bytes_after']:,} bytes"
    )
    if "max_val_output_change" in record:
        line += (
            f"; largest change of a raw output over {record['val_loras']} val LoRAs: "
            f"{record['max_val_output_change']:.2e}"
        )
    print(line + " (calibrate again)")
    return 0
