"""Training on the tiny world: learns, splits cleanly, is deterministic, checkpoints round-trip
without pickle."""

from __future__ import annotations

import json
import math
import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch

from gpuseg.config import ModelConfig, TrainConfig
from gpuseg.data.panel import Panel
from gpuseg.data.split import Split, split_subscribers
from gpuseg.errors import DataError, RunDirError, TrainingError
from gpuseg.features.aggregates import window_features
from gpuseg.features.fitting import fit_normalization
from gpuseg.io.store import check_json
from gpuseg.training.calibration import calibrated
from gpuseg.training.checkpoint import (
    METRICS_SCHEMA,
    EpochCheckpoint,
    load_checkpoint,
    save_checkpoint,
)
from gpuseg.training.loop import predict, to_device, train_model

CPU = torch.device("cpu")
MODEL = ModelConfig(encoder="gru", hidden_size=16, embedding_dim=8, static_hidden=8)
TRAIN = TrainConfig(epochs=2, batch_size=64, lr=1e-2, seed=0)


@pytest.fixture(scope="module")
def trained(tiny_panel: Panel):
    return train_model(tiny_panel, MODEL, TRAIN, CPU)


def numeric_leaves(tree, prefix=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from numeric_leaves(v, f"{prefix}{k}.")
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from numeric_leaves(v, f"{prefix}{i}.")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield prefix, float(tree)


def test_two_epochs_learn(trained):
    m = trained.metrics
    assert m["epochs_run"] == 2 and len(trained.history) == 2
    assert m["churn"]["roc_auc"] > 0.6
    assert m["val_auc"] > 0.6
    assert 0 <= m["churn"]["brier"] < 0.25
    assert m["best_epoch"] in (1, 2)
    assert all(math.isfinite(h["loss"]) for h in trained.history)
    assert m["migration"]["confusion"] and len(m["migration"]["confusion"]) == 3


def test_split_disjoint_and_covering(trained, tiny_panel):
    split = trained.split
    parts = [set(split.train.tolist()), set(split.val.tolist()), set(split.test.tolist())]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    labelled = set(np.flatnonzero(np.asarray(tiny_panel.churn) >= 0).tolist())
    assert parts[0] | parts[1] | parts[2] == labelled
    sizes = trained.metrics["sizes"]
    assert (sizes["train"], sizes["val"], sizes["test"]) == tuple(len(p) for p in parts)
    assert sizes["val"] == round(0.15 * len(labelled)) == sizes["test"]


def test_split_uses_only_labelled_rows(tiny_panel):
    """Unlabelled subscribers (churn -1) are in no split part."""
    churn = np.asarray(tiny_panel.churn).copy()
    churn[::3] = -1
    panel = Panel(
        tiny_panel.usage,
        tiny_panel.mask,
        tiny_panel.static,
        churn,
        tiny_panel.migration,
        tiny_panel.ids,
        tiny_panel.meta,
    )
    res = train_model(panel, MODEL, TrainConfig(epochs=1, batch_size=128, seed=1), CPU)
    used = np.concatenate([res.split.train, res.split.val, res.split.test])
    assert sorted(used.tolist()) == np.flatnonzero(churn >= 0).tolist()


def test_checkpoint_round_trip(trained, tiny_panel, tmp_path):
    save_checkpoint(trained, tiny_panel.meta, MODEL, tmp_path)
    for name in ("model.safetensors", "model.json", "split.npz", "metrics.json"):
        assert (tmp_path / name).is_file()
    model, info = load_checkpoint(tmp_path, CPU)
    assert info["platt"] == list(trained.platt) and info["metrics"] == tiny_panel.metrics
    data = to_device(tiny_panel, CPU)
    before = predict(trained.model, data, None, 256)
    after = predict(model, data, None, 256)
    for key in before:
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0)
    split = np.load(tmp_path / "split.npz")
    np.testing.assert_array_equal(split["test"], trained.split.test)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["churn"]["roc_auc"] == pytest.approx(trained.metrics["churn"]["roc_auc"])
    assert len(metrics["history"]) == 2


def test_same_seed_same_metrics(trained, tiny_panel):
    again = train_model(tiny_panel, MODEL, TRAIN, CPU)
    a, b = dict(numeric_leaves(trained.metrics)), dict(numeric_leaves(again.metrics))
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=1e-6, nan_ok=True), key
    for h1, h2 in zip(trained.history, again.history, strict=True):
        assert h1["loss"] == pytest.approx(h2["loss"], abs=1e-6)
    np.testing.assert_array_equal(trained.split.test, again.split.test)


def test_other_seed_other_split(trained, tiny_panel):
    other = train_model(tiny_panel, MODEL, TrainConfig(epochs=1, batch_size=128, seed=5), CPU)
    assert not np.array_equal(other.split.test, trained.split.test)


class _Payload:
    """Unpickling this runs ``open(marker, 'w')``: it would create the marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_load_checkpoint_refuses_pickle(trained, tiny_panel, tmp_path):
    save_checkpoint(trained, tiny_panel.meta, MODEL, tmp_path)
    # the payload is live: plain unpickling does create its marker
    probe = tmp_path / "probe_marker"
    pickle.loads(pickle.dumps(_Payload(str(probe))))
    assert probe.exists()

    marker = tmp_path / "pwned_marker"
    torch.save({"weights": _Payload(str(marker))}, tmp_path / "model.safetensors")
    with pytest.raises(RunDirError) as info:
        load_checkpoint(tmp_path, CPU)
    assert "model.safetensors" in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()

    # a raw pickle (not torch's zip container) is refused the same way
    (tmp_path / "model.safetensors").write_bytes(pickle.dumps({"w": _Payload(str(marker))}))
    with pytest.raises(RunDirError):
        load_checkpoint(tmp_path, CPU)
    assert not marker.exists()


def test_load_checkpoint_errors(trained, tiny_panel, tmp_path):
    with pytest.raises(RunDirError, match="model.json"):
        load_checkpoint(tmp_path, CPU)
    save_checkpoint(trained, tiny_panel.meta, MODEL, tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(RunDirError, match="model.safetensors"):
        load_checkpoint(tmp_path, CPU)
    save_checkpoint(trained, tiny_panel.meta, MODEL, tmp_path)
    info = json.loads((tmp_path / "model.json").read_text())
    info["model"]["hidden_size"] = 32  # weights no longer match
    (tmp_path / "model.json").write_text(json.dumps(info))
    with pytest.raises(RunDirError, match="do not match"):
        load_checkpoint(tmp_path, CPU)
    del info["n_metrics"]
    (tmp_path / "model.json").write_text(json.dumps(info))
    with pytest.raises(RunDirError, match="no 'n_metrics' entry"):
        load_checkpoint(tmp_path, CPU)


def test_split_subscribers():
    s = split_subscribers(100, 0.2, 0.1, seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (70, 20, 10)
    assert sorted(np.concatenate([s.train, s.val, s.test]).tolist()) == list(range(100))
    np.testing.assert_array_equal(split_subscribers(100, 0.2, 0.1, seed=0).val, s.val)
    for val, test in ((0.0, 0.1), (0.5, 0.5), (0.2, 1.2)):
        with pytest.raises(DataError, match="val_frac"):
            split_subscribers(100, val, test, seed=0)


def test_needs_labels(tiny_panel):
    churn = np.full(len(tiny_panel), -1, dtype=np.int8)
    churn[:10] = 1
    panel = Panel(
        tiny_panel.usage,
        tiny_panel.mask,
        tiny_panel.static,
        churn,
        tiny_panel.migration,
        tiny_panel.ids,
        tiny_panel.meta,
    )
    with pytest.raises(DataError, match="labelled"):
        train_model(panel, MODEL, TRAIN, CPU)
    churn[:] = 0  # one class only
    with pytest.raises(DataError, match="one churn class"):
        train_model(panel, MODEL, TRAIN, CPU)
    rows = np.arange(len(churn))
    churn[::2] = 1  # both classes in training, churners only in validation: a clear error,
    split = Split(rows[40:], rows[0:40:2], rows[1:40:2])  # not ROC-AUC's internal one
    with pytest.raises(DataError, match="validation split .* one churn class.*val_frac"):
        train_model(panel, MODEL, TRAIN, CPU, split=split)


def test_fit_normalization_uses_present_periods_of_given_rows(tiny_panel):
    rows = np.arange(0, 300)
    stats = fit_normalization(tiny_panel, rows)
    x = np.log1p(np.asarray(tiny_panel.usage[rows], dtype=np.float64))
    present = np.asarray(tiny_panel.mask[rows])
    np.testing.assert_allclose(stats["usage_mean"], x[present].mean(0), rtol=1e-9)
    np.testing.assert_allclose(stats["usage_std"], x[present].std(0) + 1e-3, rtol=1e-6)
    static = np.asarray(tiny_panel.static[rows], dtype=np.float64)
    np.testing.assert_allclose(stats["static_mean"], static.mean(0), rtol=1e-9, atol=1e-12)
    logged = fit_normalization(tiny_panel, rows, static_log=True)  # statistics of sign * log1p
    slog = np.sign(static) * np.log1p(np.abs(static))
    np.testing.assert_allclose(logged["static_mean"], slog.mean(0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(logged["static_std"], slog.std(0) + 1e-3, rtol=1e-6)
    np.testing.assert_array_equal(logged["usage_mean"], stats["usage_mean"])


def test_calibrated_is_monotonic():
    logits = np.linspace(-5, 5, 11)
    p = calibrated(logits, (0.5, -1.0))
    assert (np.diff(p) > 0).all() and ((p > 0) & (p < 1)).all()
    assert p[5] == pytest.approx(1 / (1 + math.e))


def test_wide_bins_fitted_on_training_rows(tiny_panel, tmp_path):
    """The piecewise-linear bin edges are the quantiles of the wide features of training rows
    (validation and test rows do not move them), so is the scale of the baselines' window
    aggregates, and a wide model with log-scaled static attributes, the window aggregates and
    static bins on the churn head trains and round-trips."""
    cfg = ModelConfig(
        encoder="gru",
        hidden_size=16,
        embedding_dim=8,
        static_hidden=8,
        wide_heads=True,
        head_hidden=8,
        wide_bins=4,
        static_log=True,
        wide_window_stats=True,
        wide_bins_churn="static",
    )
    res = train_model(tiny_panel, cfg, TrainConfig(epochs=1, batch_size=64, seed=0), CPU)
    r = np.sort(res.split.train)
    stats = window_features(tiny_panel, r)[:, : 6 * tiny_panel.usage.shape[2] + 1]
    slog = np.sign(stats.astype(np.float64)) * np.log1p(np.abs(stats.astype(np.float64)))
    np.testing.assert_allclose(res.model.stats_mean.numpy(), slog.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.model.stats_std.numpy(), slog.std(0) + 1e-3, rtol=1e-5)
    w = res.model.binned_inputs(
        res.model.wide_inputs(
            torch.as_tensor(np.asarray(tiny_panel.usage[r], dtype=np.float32)),
            torch.as_tensor(np.asarray(tiny_panel.mask[r], dtype=np.float32)),
            torch.as_tensor(np.asarray(tiny_panel.static[r], dtype=np.float32)),
        )
    ).numpy()
    expected = np.quantile(w.astype(np.float64), np.linspace(0, 1, 5), axis=0).T
    np.testing.assert_allclose(res.model.bin_edges.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert math.isfinite(res.metrics["churn"]["roc_auc"])
    save_checkpoint(res, tiny_panel.meta, cfg, tmp_path)
    model, _ = load_checkpoint(tmp_path, CPU)
    data = to_device(tiny_panel, CPU)
    before, after = predict(res.model, data, None, 256), predict(model, data, None, 256)
    for key in before:
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0)


def test_select_by_churn_auc_plus_migration_f1(tiny_panel):
    """train.select=churn_auc+migration_f1 keeps the epoch with the best sum of validation churn
    AUC and migration macro-F1; each epoch's record carries both."""
    cfg = TrainConfig(
        epochs=3, batch_size=64, lr=1e-2, seed=0, patience=3, select="churn_auc+migration_f1"
    )
    res = train_model(tiny_panel, MODEL, cfg, CPU)
    scores = [r["val_auc"] + r["val_migration_f1"] for r in res.history]
    assert all(math.isfinite(s) for s in scores) and len(scores) == 3
    best = scores[res.metrics["best_epoch"] - 1]
    assert best >= max(scores) - 1e-4
    assert res.metrics["val_auc"] == res.history[res.metrics["best_epoch"] - 1]["val_auc"]


@pytest.mark.slow  # about 20 s: TorchDynamo traces the model (inductor would take minutes on CPU)
def test_train_compile_runs_the_compiled_forward(tiny_panel, monkeypatch):
    """``train.compile`` hands the forward to torch.compile (the real one, with its eager
    backend so the CPU test does not wait for a C++ build); the epoch then gives the same loss
    and validation AUC as without it."""
    real = torch.compile
    compiled = []

    def spy(model, **kw):
        compiled.append(model)
        return real(model, backend="eager", **kw)

    monkeypatch.setattr(torch, "compile", spy)
    cfg = ModelConfig(hidden_size=8, embedding_dim=8)
    plain = train_model(tiny_panel, cfg, TrainConfig(epochs=1), CPU)
    assert compiled == []
    with_compile = train_model(tiny_panel, cfg, TrainConfig(epochs=1, compile=True), CPU)
    assert len(compiled) == 1 and compiled[0] is with_compile.model
    assert with_compile.history[0]["loss"] == pytest.approx(plain.history[0]["loss"], rel=1e-5)
    assert with_compile.metrics["val_auc"] == pytest.approx(plain.metrics["val_auc"], abs=1e-6)


def test_metrics_schema_takes_churn_only_runs(tmp_path):
    """metrics.json of a run without migration labels holds macro_f1 null; a string is refused."""
    path = tmp_path / "metrics.json"
    churn = dict(roc_auc=0.8, pr_auc=0.5, top_decile_lift=2.0, brier=0.1)
    ok = dict(churn=churn, migration=dict(macro_f1=None, labels="no labels"), history=[])
    assert check_json(path, ok, METRICS_SCHEMA) is ok
    bad = dict(ok, migration=dict(macro_f1="0.5"))
    with pytest.raises(RunDirError, match="migration.macro_f1"):
        check_json(path, bad, METRICS_SCHEMA)


def test_a_diverging_run_is_a_training_error_not_a_crash(tiny_panel):
    """A learning rate far too high: the loss turns NaN in the first epoch, and training stops
    with one line saying so (was: AttributeError from the checkpoint of no best state)."""
    with pytest.raises(TrainingError, match="diverged.*train.lr"):
        train_model(tiny_panel, MODEL, replace(TRAIN, lr=1e6), CPU)


def test_a_kill_between_the_checkpoint_writes_resumes_one_consistent_epoch(tmp_path, monkeypatch):
    """The epoch's tensors are written before its state.json: a kill between the two must leave
    the previous epoch's JSON *and* tensors (the new tensors went to state.safetensors over the
    old ones, so the resume mixed two epochs and test_resume failed now and then)."""
    import gpuseg.training.checkpoint as ckpt_mod

    model = torch.nn.Linear(3, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)
    gen = torch.Generator().manual_seed(0)
    ckpt = EpochCheckpoint(tmp_path / "checkpoint")
    state = lambda: {k: v.clone() for k, v in model.state_dict().items()}  # noqa: E731
    ckpt.save(model, state(), opt, sched, gen, dict(epoch=2))
    at_epoch_2 = state()
    with torch.no_grad():
        model.weight += 1.0  # epoch 3 trained on

    def killed(*_args, **_kw):
        raise KeyboardInterrupt("killed after the tensors, before state.json")

    monkeypatch.setattr(ckpt_mod, "write_json_atomic", killed)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save(model, state(), opt, sched, gen, dict(epoch=3))
    monkeypatch.undo()
    assert ckpt.exists()
    _, scalars = ckpt.load(model, opt, sched, gen)
    assert scalars["epoch"] == 2
    torch.testing.assert_close(model.state_dict()["weight"], at_epoch_2["weight"])
    ckpt.save(model, state(), opt, sched, gen, dict(epoch=3))  # the next save tidies up
    assert sorted(p.name for p in ckpt.dir.glob("*.safetensors")) == ["state.3.safetensors"]
    meta = json.loads((ckpt.dir / "state.json").read_text())
    (ckpt.dir / "state.json").write_text(json.dumps(meta | dict(tensors="../model.safetensors")))
    with pytest.raises(RunDirError, match="'tensors' is not a checkpoint file name"):
        ckpt.exists()
