"""Adapter bytes in, :class:`~core.contracts.Report` out: pure functions, no Redis, no queue.

The resident worker and ``loravet vet`` both call :func:`vet_batch`, so a report from the command
line and one from the service are the same report. A batch is read and checked adapter by adapter,
then grouped by ``LoraSpec`` so each predictor runs once per group (one forward pass for many jobs).
One bad adapter never spoils the others: its slot in the result holds its exception instead.

Verdict policy (also in docs/api.md), most severe wins:

* ``reject``: any static check failed, or a harmful-finetune predictor's probability is at or
  above its threshold;
* ``review``: no predictor (or no harmful-finetune predictor) knows this base model, said plainly;
  a harmful-finetune probability fell in its predictor's review band (calibrated on validation
  LoRAs: the range where it cannot tell clean from harmful reliably); a check warned; or a quality
  predictor good enough to decide scored below its threshold;
* ``accept``: everything ran and nothing above applies.

A scan that did not finish never produces a report, so nothing unfinished can read as clean.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from core.contracts import (
    BaseModelEntry,
    CheckEntry,
    EvidenceEntry,
    ModuleEntry,
    PredictionEntry,
    Report,
    Timings,
    Verdict,
    VerdictReason,
    Versions,
    loravet_version,
    report_id_for,
)
from lora_io import CheckResult, LoraAdapter, LoraFileError, LoraSpec, load_adapter, run_checks

logger = logging.getLogger("loravet.worker")

DEFAULT_HARMFUL_THRESHOLD = 0.5
"""Used when a harmful-finetune predictor ships without a calibrated threshold."""


class PredictorLike(Protocol):
    """What the pipeline needs from ``models.predictor.Predictor``."""

    config: Any  # PredictorConfig: predictor_id, version, task, threshold, label_names, spec

    def predict(self, adapters: Any) -> np.ndarray:
        """(B, out) for a list of ``LoraAdapter`` or a packed ``LoraBatch`` of one spec."""
        ...


class RegistryLike(Protocol):
    """What the pipeline needs from ``models.registry.PredictorRegistry``."""

    def for_spec(self, spec: LoraSpec) -> list[Any]: ...

    def all(self) -> list[Any]: ...


class PredictorFailedError(RuntimeError):
    """A predictor raised on an adapter: transient as far as the queue knows (retried)."""


@dataclass(frozen=True)
class VetInput:
    """One adapter to vet: its bytes, optional ``adapter_config.json`` bytes, and its ids."""

    adapter: bytes
    config: bytes | None = None
    report_id: str | None = None
    config_sha256: str | None = None
    submitted_at: datetime | None = None


@dataclass
class _Loaded:
    index: int
    item: VetInput
    adapter: LoraAdapter
    checks: list[CheckResult]
    load_ms: float
    checks_ms: float
    predictions: list[PredictionEntry]
    predict_ms: float = 0.0
    predictor_count: int = 0
    harmful_predictor_count: int = 0
    device: str | None = None
    related: list[str] = field(default_factory=list)
    """Why predictors of the same base did not run: their module set differs (``related_notes``)."""


def vet_batch(
    items: Sequence[VetInput],
    registry: RegistryLike | None,
    *,
    started_at: datetime | None = None,
    predictor_set: str | None = None,
) -> list[Report | Exception]:
    """Vet several adapters together; slot ``i`` holds the report of ``items[i]`` or its exception.

    Exceptions are :class:`lora_io.LoraFileError` for input that can never be vetted (permanent)
    and anything else for faults worth retrying (a predictor raising, for example).
    ``predictor_set`` names the published set ``registry`` was loaded from, for the reports.
    """
    started_at = started_at or datetime.now(UTC)
    results: list[Report | Exception | None] = [None] * len(items)
    loaded: list[_Loaded] = []
    for i, item in enumerate(items):
        try:
            loaded.append(_load_and_check(i, item))
        except LoraFileError as exc:
            results[i] = exc
    by_spec: dict[str, list[_Loaded]] = {}
    for entry in loaded:
        by_spec.setdefault(entry.adapter.spec.fingerprint, []).append(entry)
    for group in by_spec.values():
        predictors = registry.for_spec(group[0].adapter.spec) if registry is not None else []
        runnable = [e for e in group if _finite(e)]
        related = (
            related_notes(group[0].adapter.spec, registry)
            if not predictors and registry is not None
            else []
        )
        for entry in group:
            entry.related = related
            entry.predictor_count = len(predictors)
            entry.harmful_predictor_count = sum(1 for p in predictors if p.config.task == "harmful")
        # One batch per widest rank, built once and read by every predictor of the spec (a rank-4
        # adapter beside a rank-16 one would be zero-padded to 16 columns for nothing).
        by_rank: dict[int, list[_Loaded]] = {}
        for entry in runnable:
            by_rank.setdefault(max(entry.adapter.ranks, default=0), []).append(entry)
        # (only where a predictor will read it: packing imports torch, a few hundred MB a worker
        # serving no predictor for this base never needs)
        batches = [(e, _shared_batch(e) if predictors else None) for e in by_rank.values()]
        for predictor in predictors:
            for entries, batch in batches:
                for entry, failure in _predict_group(predictor, entries, batch):
                    if failure is not None:
                        results[entry.index] = failure
    batch_size = len(items)
    for entry in loaded:
        if results[entry.index] is None:
            results[entry.index] = _assemble(entry, started_at, batch_size, predictor_set)
    return [r if r is not None else RuntimeError("internal: no result") for r in results]


def related_notes(spec: LoraSpec, registry: Any) -> list[str]:
    """One sentence per predictor of the same base that was trained on another module set."""
    find = getattr(registry, "related", None)
    if find is None:
        return []
    mine = set(spec.modules)
    notes = []
    for p in find(spec):
        theirs = p.config.spec.modules
        shared = len(mine & set(theirs))
        notes.append(
            f"predictor {p.config.predictor_id}@{p.config.version} knows this base model but was "
            f"trained on adapters of {len(theirs)} modules; this adapter has {len(spec)}, of which "
            f"{shared} are among them (a different module set: more or other layers or projections), "
            "and a prediction on it would be a guess"
        )
    return notes


def vet_one(adapter: bytes, config: bytes | None, registry: RegistryLike | None) -> Report:
    """One adapter, raising its exception (``loravet vet`` and tests)."""
    (result,) = vet_batch([VetInput(adapter=adapter, config=config)], registry)
    if isinstance(result, Exception):
        raise result
    return result


def decide_verdict(
    checks: Sequence[CheckEntry],
    predictions: Sequence[PredictionEntry],
    *,
    predictor_count: int,
    harmful_predictor_count: int,
    base_model: BaseModelEntry,
    related: Sequence[str] = (),
) -> tuple[Verdict, list[VerdictReason]]:
    """The verdict policy of the module docstring, with every reason that applies (not just the first)."""
    reasons: list[VerdictReason] = []
    reject = False
    for c in checks:
        if c.status == "fail":
            reject = True
            reasons.append(
                VerdictReason(code="check_failed", message=f"check {c.name} failed: {c.detail}")
            )
    for p in predictions:
        if p.task == "harmful" and p.threshold is not None and p.value >= p.threshold:
            reject = True
            reasons.append(
                VerdictReason(
                    code="harmful",
                    message=f"predictor {p.predictor_id}@{p.predictor_version} gives harmful-finetune "
                    f"probability {p.value:.3f} (threshold {p.threshold:.3f})",
                )
            )
    for p in predictions:
        upper = p.threshold if p.threshold is not None else DEFAULT_HARMFUL_THRESHOLD
        if (
            p.task == "harmful"
            and p.review_threshold is not None
            and p.review_threshold <= p.value < upper
        ):
            reasons.append(
                VerdictReason(
                    code="harmful_uncertain",
                    message=f"predictor {p.predictor_id}@{p.predictor_version} gives harmful-finetune "
                    f"probability {p.value:.3f}: in its review band ({p.review_threshold:.3f} to "
                    f"{upper:.3f}), where it cannot tell clean from harmful reliably"
                    + (f"; {p.note}" if p.note else ""),
                )
            )
    where = f"{base_model.title}, spec {base_model.spec_fingerprint}"
    if predictor_count == 0:
        reasons.append(
            VerdictReason(
                code="no_predictor",
                message=(
                    f"no predictor for this adapter's module set ({where}): "
                    + "; ".join(related)
                    + ". Only the static checks ran, so quality and harmful-finetune risk are "
                    "unknown and a person should review it"
                )
                if related
                else f"no predictor for this base model ({where}): only the static checks ran, so "
                "quality and harmful-finetune risk are unknown and a person should review it",
            )
        )
    elif harmful_predictor_count == 0:
        reasons.append(
            VerdictReason(
                code="no_predictor",
                message=f"no harmful-finetune predictor for this base model ({where}): harmful-finetune "
                "risk is unknown and a person should review it",
            )
        )
    for c in checks:
        if c.status == "warn":
            reasons.append(
                VerdictReason(code="check_warning", message=f"check {c.name} warned: {c.detail}")
            )
    for p in predictions:
        if p.task == "quality" and p.decides and p.threshold is not None and p.value < p.threshold:
            reasons.append(
                VerdictReason(
                    code="low_quality",
                    message=f"predictor {p.predictor_id}@{p.predictor_version} estimates quality "
                    f"{p.value:.3f}, below its threshold {p.threshold:.3f}",
                )
            )
    verdict: Verdict = "reject" if reject else ("review" if reasons else "accept")
    return verdict, reasons


def prediction_entry(config: Any, row: np.ndarray) -> PredictionEntry:
    """Turn one output row of a predictor into a report entry with a label."""
    values = np.asarray(row, dtype=np.float64).reshape(-1)
    task = config.task
    threshold = config.threshold
    if task == "harmful" and threshold is None:
        threshold = DEFAULT_HARMFUL_THRESHOLD
    names = list(getattr(config, "label_names", None) or [])
    per_label = None
    if values.size == 1:
        value = float(values[0])
        label = _single_label(task, value, threshold, names)
    else:
        keys = [names[i] if i < len(names) else f"output_{i}" for i in range(values.size)]
        per_label = {k: float(v) for k, v in zip(keys, values, strict=True)}
        best = int(np.argmax(values))
        value, label = float(values[best]), keys[best]
    cal = getattr(config, "calibration", None)
    extra: dict[str, Any] = {}
    if cal is not None:
        extra["note"] = cal.describe() or None
        extra["decides"] = bool(cal.decides)
        if task == "harmful" and cal.review_threshold is not None:
            extra["review_threshold"] = float(cal.review_threshold)
            if label == "not_harmful" and value >= cal.review_threshold:
                label = "uncertain"
        if task == "quality" and cal.half_width is not None and values.size == 1:
            extra["interval"] = (value - cal.half_width, value + cal.half_width)
            extra["interval_coverage"] = cal.coverage
    return PredictionEntry(
        task=task,
        predictor_id=str(config.predictor_id),
        predictor_version=str(config.version),
        value=value,
        threshold=None if threshold is None else float(threshold),
        label=label,
        values=per_label,
        **extra,
    )


def _single_label(task: str, value: float, threshold: float | None, names: list[str]) -> str | None:
    if task == "harmful":
        return "harmful" if threshold is not None and value >= threshold else "not_harmful"
    if task == "quality":
        if threshold is None:
            return None
        return "below_threshold" if value < threshold else "ok"
    name = names[0] if names else "member"
    return name if value >= (threshold if threshold is not None else 0.5) else f"not_{name}"


def _load_and_check(index: int, item: VetInput) -> _Loaded:
    t0 = time.perf_counter()
    # NaN/Inf are kept so they show up as a failed check (reject) rather than an unexplained error
    adapter = load_adapter(item.adapter, config=item.config, allow_non_finite=True)
    t1 = time.perf_counter()
    checks = run_checks(adapter)
    t2 = time.perf_counter()
    return _Loaded(index, item, adapter, checks, (t1 - t0) * 1e3, (t2 - t1) * 1e3, [])


def _finite(entry: _Loaded) -> bool:
    """Predictors only see adapters whose factors are finite: NaN would poison a batched pass."""
    return all(c.status != "fail" for c in entry.checks if c.name == "finite_values")


def _shared_batch(group: list[_Loaded]) -> Any:
    """The group's adapters packed once for all predictors (``models.lora_batch.LoraBatch``), or
    None where they cannot be (each predictor then packs the adapters itself, and says why)."""
    if not group:
        return None
    try:
        from models.lora_batch import LoraBatch  # torch: only where predictors run at all

        return LoraBatch.from_adapters([e.adapter for e in group], group[0].adapter.spec)
    except Exception:
        return None


def _predict_group(
    predictor: Any, group: list[_Loaded], batch: Any = None
) -> list[tuple[_Loaded, Exception | None]]:
    """One forward pass for the group (over ``batch``, its adapters already packed, when given);
    on failure, adapter by adapter so one bad input is isolated."""
    if not group:
        return []
    try:
        t0 = time.perf_counter()
        inputs = batch if batch is not None else [e.adapter for e in group]
        out = np.asarray(predictor.predict(inputs))
        share = (time.perf_counter() - t0) * 1e3 / len(group)
        if out.shape[0] != len(group):
            raise PredictorFailedError(
                f"predictor returned {out.shape[0]} rows for {len(group)} adapters"
            )
        device = _device_of(predictor)
        for entry, row in zip(group, out, strict=True):
            entry.predictions.append(prediction_entry(predictor.config, row))
            entry.predict_ms += share
            entry.device = entry.device or device
        _add_evidence(predictor, group, batch)
        return [(e, None) for e in group]
    except Exception as exc:
        if len(group) > 1:
            return [pair for e in group for pair in _predict_group(predictor, [e])]
        cfg = predictor.config
        return [
            (
                group[0],
                PredictorFailedError(
                    f"predictor {cfg.predictor_id}@{cfg.version} failed: {type(exc).__name__}: {exc}"
                ),
            )
        ]


def _add_evidence(predictor: Any, group: list[_Loaded], batch: Any) -> None:
    """The token scan's evidence on the group's flagged or reviewed adapters (their last prediction,
    this predictor's). Evidence explains, it never decides: if it cannot be computed the report
    goes out without it and the worker logs why."""
    explain = getattr(predictor, "evidence", None)
    if explain is None or predictor.config.task != "harmful":
        return
    flagged = [
        k for k, e in enumerate(group) if e.predictions[-1].label in ("harmful", "uncertain")
    ]
    if not flagged:
        return
    t0 = time.perf_counter()
    try:
        inputs = batch.select(flagged) if batch is not None else [group[k].adapter for k in flagged]
        rows = explain(inputs)
    except Exception as exc:
        logger.warning("evidence of %s failed: %s: %s", predictor.config.predictor_id,
                       type(exc).__name__, exc)  # fmt: skip
        return
    if rows is None:
        return
    share = (time.perf_counter() - t0) * 1e3 / len(flagged)
    for k, row in zip(flagged, rows, strict=True):
        group[k].predict_ms += share
        if not row:  # the scan saw nothing a clean finetune does not show
            continue
        group[k].predictions[-1] = (
            group[k]
            .predictions[-1]
            .model_copy(update={"evidence": [EvidenceEntry(**e) for e in row]})
        )


def _device_of(predictor: Any) -> str | None:
    """The device a predictor's model lives on, when it has one (``cpu``, ``cuda:0``)."""
    model = getattr(predictor, "model", None)
    params = getattr(model, "parameters", None)
    first = next(iter(params()), None) if params is not None else None
    return str(first.device) if first is not None else "cpu"


def _assemble(
    entry: _Loaded, started_at: datetime, batch_size: int, predictor_set: str | None
) -> Report:
    adapter, item = entry.adapter, entry.item
    base = adapter.base_model
    base_entry = BaseModelEntry(
        family=base.family,
        title=base.title,
        hint=base.hint,
        spec_fingerprint=adapter.spec.fingerprint,
        module_count=len(adapter.modules),
    )
    checks = [CheckEntry(name=c.name, status=c.status, detail=c.detail) for c in entry.checks]
    verdict, reasons = decide_verdict(
        checks,
        entry.predictions,
        predictor_count=entry.predictor_count,
        harmful_predictor_count=entry.harmful_predictor_count,
        base_model=base_entry,
        related=entry.related,
    )
    queued_ms = None
    if item.submitted_at is not None:
        queued_ms = max(0.0, (started_at - item.submitted_at).total_seconds() * 1e3)
    config_sha = item.config_sha256
    if config_sha is None and item.config is not None:
        config_sha = hashlib.sha256(item.config).hexdigest()
    return Report(
        report_id=item.report_id or report_id_for(adapter.sha256, config_sha),
        sha256=adapter.sha256,
        config_sha256=config_sha,
        size_bytes=adapter.size_bytes,
        format=adapter.format,
        scale_source=adapter.scale_source,
        base_model=base_entry,
        modules=[
            ModuleEntry(
                name=m.name,
                out_features=m.out_features,
                in_features=m.in_features,
                rank=m.rank,
                scale=m.scale,
            )
            for m in adapter.modules
        ],
        checks=checks,
        predictions=entry.predictions,
        verdict=verdict,
        reasons=reasons,
        timings=Timings(
            queued_ms=queued_ms,
            load_ms=round(entry.load_ms, 3),
            checks_ms=round(entry.checks_ms, 3),
            predict_ms=round(entry.predict_ms, 3),
            total_ms=round(entry.load_ms + entry.checks_ms + entry.predict_ms, 3),
            batch_size=batch_size,
        ),
        versions=Versions(
            loravet=loravet_version(),
            predictors=[f"{p.predictor_id}@{p.predictor_version}" for p in entry.predictions],
            predictor_set=predictor_set if entry.predictions else None,
            device=entry.device,
        ),
        created_at=datetime.now(UTC),
    )
