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
        assert r["seconds"] > 0 and r["subscribers_per_s"] > 0
        assert len(r["seconds_all"]) == 2
        assert r["rss_peak_mb"] > 0
    assert all(r["achieved_flops_per_s"] > 0 for (_, st), r in cpu.items() if st == "train_epoch")
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
