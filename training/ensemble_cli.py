"""``loravet ensemble``: combine predictors trained with different seeds (or architectures) into one.

    loravet train ... --model gl_net --seed 0 --out runs/s0   # and --seed 1, --seed 2
    loravet ensemble --out predictors/minilm-topics-harmful-gl_net runs/s0 runs/s1 runs/s2
    loravet ensemble --out predictors/digits-harmful-gl_net runs/gl0 runs/dense0 runs/dense1 --zoo zoos/digits

GL-net members that agree on everything but their seed (task, spec, GL-net hyperparameters, target
normalisation) are averaged logit by logit (:mod:`models.gl_net_ensemble`). Members of several
GL(r)-invariant model families (a classification task only) make a family ensemble
(:mod:`models.family_ensemble`): each family's mean logit is standardised on the zoo's validation
split and the families are summed with equal weights. Validation metrics are measured again on
the zoo the members were trained on. Run ``loravet calibrate`` on the result: an ensemble's
probabilities need their own calibration.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from core.cli_support import Parser, fail
from models.checkpoint import CheckpointError
from models.family_ensemble import FamilyEnsemble, family_config
from models.gl_net_ensemble import GLNetEnsemble, GLNetEnsembleConfig
from models.lora_batch import LoraBatch
from models.predictor import Predictor, load_predictor, placement, save_predictor
from training.train_loop import task_metrics
from training.zoo_dataset import Zoo, ZooError, load_task

SHARED = ("task", "spec", "out_features", "target_mean", "target_std", "label_names")
"""What every member of any ensemble must share."""


def _check_agree(members: list[Predictor], fields: tuple[str, ...], why: str = "") -> None:
    """Raise ``ValueError`` naming the first member whose config differs from the first one's in
    any of ``fields``."""
    first = members[0].config
    for m in members:
        differ = [f for f in fields if getattr(m.config, f) != getattr(first, f)]
        if differ:
            raise ValueError(
                f"{m.config.predictor_id} differs from {first.predictor_id} in "
                f"{', '.join(differ)}{why}"
            )


def combine_families(
    members: list[Predictor], fit_batch: LoraBatch, predictor_id: str | None = None
) -> Predictor:
    """One predictor summing the families' validation-standardised mean logits.

    Raises:
        ValueError: members disagree on the task or spec, the task is quality, or a member's model
            is not GL(r)-invariant.
    """
    first = members[0].config
    _check_agree(members, SHARED)
    if first.task == "quality":
        raise ValueError(
            "a family ensemble standardises logits: it combines harmful or membership predictors"
        )
    config = family_config([(m.config.model_name, m.config) for m in members])
    model = _with_members(FamilyEnsemble(first.spec, first.out_features, config), members)
    model.fit_standardisation(fit_batch.to(dtype=placement(model).dtype))
    versions = [f"{m.config.model_name}@{m.config.version}" for m in members]
    return _ensemble_predictor(members, model, config, "family_ensemble", "families-", versions,
                               predictor_id)  # fmt: skip


def _with_members(model: Any, members: list[Predictor]) -> Any:
    """``model`` (an ensemble) holding the members' weights, in their dtype, in eval mode."""
    for slot, member in zip(model.members, members, strict=True):
        slot.load_state_dict(member.model.state_dict())
    return model.to(placement(members[0].model).dtype).eval()


def _ensemble_predictor(
    members: list[Predictor],
    model: Any,
    config: Any,
    model_name: str,
    version_prefix: str,
    versions: list[str],
    predictor_id: str | None,
) -> Predictor:
    """The ensemble as a predictor: the first member's config under the ensemble's model, a version
    naming every member, no calibration yet (``loravet calibrate`` fits the ensemble's own)."""
    first = members[0].config
    ens_config = dataclasses.replace(
        first,
        predictor_id=predictor_id or first.predictor_id,
        version=version_prefix + "+".join(versions),
        model_name=model_name,
        hparams=dataclasses.asdict(config),
        calibration=None,
    )
    meta: dict[str, Any] = {
        "members": [{"version": v, **m.meta} for v, m in zip(versions, members, strict=True)]
    }
    return Predictor(ens_config, model, meta)


def opened(predictors: list[Predictor]) -> list[Predictor]:
    """Seed ensembles among ``predictors`` opened into their GL-nets, so that seeds can be added to
    a shipped ensemble (``loravet ensemble predictors/x runs/s3 runs/s4 --out ...``)."""
    out: list[Predictor] = []
    for p in predictors:
        if p.config.model_name != "gl_net_ensemble":
            out.append(p)
            continue
        hparams = {k: v for k, v in p.config.hparams.items() if k != "members"}
        nets = list(cast(GLNetEnsemble, p.model).members)
        metas = p.meta.get("members") or [{} for _ in nets]
        for net, meta in zip(nets, metas, strict=True):
            config = dataclasses.replace(
                p.config,
                model_name="gl_net",
                hparams=hparams,
                version=str(meta.get("version", "member")),
                calibration=None,
            )
            out.append(Predictor(config, net, {k: v for k, v in meta.items() if k != "version"}))
    return out


def combine(members: list[Predictor], predictor_id: str | None = None) -> Predictor:
    """One predictor whose model averages the members' raw outputs.

    Raises:
        ValueError: a member is not a GL-net, or members differ in more than their seed.
    """
    first = members[0].config
    for m in members:
        c = m.config
        if c.model_name != "gl_net":
            raise ValueError(
                f"{c.predictor_id}: only gl_net predictors are combined (got {c.model_name})"
            )
    _check_agree(members, (*SHARED, "hparams"), "; members may differ only in their seed")
    config = GLNetEnsembleConfig(members=len(members), **first.hparams)
    model = _with_members(GLNetEnsemble(first.spec, first.out_features, config), members)
    versions = [m.config.version for m in members]
    return _ensemble_predictor(members, model, config, "gl_net_ensemble", "ensemble-", versions,
                               predictor_id)  # fmt: skip


def validate(predictor: Predictor, zoo_dir: Path, split: str = "val") -> dict[str, Any]:
    zoo = Zoo.open(zoo_dir)
    data = load_task(zoo, split, predictor.config.task, spec=predictor.config.spec)
    pred = np.asarray(predictor.predict(data.batch), dtype=np.float64)
    return task_metrics(predictor.config.task, data.y, pred, predictor.config.threshold)


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="loravet ensemble", description=__doc__.split("\n")[0])
    p.add_argument(
        "members",
        nargs="+",
        type=Path,
        help="predictor directories (2 or more): GL-net seeds (a seed ensemble counts as its seeds), "
        "or GL(r)-invariant models of several families",
    )
    p.add_argument("--out", type=Path, required=True, help="predictor directory to write")
    p.add_argument(
        "--predictor-id", help="id of the combined predictor (default: the first member's)"
    )
    p.add_argument(
        "--zoo", type=Path, help="zoo to measure validation metrics on (default: the members')"
    )
    args = p.parse_args(argv)
    if len(args.members) < 2:
        return fail("an ensemble needs at least 2 members")
    torch.set_num_threads(1)
    try:
        members = opened([load_predictor(d) for d in args.members])
        zoo_dir = args.zoo or Path(str(members[0].meta.get("zoo", "")))
        if len({m.config.model_name for m in members}) > 1:
            val = load_task(Zoo.open(zoo_dir), "val", members[0].config.task,
                            spec=members[0].config.spec)  # fmt: skip
            ensemble = combine_families(members, val.batch, args.predictor_id)
        else:
            ensemble = combine(members, args.predictor_id)
        ensemble.meta["val_metrics"] = validate(ensemble, zoo_dir)
        ensemble.meta["zoo"] = str(zoo_dir)
        save_predictor(ensemble, args.out)
    except (CheckpointError, ZooError, ValueError, OSError) as exc:
        return fail(str(exc))
    metrics = ", ".join(
        f"{k} {v:.3f}" for k, v in ensemble.meta["val_metrics"].items() if isinstance(v, float)
    )
    print(f"{args.out}: {len(members)} members; validation {metrics}")
    return 0
