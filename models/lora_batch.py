"""``LoraBatch``: a batch of adapters of one ``LoraSpec``, grouped by module shape for batched maths.

Modules of identical (out, in) shape form a ``ShapeGroup`` whose factors are stacked as
``U: (B, L_g, n, r_max)`` and ``V: (B, L_g, m, r_max)``, so a model handles a group with one einsum
instead of a Python loop over modules. The constructors store them rank-major: the memory is laid
out as (L_g, B, r_max, n), each module's transposed factors of the whole batch one after another, so
``rank_major(U)`` is a free view whose (B * r_max, n) slices hold the batch as the rows of one matrix
per module. A layer that multiplies every factor by a weight (GL-net's ``P_i U_i``) then runs one
(B r, n) x (n, h) product per module that reads its weight once, instead of B skinny (h, n) x (n, r)
products that re-read it. It is also how PEFT stores ``lora_A`` (r, in), so packing V from a file is
a straight copy. The logical shape, and so every model's maths, is unchanged. Ranks are free to differ per adapter and per module: the
extra rank columns are zero. Zero columns add nothing to ``U V^T``, so padding is exact for every
GL-invariant model (``gl_net``, ``mlp_dense``, ``mlp_svd``, ``norm_stats``). It is not exact for
models that read raw factors (``mlp``, ``transformer``) or align them (``mlp_oalign``): for those a
rank-r adapter padded to ``max_rank`` is a different input from a rank-``max_rank`` adapter with the
same delta, which is one more reason those baselines are not GL-invariant.

    batch = LoraBatch.from_adapters([load_adapter(p) for p in paths])
    batch = batch.to(torch.float64)
    for group in batch.groups:
        group.U  # (B, L_g, n, r_max)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from lora_io.lora_spec import LoraSpec

if TYPE_CHECKING:
    from lora_io.lora_adapter import LoraAdapter


class SpecMismatchError(ValueError):
    """An adapter or batch whose ``LoraSpec`` is not the one expected (names both fingerprints)."""


@dataclass(frozen=True)
class SpecGroup:
    """Where the modules of one (out, in) shape sit in a spec: what models build parameters from."""

    out_features: int
    in_features: int
    module_index: tuple[int, ...]


def spec_groups(spec: LoraSpec) -> tuple[SpecGroup, ...]:
    """Group a spec's modules by (out, in) shape, groups in order of first appearance."""
    index: dict[tuple[int, int], list[int]] = {}
    for i, shape in enumerate(spec.shapes):
        index.setdefault(shape, []).append(i)
    return tuple(SpecGroup(n, m, tuple(idx)) for (n, m), idx in index.items())


def group_to_spec_order(spec: LoraSpec) -> torch.Tensor:
    """Permutation taking modules concatenated group by group back to spec order, (L,) int64."""
    flat = [i for g in spec_groups(spec) for i in g.module_index]
    inverse = torch.empty(len(flat), dtype=torch.long)
    inverse[torch.tensor(flat, dtype=torch.long)] = torch.arange(len(flat))
    return inverse


def check_spec(expected: LoraSpec, batch: LoraBatch) -> None:
    """Raise ``SpecMismatchError`` unless ``batch`` was built for ``expected`` (a model's spec)."""
    if batch.spec != expected:
        raise SpecMismatchError(
            f"batch has spec fingerprint {batch.spec.fingerprint} ({len(batch.spec)} modules) but the "
            f"model was built for {expected.fingerprint} ({len(expected)} modules)"
        )


def rank_major(x: torch.Tensor) -> torch.Tensor:
    """(B, L_g, n, r) -> (L_g, B, r, n), contiguous: a view when ``x`` is stored rank-major, else a copy."""
    return x.permute(1, 0, 3, 2).contiguous()


def from_rank_major(x: torch.Tensor) -> torch.Tensor:
    """(L_g, B, r, n) -> the (B, L_g, n, r) view of the same memory (the inverse of ``rank_major``)."""
    return x.permute(1, 0, 3, 2)


def stored_rank_major(x: torch.Tensor) -> torch.Tensor:
    """``x`` (B, L_g, n, r) unchanged in value, stored rank-major (a copy only when it is not)."""
    return from_rank_major(rank_major(x))


def pad_rows(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad the second-to-last dimension of ``x`` up to ``size`` (a rank-major factor's rank)."""
    if x.shape[-2] == size:
        return x
    if x.shape[-2] > size:
        raise ValueError(f"cannot pad {x.shape[-2]} rows down to {size}")
    return F.pad(x, (0, 0, 0, size - x.shape[-2]))


def pad_columns(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad the last dimension of ``x`` up to ``size`` (no copy when already that size)."""
    if x.shape[-1] == size:
        return x
    if x.shape[-1] > size:
        raise ValueError(f"cannot pad {x.shape[-1]} columns down to {size}")
    return F.pad(x, (0, size - x.shape[-1]))


@dataclass(frozen=True, eq=False)
class ShapeGroup:
    """The modules of one (out, in) shape, stacked. Columns at or beyond ``ranks`` are zero."""

    out_features: int
    in_features: int
    module_index: tuple[int, ...]
    U: torch.Tensor  # (B, L_g, n, r_max)
    V: torch.Tensor  # (B, L_g, m, r_max)
    ranks: torch.Tensor  # (B, L_g) int64, declared rank of each adapter's module

    @property
    def max_rank(self) -> int:
        return int(self.U.shape[-1])

    def stacked(self, max_rank: int) -> torch.Tensor:
        """``[U; V]`` with exactly ``max_rank`` columns, (B, L_g, n + m, max_rank), for raw-factor models.

        Raises:
            ValueError: an adapter's declared rank exceeds ``max_rank`` (columns would be lost).
        """
        U, V = self.U, self.V
        if self.max_rank > max_rank:
            top = int(self.ranks.max())
            if top > max_rank:
                raise ValueError(
                    f"an adapter has rank {top} on a ({self.out_features}, {self.in_features}) module; "
                    f"this model reads raw factors padded to max_rank={max_rank}"
                )
            U, V = U[..., :max_rank], V[..., :max_rank]
        return pad_columns(torch.cat([U, V], dim=2), max_rank)  # (B, L_g, n + m, R)


@dataclass(frozen=True, eq=False)
class LoraBatch:
    """B adapters sharing one ``LoraSpec``; ``groups`` follow ``spec_groups(spec)``."""

    spec: LoraSpec
    groups: tuple[ShapeGroup, ...]

    def __post_init__(self) -> None:
        expected = spec_groups(self.spec)
        if len(expected) != len(self.groups):
            raise ValueError(f"batch has {len(self.groups)} shape groups, its spec {len(expected)}")
        sizes = {int(g.U.shape[0]) for g in self.groups}
        if len(sizes) != 1:
            raise ValueError(f"shape groups disagree on the batch size: {sorted(sizes)}")
        for want, got in zip(expected, self.groups, strict=True):
            b, lg = int(got.U.shape[0]), len(want.module_index)
            shapes_ok = (
                got.module_index == want.module_index
                and tuple(got.U.shape[1:3]) == (lg, want.out_features)
                and tuple(got.V.shape[1:3]) == (lg, want.in_features)
                and got.U.shape[-1] == got.V.shape[-1]
                and tuple(got.V.shape[:1]) == (b,)
                and tuple(got.ranks.shape) == (b, lg)
            )
            if not shapes_ok:
                raise ValueError(
                    f"shape group {(want.out_features, want.in_features)} holds U {tuple(got.U.shape)}, "
                    f"V {tuple(got.V.shape)}, ranks {tuple(got.ranks.shape)} for modules {got.module_index}; "
                    f"expected (B, {lg}, {want.out_features}, r), (B, {lg}, {want.in_features}, r), (B, {lg}) "
                    f"for modules {want.module_index}"
                )

    # ----------------------------------------------------------------------------- properties
    @property
    def batch_size(self) -> int:
        return int(self.groups[0].U.shape[0])

    def __len__(self) -> int:
        return self.batch_size

    @property
    def dtype(self) -> torch.dtype:
        return self.groups[0].U.dtype

    @property
    def device(self) -> torch.device:
        return self.groups[0].U.device

    @property
    def max_rank(self) -> int:
        """Width of the widest group (what models pad every module to when they need one r)."""
        return max(g.max_rank for g in self.groups)

    @property
    def ranks(self) -> torch.Tensor:
        """Declared rank of every module of every adapter, (B, L) in spec order."""
        out = torch.empty(self.batch_size, len(self.spec), dtype=torch.long, device=self.device)
        for g in self.groups:
            out[:, list(g.module_index)] = g.ranks
        return out

    def module(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Factors of module ``i`` (spec order): U (B, n_i, r_max_g), V (B, m_i, r_max_g)."""
        for g in self.groups:
            if i in g.module_index:
                j = g.module_index.index(i)
                return g.U[:, j], g.V[:, j]
        raise IndexError(f"module {i} is not in a spec of {len(self.spec)} modules")

    # ----------------------------------------------------------------------------- transforms
    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> LoraBatch:
        """Apply ``fn`` to every U and V tensor (ranks unchanged)."""
        return self.with_factors([fn(g.U) for g in self.groups], [fn(g.V) for g in self.groups])

    def with_factors(self, Us: Sequence[torch.Tensor], Vs: Sequence[torch.Tensor]) -> LoraBatch:
        """Same spec and ranks, new per-group factors (e.g. a group element applied to them)."""
        groups = tuple(
            dataclasses.replace(g, U=u, V=v, ranks=g.ranks.to(u.device))
            for g, u, v in zip(self.groups, Us, Vs, strict=True)
        )
        return LoraBatch(self.spec, groups)

    def to(self, *args: Any, **kwargs: Any) -> LoraBatch:
        """Like ``Tensor.to``: ``batch.to("cuda")``, ``batch.to(torch.float64)``, ``to(device=, dtype=)``."""
        return self.map(lambda t: t.to(*args, **kwargs))

    def select(self, index: Sequence[int] | torch.Tensor | slice) -> LoraBatch:
        """A sub-batch (e.g. a minibatch); ranks and padding are kept."""
        if isinstance(index, slice):
            index = torch.arange(self.batch_size, device=self.device)[index]
        index = torch.as_tensor(index, dtype=torch.long, device=self.device)

        def take(
            x: torch.Tensor,
        ) -> torch.Tensor:  # (B, L_g, n, r) -> (B', L_g, n, r), rank-major
            return from_rank_major(rank_major(x).index_select(1, index))

        groups = tuple(
            dataclasses.replace(g, U=take(g.U), V=take(g.V), ranks=g.ranks[index])
            for g in self.groups
        )
        return LoraBatch(self.spec, groups)

    def pad_rank(self, r: int) -> LoraBatch:
        """Every group zero-padded to ``r`` columns (same deltas, same declared ranks)."""

        def pad(x: torch.Tensor) -> torch.Tensor:
            return from_rank_major(pad_rows(rank_major(x), r))

        return self.with_factors([pad(g.U) for g in self.groups], [pad(g.V) for g in self.groups])

    @classmethod
    def cat(cls, batches: Sequence[LoraBatch]) -> LoraBatch:
        """Concatenate batches of one spec along B, padding each group to its widest rank."""
        if not batches:
            raise ValueError("cannot concatenate an empty list of batches")
        spec = batches[0].spec
        for b in batches[1:]:
            if b.spec != spec:
                raise SpecMismatchError(
                    f"cannot concatenate batches of spec {b.spec.fingerprint} and {spec.fingerprint}"
                )
        groups = []
        for parts in zip(*(b.groups for b in batches), strict=True):
            r = max(p.max_rank for p in parts)
            groups.append(
                dataclasses.replace(
                    parts[0],
                    U=_cat_rank_major([p.U for p in parts], r),
                    V=_cat_rank_major([p.V for p in parts], r),
                    ranks=torch.cat([p.ranks for p in parts]),
                )
            )
        return cls(spec, tuple(groups))

    # ----------------------------------------------------------------------------- constructors
    @classmethod
    def from_module_tensors(
        cls,
        spec: LoraSpec,
        Us: Sequence[torch.Tensor],
        Vs: Sequence[torch.Tensor],
        *,
        ranks: torch.Tensor | None = None,
    ) -> LoraBatch:
        """Build from per-module tensors in spec order, ``Us[i]: (B, n_i, r_i)``, ``Vs[i]: (B, m_i, r_i)``.

        The synthetic path for tests and benchmarks. ``ranks`` (B, L) declares smaller ranks when
        some columns are already zero padding; by default every adapter's module i has rank r_i.
        """
        if len(Us) != len(spec) or len(Vs) != len(spec):
            raise ValueError(
                f"spec has {len(spec)} modules; got {len(Us)} U and {len(Vs)} V tensors"
            )
        b = int(Us[0].shape[0])
        for i, (u, v, (n, m)) in enumerate(zip(Us, Vs, spec.shapes, strict=True)):
            if (
                u.ndim != 3
                or v.ndim != 3
                or u.shape[:2] != (b, n)
                or v.shape[:2] != (b, m)
                or u.shape[2] != v.shape[2]
            ):
                raise ValueError(
                    f"module {i} ({spec.modules[i].name}): U {tuple(u.shape)}, V {tuple(v.shape)}; "
                    f"expected ({b}, {n}, r) and ({b}, {m}, r)"
                )
        if ranks is None:
            ranks = torch.tensor([[int(u.shape[2]) for u in Us]] * b, dtype=torch.long)
        groups = []
        for sg in spec_groups(spec):
            r = max(int(Us[i].shape[2]) for i in sg.module_index)
            idx = sg.module_index
            U = torch.stack([pad_columns(Us[i], r) for i in idx], dim=1)  # (B, L_g, n, r)
            V = torch.stack([pad_columns(Vs[i], r) for i in idx], dim=1)  # (B, L_g, m, r)
            U, V = stored_rank_major(U), stored_rank_major(V)
            group_ranks = ranks[:, list(idx)].to(U.device)  # (B, L_g)
            groups.append(ShapeGroup(sg.out_features, sg.in_features, idx, U, V, group_ranks))
        return cls(spec, tuple(groups))

    @classmethod
    def from_factors(
        cls,
        spec: LoraSpec,
        factors: Sequence[Sequence[tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]]],
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> LoraBatch:
        """Build from ``factors[b][i] = (U (n_i, r_bi), V (m_i, r_bi))``: any rank per adapter and module."""
        if not factors:
            raise ValueError("a LoraBatch needs at least one adapter")
        groups = []
        pack_dtype = np.float64 if dtype == torch.float64 else np.float32
        for sg in spec_groups(spec):
            n, m, idx = sg.out_features, sg.in_features, sg.module_index
            ranks = torch.zeros(len(factors), len(idx), dtype=torch.long)
            for b, adapter in enumerate(factors):
                if len(adapter) != len(spec):
                    raise ValueError(
                        f"adapter {b} has {len(adapter)} modules; the spec has {len(spec)}"
                    )
                for j, i in enumerate(idx):
                    u, v = adapter[i]
                    if (
                        u.ndim != 2
                        or v.ndim != 2
                        or u.shape[0] != n
                        or v.shape[0] != m
                        or u.shape[1] != v.shape[1]
                    ):
                        raise ValueError(
                            f"adapter {b}, module {i} ({spec.modules[i].name}): U {tuple(u.shape)}, "
                            f"V {tuple(v.shape)}; expected ({n}, r) and ({m}, r)"
                        )
                    ranks[b, j] = int(u.shape[1])
            r = int(ranks.max())
            # packed in numpy (a copy per factor costs ~1 us there, ~5 us as a torch op)
            Ut = np.zeros((len(idx), len(factors), r, n), dtype=pack_dtype)  # (L_g, B, r, n)
            Vt = np.zeros((len(idx), len(factors), r, m), dtype=pack_dtype)  # (L_g, B, r, m)
            for b, adapter in enumerate(factors):
                for j, i in enumerate(idx):
                    u, v = adapter[i]
                    Ut[j, b, : u.shape[1]] = _as_numpy(u).T
                    Vt[j, b, : v.shape[1]] = _as_numpy(v).T
            U = from_rank_major(torch.from_numpy(Ut).to(dtype))  # (B, L_g, n, r)
            V = from_rank_major(torch.from_numpy(Vt).to(dtype))  # (B, L_g, m, r)
            groups.append(ShapeGroup(n, m, idx, U, V, ranks))
        batch = cls(spec, tuple(groups))
        return batch.to(device) if device is not None else batch

    @classmethod
    def from_adapters(
        cls,
        adapters: Sequence[LoraAdapter],
        spec: LoraSpec | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> LoraBatch:
        """Stack validated adapters (``lora_io.LoraAdapter``); all must have ``spec`` (default: the first's).

        Raises:
            SpecMismatchError: an adapter touches other modules or shapes than ``spec``.
        """
        if not adapters:
            raise ValueError("a LoraBatch needs at least one adapter")
        spec = spec if spec is not None else adapters[0].spec
        for k, adapter in enumerate(adapters):
            if adapter.spec != spec:
                raise SpecMismatchError(
                    f"adapter {k} has spec fingerprint {adapter.spec.fingerprint}, "
                    f"expected {spec.fingerprint} ({len(spec)} modules)"
                )
        factors = [[(mod.U, mod.V) for mod in adapter.modules] for adapter in adapters]
        return cls.from_factors(spec, factors, dtype=dtype, device=device)


def _cat_rank_major(parts: Sequence[torch.Tensor], r: int) -> torch.Tensor:
    """Concatenate (B_k, L_g, n, r_k) tensors along B, padded to r columns, stored rank-major."""
    return from_rank_major(torch.cat([pad_rows(rank_major(p), r) for p in parts], dim=1))


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
