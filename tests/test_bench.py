"""gpuseg bench: manifests, the small profile on CPU, and the written reports."""

from __future__ import annotations

import json

import pytest
import yaml

from gpuseg.bench import BUILTIN_PROFILES, PROFILES_DIR, STAGES, load_manifest, run_bench
from gpuseg.errors import ConfigError


def test_shipped_yaml_profiles_match_builtins():
    for name, builtin in BUILTIN_PROFILES.items():
        data = yaml.safe_load((PROFILES_DIR / f"{name}.yaml").read_text())
        assert data == builtin
        m = load_manifest(name)
        assert m.name == name


def test_unknown_manifest_key_raises_config_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("sizes: [100]\nrepeatz: 3\n")
    with pytest.raises(ConfigError, match="repeatz"):
        load_manifest(path)
    with pytest.raises(ConfigError, match="repeatz"):
        run_bench(path, tmp_path / "out")


def test_bad_manifest_values(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("stages: [prepare, fly]\n")
    with pytest.raises(ConfigError, match="fly"):
        load_manifest(path)
    with pytest.raises(ConfigError, match="no such file"):
        load_manifest(tmp_path / "missing.yaml")


def test_small_profile_on_cpu(tmp_path):
    import torch

    record = run_bench("small", tmp_path)
    assert (tmp_path / "bench.json").is_file() and (tmp_path / "bench.md").is_file()
    on_disk = json.loads((tmp_path / "bench.json").read_text())
    assert on_disk["meta"]["manifest"]["sizes"] == [2000, 10000]
    assert on_disk["meta"]["environment"]["torch"]
    results = record["results"]
    cpu = {(r["size"], r["stage"]): r for r in results if r["kind"] == "cpu"}
    assert set(cpu) == {(s, st) for s in (2000, 10000) for st in STAGES}
    for r in cpu.values():
        assert r["status"] == "ok"
        assert len(r["seconds_all"]) == 2
        assert r["seconds"] == pytest.approx(sum(r["seconds_all"]) / 2)  # the median of two
        assert r["subscribers_per_s"] == pytest.approx(r["items"] / r["seconds"])
        assert r["rss_peak_mb"] >= r["rss_start_mb"] > 50  # python, torch and numpy are resident
    for (_, st), r in cpu.items():
        if st == "train_epoch":
            flops = 3 * r["forward_flops_per_subscriber"] * r["items"] / r["seconds"]
            assert r["achieved_flops_per_s"] == pytest.approx(flops)
            assert r["forward_flops_per_subscriber"] > 1000  # a GRU of hidden 64 over 13 periods
    cuda = [r for r in results if r["kind"] == "cuda"]
    if not torch.cuda.is_available():
        assert len(cuda) == 2 * len(STAGES)
        assert all(r["status"] == "skipped" and r["reason"] for r in cuda)
    md = (tmp_path / "bench.md").read_text()
    for stage in STAGES:
        assert f"## {stage}" in md
    assert "GPU/CPU throughput" in md
    if not torch.cuda.is_available():
        assert "n/a" in md and "## Skipped" in md


def test_bench_times_the_step_train_runs(tmp_path, tiny_panel, monkeypatch):
    """``gpuseg train`` and ``gpuseg bench``'s train_epoch go through the same
    :func:`gpuseg.training.step.train_step` (the real one, wrapped to count its calls), with
    the fitted pos_weight, migration class weights and a scheduler."""
    import math

    import numpy as np
    import torch

    from gpuseg import bench
    from gpuseg.backend import resolve_backend
    from gpuseg.config import ModelConfig, TrainConfig
    from gpuseg.training import step
    from gpuseg.training.loop import train_model

    real = step.train_step
    calls: list[tuple] = []

    def spy(net, model, batch, losses, opt, sched, amp):
        calls.append((len(batch["usage"]), losses, sched))
        return real(net, model, batch, losses, opt, sched, amp)

    monkeypatch.setattr(step, "train_step", spy)

    cfg = TrainConfig(epochs=1, batch_size=256, patience=5)
    result = train_model(
        tiny_panel, ModelConfig(hidden_size=8, embedding_dim=8), cfg, torch.device("cpu")
    )
    n_train = result.metrics["sizes"]["train"]
    assert len(calls) == math.ceil(n_train / 256)
    assert sum(c[0] for c in calls) == n_train
    train_losses = calls[0][1]
    assert train_losses.pos_weight == pytest.approx(result.metrics["pos_weight"])
    assert train_losses.pos_weight != 1.0
    assert all(c[2] is not None for c in calls)

    calls.clear()
    m = bench.manifest_from_dict(dict(sizes=[300], periods=8, batch_size=64, hidden_size=8))
    world = bench._world(300, m, tmp_path)
    run = bench._Run(300, "cpu", resolve_backend("cpu"), world, m, tmp_path)
    fn, n_items, _ = run.run_stage("train_epoch")
    fn()
    labelled = int((np.asarray(run.panel.churn) >= 0).sum())
    assert len(calls) == math.ceil(labelled / 64)
    assert sum(c[0] for c in calls) == labelled
    bench_losses = calls[0][1]
    churn = np.asarray(run.panel.churn)
    pos = churn[churn >= 0].mean()
    assert bench_losses.pos_weight == pytest.approx(math.sqrt((1 - pos) / pos))
    assert not torch.allclose(bench_losses.migration_class_weight, torch.ones(3))
    assert all(isinstance(c[2], torch.optim.lr_scheduler.OneCycleLR) for c in calls)
