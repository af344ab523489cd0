"""The subscriber model: output shapes per encoder, mask invariance, embedding size."""

from __future__ import annotations

import pytest
import torch

from gpuseg.config import ModelConfig
from gpuseg.model import N_MIGRATION, SubscriberModel, flops_per_subscriber, n_parameters

B, T, M, S = 4, 12, 9, 5
ENCODERS = ["gru", "lstm", "transformer", "tcn", "static"]


def make(
    encoder: str, embedding_dim: int = 8, n_static: int = S, num_layers: int = 1
) -> SubscriberModel:
    torch.manual_seed(0)
    cfg = ModelConfig(
        encoder=encoder,
        hidden_size=16,
        embedding_dim=embedding_dim,
        static_hidden=8,
        n_heads=2,
        num_layers=num_layers,
    )
    model = SubscriberModel(M, n_static, T, cfg).eval()
    model.set_normalization(
        torch.full((M,), 1.0), torch.full((M,), 2.0), torch.zeros(n_static), torch.ones(n_static)
    )
    return model


def inputs(seed: int = 0, n_static: int = S) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    usage = torch.rand(B, T, M, generator=g) * 100
    mask = torch.rand(B, T, generator=g) > 0.3
    mask[:, -1] = True  # rows keep at least one period
    mask[0, :4] = False  # a late joiner
    mask[1, -1] = False  # last period missing for one subscriber
    mask[1, 2] = True
    static = torch.randn(B, n_static, generator=g)
    return usage, mask, static


@pytest.mark.parametrize("encoder", ENCODERS)
def test_output_shapes(encoder):
    model = make(encoder)
    out = model(*inputs())
    assert out["embedding"].shape == (B, 8)
    assert out["churn_logit"].shape == (B,)
    assert out["migration_logits"].shape == (B, N_MIGRATION)
    assert out["profile"].shape == (B, 2 * M)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert n_parameters(model) > 0 and flops_per_subscriber(model) >= 0


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("embedding_dim", [3, 8])
def test_embedding_dim_honoured(encoder, embedding_dim):
    model = make(encoder, embedding_dim=embedding_dim)
    assert model(*inputs())["embedding"].shape == (B, embedding_dim)
    assert model.encode(*inputs()).shape == (B, embedding_dim)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_mask_invariance(encoder):
    """Values in missing periods must not reach the output; values in present periods must."""
    model = make(encoder, num_layers=2)
    usage, mask, static = inputs()
    ref = model(usage, mask, static)
    changed = usage.clone()
    noise = torch.rand(B, T, M, generator=torch.Generator().manual_seed(9)) * 1e4
    changed[~mask] = noise[~mask]
    out = model(changed, mask, static)
    for key in ref:
        torch.testing.assert_close(out[key], ref[key], rtol=0, atol=1e-6)
    # the check can fail: changing a present value changes the output
    present = usage.clone()
    present[mask] = noise[mask]
    assert not torch.allclose(
        model(present, mask, static)["embedding"], ref["embedding"], atol=1e-4
    )


@pytest.mark.parametrize("encoder", ENCODERS)
def test_batch_rows_independent(encoder):
    """A subscriber's output does not depend on who else is in the batch (eval mode)."""
    model = make(encoder)
    usage, mask, static = inputs()
    whole = model(usage, mask, static)["embedding"]
    single = model(usage[2:3], mask[2:3], static[2:3])["embedding"]
    torch.testing.assert_close(single[0], whole[2], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("encoder", ["gru", "static"])
def test_without_static_features(encoder):
    model = make(encoder, n_static=0)
    usage, mask, _ = inputs()
    out = model(usage, mask, torch.zeros(B, 0))
    assert out["embedding"].shape == (B, 8) and model.static_net is None


def test_normalize_and_profile_target():
    model = make("gru")
    usage, mask, _ = inputs()
    x = model.normalize(usage, mask)
    assert (x[~mask] == 0).all()
    expected = (torch.log1p(usage[mask]) - 1.0) / 2.0
    torch.testing.assert_close(x[mask], expected)
    target = model.profile_target(x, mask)
    assert target.shape == (B, 2 * M)
    row0 = x[0][mask[0]].mean(0)  # whole-window masked mean of subscriber 0
    torch.testing.assert_close(target[0, :M], row0)
    q = T // 4
    recent = x[0, -q:][mask[0, -q:]].mean(0)
    torch.testing.assert_close(target[0, M:], recent)


def test_unknown_encoder():
    with pytest.raises(ValueError, match="encoder"):
        SubscriberModel(M, S, T, ModelConfig(encoder="rnn"))  # type: ignore[arg-type]
