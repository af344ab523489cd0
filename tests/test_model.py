"""The subscriber model: output shapes per encoder, mask invariance, embedding size."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from gpuseg.config import ModelConfig
from gpuseg.features.window import window_stats
from gpuseg.model.sequence import N_MIGRATION, SubscriberModel, flops_per_subscriber, n_parameters

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
    trainable = {id(p) for p in model.parameters()}
    assert n_parameters(model) == sum(p.numel() for p in model.parameters()) > 1000
    assert len(trainable) == len(list(model.parameters()))
    # the encoder's matmuls per subscriber grow with the periods; a static model has none over T
    flops = flops_per_subscriber(model)
    assert flops > (0 if encoder == "static" else 2 * T * (M + 1) * model.cfg.hidden_size)


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


def make_wide(
    head_hidden: int, wide_bins: int, bins_churn: bool | str = True, window_stats: bool = False
) -> SubscriberModel:
    torch.manual_seed(0)
    cfg = ModelConfig(
        hidden_size=16,
        embedding_dim=8,
        static_hidden=8,
        wide_heads=True,
        head_hidden=head_hidden,
        wide_bins=wide_bins,
        wide_bins_churn=bins_churn,
        wide_window_stats=window_stats,
    )
    return SubscriberModel(M, S, T, cfg).eval()


@pytest.mark.parametrize(
    "head_hidden,wide_bins,bins_churn",
    [
        (0, 0, True),
        (16, 0, True),
        (0, 4, True),
        (16, 4, True),
        (0, 4, False),
        (0, 4, "static"),
        (16, 4, "static"),
    ],
)
@pytest.mark.parametrize("window_stats", [False, True])
def test_wide_heads_shapes_and_mask_invariance(head_hidden, wide_bins, bins_churn, window_stats):
    model = make_wide(head_hidden, wide_bins, bins_churn, window_stats)
    n_binned = 7 * M + 1 + S  # the window stats get no bins
    n_wide = n_binned + (6 * M + 1 if window_stats else 0)
    if wide_bins:
        model.set_bins(torch.linspace(-2, 2, wide_bins + 1).repeat(n_binned, 1))
    usage, mask, static = inputs()
    out = model(usage, mask, static)
    assert out["churn_logit"].shape == (B,) and out["migration_logits"].shape == (B, N_MIGRATION)
    assert model.wide_inputs(usage, mask, static).shape == (B, n_wide)
    noisy = usage.clone()
    noisy[~mask] = 1e4  # values in absent periods change nothing, on the wide path too
    again = model(noisy, mask, static)
    for key in out:
        torch.testing.assert_close(again[key], out[key])


def test_wide_head_reads_static_directly():
    """With wide heads the churn logit depends on a static attribute even through a zeroed
    embedding path: the wide term is a real input, not a relabelled embedding."""
    model = make_wide(0, 0)
    with torch.no_grad():
        for p in model.to_embedding.parameters():
            p.zero_()
    usage, mask, static = inputs()
    moved = static.clone()
    moved[:, 0] += 1.0
    a, b = model(usage, mask, static), model(usage, mask, moved)
    assert not torch.allclose(a["churn_logit"], b["churn_logit"])
    torch.testing.assert_close(a["embedding"], b["embedding"])


def test_static_log_scales_static_before_standardising():
    """With static_log the static attributes (tenure, weeks to contract end, possibly negative)
    enter as sign(x) log1p(|x|), standardised by the buffers; without it, raw and standardised."""
    static = torch.tensor([[0.0, -3.0, 120.0], [1.0, 2.0, 6.0]])  # (2, 3)
    mean, std = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([2.0, 0.5, 4.0])
    for log in (False, True):
        model = SubscriberModel(M, 3, T, ModelConfig(static_log=log))
        model.set_normalization(torch.zeros(M), torch.ones(M), mean, std)
        x = static.sign() * torch.log1p(static.abs()) if log else static
        torch.testing.assert_close(model.scale_static(static), (x - mean) / std)
    usage, mask, _ = inputs()
    out = model(usage, mask, static.repeat(B // 2, 1))  # the whole model runs on it
    assert torch.isfinite(out["churn_logit"]).all()


def test_last_level_periods_adds_the_last_k_periods_level():
    """last_level_periods = k appends, per metric, log1p of the mean raw value over the present
    periods among the last k, standardised like the usage; the other aggregates are unchanged."""
    k = 4
    base = make_wide(0, 0)
    cfg = dataclasses.replace(base.cfg, last_level_periods=k)
    model = SubscriberModel(M, S, T, cfg).eval()
    mean, std = torch.full((M,), 1.0), torch.full((M,), 2.0)
    for m_ in (base, model):
        m_.set_normalization(mean, std, torch.zeros(S), torch.ones(S))
    usage, mask, static = inputs()
    x = model.normalize(usage, mask)
    plain, extended = base.window_summary(x, mask, usage), model.window_summary(x, mask, usage)
    assert model.n_summary == 8 * M + 1 and extended.shape == (B, 8 * M + 1)
    torch.testing.assert_close(extended[:, : 7 * M], plain[:, : 7 * M])
    torch.testing.assert_close(extended[:, -1], plain[:, -1])  # the share of present periods
    m = mask[:, -k:].float().unsqueeze(-1)  # (B, k, 1)
    level = torch.log1p((usage[:, -k:] * m).sum(1) / m.sum(1).clamp_min(1))  # (B, M)
    torch.testing.assert_close(extended[:, 7 * M : 8 * M], (level - mean) / std)
    out = model(usage, mask, static)
    assert model.wide_inputs(usage, mask, static).shape == (B, 8 * M + 1 + S)
    assert out["migration_logits"].shape == (B, N_MIGRATION)


def test_piecewise_linear_encoding():
    model = make_wide(0, 4)
    n_wide = 7 * M + 1 + S
    edges = torch.tensor([0.0, 1.0, 2.0, 2.0, 4.0]).repeat(n_wide, 1)  # a zero-width bin
    model.set_bins(edges)
    w = torch.tensor([-1.0, 0.5, 2.0, 3.0, 9.0]).unsqueeze(1).repeat(1, n_wide)  # (5, F)
    z = model.piecewise_linear(w).view(5, n_wide, 4)[:, 0]  # first feature, (5, K)
    expected = torch.tensor(
        [
            [0.0, 0.0, 0.0, 0.0],  # below every bin
            [0.5, 0.0, 0.0, 0.0],  # halfway through the first
            [1.0, 1.0, 0.0, 0.0],  # at the zero-width bin's edge: not past it
            [1.0, 1.0, 1.0, 0.5],  # past the step, halfway through the last bin
            [1.0, 1.0, 1.0, 1.0],  # above every bin
        ]
    )
    torch.testing.assert_close(z, expected)


def test_window_stats_in_the_wide_path():
    """wide_window_stats puts the baselines' features, signed log1p and standardised by the
    buffers, between the model's own aggregates and the static attributes."""
    model = make_wide(0, 0, window_stats=True)
    model.set_normalization(
        torch.full((M,), 1.0), torch.full((M,), 2.0), torch.zeros(S), torch.ones(S)
    )
    mean, std = torch.linspace(0, 1, 6 * M + 1), torch.linspace(1, 2, 6 * M + 1)
    model.set_stats_scale(mean, std)
    usage, mask, static = inputs()
    wide = model.wide_inputs(usage, mask, static)
    raw = window_stats(usage, mask)
    expected = (raw.sign() * torch.log1p(raw.abs()) - mean) / std
    torch.testing.assert_close(wide[:, 7 * M + 1 : 7 * M + 1 + 6 * M + 1], expected)
    torch.testing.assert_close(wide[:, -S:], static)  # static last, standardised (0, 1)


def test_window_stats_by_hand():
    """One subscriber, one metric, periods 1..3 present of T = 4: every statistic by hand."""
    usage = torch.tensor([[[9.0], [2.0], [4.0], [6.0]]], dtype=torch.float64)  # (1, 4, 1)
    mask = torch.tensor([[False, True, True, True]])
    mean, last, last_q, slope, drop, std, share = window_stats(usage, mask)[0].tolist()
    assert mean == pytest.approx(4.0) and last == pytest.approx(6.0)
    assert last_q == pytest.approx(6.0)  # ceil(4 / 4) = 1 period
    assert slope == pytest.approx(2.0) and std == pytest.approx((8 / 3) ** 0.5)
    assert drop == pytest.approx(
        torch.log1p(torch.tensor(2.0)).item() - torch.log1p(torch.tensor(6.0)).item()
    )
    assert share == pytest.approx(0.75)
    none = window_stats(usage, torch.zeros(1, 4, dtype=torch.bool))
    assert torch.equal(none, torch.zeros_like(none))  # no present period: zeros


def test_churn_head_reads_only_static_bins():
    """wide_bins_churn="static": the churn head reads the embedding, the wide features and the
    static attributes' bins, not the other features' bins."""
    wide_bins = 4
    model = make_wide(0, wide_bins, "static")
    n_wide = 7 * M + 1 + S
    assert model.churn_head.linear.in_features == 8 + n_wide + S * wide_bins
    model.set_bins(torch.linspace(-2, 2, wide_bins + 1).repeat(n_wide, 1))
    usage, mask, static = inputs()
    z, wide = model._encode(usage, mask, static)
    h = torch.cat([z, wide], dim=-1)
    expected = model.churn_head(torch.cat([h[:, : 8 + n_wide], h[:, -S * wide_bins :]], dim=-1))
    torch.testing.assert_close(model(usage, mask, static)["churn_logit"], expected.squeeze(-1))
