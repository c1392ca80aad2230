"""``FamilyEnsemble``: families standardised on the batch they were fitted to, then summed."""

from __future__ import annotations

import pytest
import torch

from models.family_ensemble import FamilyEnsemble, FamilyEnsembleConfig
from models.synthetic_loras import random_lora_batch

GL = {"family": "gl_net", "model": "gl_net", "hparams": {"hidden": 8, "head_dim": 16}}
DENSE = {"family": "mlp_dense", "model": "mlp_dense", "hparams": {}}


def _fitted(small_spec, weights: list[float]) -> tuple[FamilyEnsemble, object]:
    torch.manual_seed(0)
    config = FamilyEnsembleConfig(members=[GL, dict(GL), DENSE], weights=weights)
    model = FamilyEnsemble(small_spec, 1, config).double().eval()
    val = random_lora_batch(small_spec, 12, 4, seed=1, dtype=torch.float64)
    model.fit_to_data(val)
    return model, val


def test_the_output_is_the_weighted_sum_of_standardised_family_means(small_spec) -> None:
    model, _ = _fitted(small_spec, [1.0, 0.5])
    batch = random_lora_batch(small_spec, 5, 4, seed=2, dtype=torch.float64)
    with torch.no_grad():
        gl = (model.members[0](batch) + model.members[1](batch)) / 2
        dense = model.members[2](batch)
        want = (gl - model.center[0]) / model.scale[0] + 0.5 * (
            dense - model.center[1]
        ) / model.scale[1]
        assert torch.allclose(model(batch), want, rtol=1e-12, atol=1e-12)


def test_on_the_fitted_split_each_family_is_centred_with_unit_spread(small_spec) -> None:
    """So neither family outweighs the other by the scale of its logits."""
    model, val = _fitted(small_spec, [1.0, 1.0])
    with torch.no_grad():
        z = (model.family_means(val) - model.center[:, None]) / model.scale[:, None]
    assert torch.allclose(z.mean(dim=1), torch.zeros(2, 1, dtype=z.dtype), atol=1e-12)
    assert torch.allclose(z.std(dim=1), torch.ones(2, 1, dtype=z.dtype), atol=1e-12)


@pytest.mark.parametrize(
    ("members", "weights", "needle"),
    [
        ([GL], [], "needs >= 2"),
        ([GL, {"family": "o", "model": "mlp_oalign", "hparams": {}}], [], "GL\\(r\\)-invariant"),
        ([GL, DENSE], [1.0], "2 families"),
        ([GL, {"family": "x", "model": "gl_net"}], [], "keys family, model, hparams"),
    ],
)
def test_bad_configs_are_refused_with_the_reason(members, weights, needle) -> None:
    with pytest.raises(ValueError, match=needle):
        FamilyEnsembleConfig(members=members, weights=weights)
