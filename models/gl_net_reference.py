"""GL-net computed adapter by adapter, the way ``gl_net`` did before its rank-major layout.

Each adapter's factors are multiplied on their own (``P_i @ U_i`` broadcast over (B, L_g, n, r)),
so every (h, n) weight is re-read once per adapter: the same maths, 40-110x off this machine's
limit. Kept as the oracle that the batched implementation is tested against (outputs and gradients
to float round-off) and as the "before" column of the roofline benchmark. Eval mode only (dropout
scales, as ``GLDropout.eval`` does). Not imported by ``gl_net``.
"""

from __future__ import annotations

import torch

from models.gl_layers import NORM_FLOOR, GLHiddenBlock
from models.gl_net import GLNet
from models.lora_batch import LoraBatch, pad_columns


def batch_major_forward(model: GLNet, batch: LoraBatch) -> torch.Tensor:
    """``model(batch)`` in eval mode, computed with features laid out (B, L, h, r): (B, out)."""
    r = batch.max_rank
    layer = model.input_layer
    Us = [pad_columns(P @ g.U, r) for P, g in zip(layer.P, batch.groups, strict=True)]
    Vs = [pad_columns(Q @ g.V, r) for Q, g in zip(layer.Q, batch.groups, strict=True)]
    U = torch.cat(Us, dim=1).index_select(1, layer.to_spec_order)  # (B, L, h, r)
    V = torch.cat(Vs, dim=1).index_select(1, layer.to_spec_order)  # (B, L, h, r)
    root = model.input_scale.sqrt().to(U.dtype)[None, :, None, None]  # (1, L, 1, 1)
    U, V = U / root, V / root
    keep = 1 - model.config.dropout
    for block in model.blocks:
        assert isinstance(block, GLHiddenBlock)
        row_sums = U @ V.sum(dim=-2, keepdim=True).mT  # (B, L, h, 1) = (U V^T) 1
        col_sums = V @ U.sum(dim=-2, keepdim=True).mT  # (B, L, h, 1) = (U V^T)^T 1
        U, V = U * (row_sums > 0) * keep, V * (col_sums > 0) * keep
        U, V = block.linear.A @ U, block.linear.B @ V  # (B, L, h, r)
    head = model.head
    if head.pool == "mean":
        h = U.shape[-2]
        feats = (U.sum(dim=-2) * V.sum(dim=-2)).sum(dim=-1) / (h * h)  # (B, L)
    elif head.pool == "norms":
        rows = ((U @ (V.mT @ V)) * U).sum(dim=-1)  # (B, L, h)
        cols = ((V @ (U.mT @ U)) * V).sum(dim=-1)  # (B, L, h)
        squares = torch.cat([rows, cols, rows.sum(dim=-1, keepdim=True)], dim=-1).clamp_min(0)
        feats = 0.5 * torch.log(squares + NORM_FLOOR).flatten(start_dim=1)  # (B, L*(2h+1))
    else:
        feats = (U @ V.mT).flatten(start_dim=1)  # (B, L*h*h)
    return head.linear2(torch.relu(head.norm(head.linear1(feats))))  # (B, out)
