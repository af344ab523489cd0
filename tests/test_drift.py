"""Drift between two scoring runs: PSI with known shifts, transition matrix, files and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from gpuseg.cli import app
from gpuseg.errors import ConfigError, DataError
from gpuseg.evaluate.drift import category_psi, drift, drift_runs, psi, reading, transition_matrix


def scores(n: int = 5000, seed: int = 0, shift: float = 0.0, seg_p=None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-(rng.normal(-1.5, 1.0, n) + shift)))
    mig = rng.dirichlet([1, 6, 1], n)
    return pd.DataFrame(
        {
            "subscriber_id": [f"S{i:06d}" for i in range(n)],
            "churn_prob": p,
            "migration_down": mig[:, 0],
            "migration_stay": mig[:, 1],
            "migration_up": mig[:, 2],
            "segment": rng.choice(4, size=n, p=seg_p or [0.4, 0.3, 0.2, 0.1]),
        }
    )


def test_psi_is_zero_for_identical_and_large_for_shifted():
    a = scores()
    assert psi(a["churn_prob"], a["churn_prob"])["psi"] == pytest.approx(0.0, abs=1e-12)
    same_dist = psi(a["churn_prob"], scores(seed=1)["churn_prob"])
    assert same_dist["psi"] < 0.02 and same_dist["reading"] == "stable"
    moved = psi(a["churn_prob"], scores(seed=1, shift=1.0)["churn_prob"])
    assert moved["psi"] > 0.25 and moved["reading"] == "major"
    assert len(moved["old"]) == len(moved["new"]) == 10
    assert sum(moved["old"]) == pytest.approx(1) and sum(moved["new"]) == pytest.approx(1)


def test_psi_by_hand():
    # old uniform over 4 bins, new puts half in the top bin
    old = np.repeat([0.5, 1.5, 2.5, 3.5], 25)
    new = np.concatenate([np.full(17, 0.5), np.full(17, 1.5), np.full(16, 2.5), np.full(50, 3.5)])
    got = psi(old, new, bins=4)["psi"]
    o = np.array([0.25] * 4)
    n = np.array([0.17, 0.17, 0.16, 0.5])
    assert got == pytest.approx(float(((n - o) * np.log(n / o)).sum()))


def test_segment_share_psi_and_reading():
    a = scores()["segment"]
    assert category_psi(a, a)["psi"] == pytest.approx(0.0, abs=1e-12)
    moved = category_psi(a, scores(seed=1, seg_p=[0.1, 0.2, 0.3, 0.4])["segment"])
    assert moved["psi"] > 0.25
    new_seg = category_psi(np.array([0, 0, 1, 1]), np.array([0, 1, 2, 2]))
    assert new_seg["categories"] == [0, 1, 2] and new_seg["old"][2] == 0
    assert [reading(v) for v in (0.05, 0.1, 0.2, 0.25, 0.3)] == [
        "stable",
        "moderate",
        "moderate",
        "moderate",
        "major",
    ]


def test_transition_matrix_counts_and_shares():
    old = pd.DataFrame({"id": ["a", "b", "c", "d", "e"], "segment": [0, 0, 1, 1, 1]})
    new = pd.DataFrame({"id": ["a", "b", "c", "d", "f"], "segment": [0, 1, 1, 2, 0]})
    counts, shares, both = transition_matrix(old, new, "id")
    assert both == 4  # e left, f is new
    assert counts.loc[0].tolist() == [1, 1, 0] and counts.loc[1].tolist() == [0, 1, 1]
    np.testing.assert_allclose(shares.loc[0].to_numpy(), [0.5, 0.5, 0.0])
    result = drift(old.assign(churn_prob=0.1), new.assign(churn_prob=0.1), id_column="id")
    assert result["transition"]["stayed"] == pytest.approx(2 / 4)


def test_drift_result_and_files(tmp_path: Path):
    a = scores()
    b = scores(seed=1, shift=1.0)
    b.loc[:999, "segment"] = (b.loc[:999, "segment"] + 1) % 4
    a.to_parquet(tmp_path / "old.parquet")
    b.to_parquet(tmp_path / "new.parquet")
    r = drift_runs(tmp_path / "old.parquet", tmp_path / "new.parquet", tmp_path / "out")
    assert set(r["features"]) == {"churn_prob", "migration_down", "migration_stay", "migration_up"}
    assert r["features"]["churn_prob"]["psi"] > 0.25 and r["verdict"].startswith("major")
    assert r["subscribers"] == {"old": 5000, "new": 5000, "both": 5000}
    assert np.sum(r["transition"]["counts"]) == 5000
    saved = json.loads((tmp_path / "out" / "drift.json").read_text())
    assert saved["max_psi"] == pytest.approx(r["max_psi"])
    md = (tmp_path / "out" / "drift.md").read_text()
    assert "Segment transitions" in md and "churn_prob" in md
    same = drift(a, a)
    assert same["max_psi"] == pytest.approx(0.0, abs=1e-12) and same["verdict"].startswith("stable")
    assert same["transition"]["stayed"] == 1.0


def test_drift_with_usage_panels(tmp_path: Path, tiny_panel_dir: Path):
    ids = pd.read_parquet(tiny_panel_dir / "index.parquet").iloc[:, 0]
    s = scores(len(ids))
    s["subscriber_id"] = ids.to_numpy()
    r = drift_runs(s, s, tmp_path, old_panel=tiny_panel_dir, new_panel=tiny_panel_dir)
    assert "revenue" in r["metrics"] and r["metrics"]["revenue"]["psi"] == pytest.approx(
        0, abs=1e-9
    )
    with pytest.raises(ConfigError, match="both panels"):
        drift_runs(s, s, tmp_path, old_panel=tiny_panel_dir)


def test_errors(tmp_path: Path):
    a = scores(100)
    with pytest.raises(DataError, match="no 'segment'"):
        drift(a.drop(columns="segment"), a)
    with pytest.raises(DataError, match="duplicate"):
        drift(pd.concat([a, a.iloc[:1]]), a)
    with pytest.raises(DataError, match="not found"):
        drift(tmp_path / "missing.parquet", a)
    with pytest.raises(ConfigError, match="bins"):
        psi(a["churn_prob"], a["churn_prob"], bins=1)


def test_cli_drift(tmp_path: Path):
    scores().to_parquet(tmp_path / "old.parquet")
    scores(seed=1).to_parquet(tmp_path / "new.parquet")
    r = CliRunner().invoke(
        app, ["drift", str(tmp_path / "old.parquet"), str(tmp_path / "new.parquet"), "-o",
              str(tmp_path / "d")],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "segment share PSI" in r.output and (tmp_path / "d" / "drift.md").is_file()
    bad = CliRunner().invoke(app, ["drift", str(tmp_path / "nope.parquet"), str(tmp_path / "x")])
    assert bad.exit_code == 1 and "not found" in bad.output


def test_verdict_weighs_the_transition_matrix():
    """Segment shares unchanged (PSI 0) while most subscribers changed segment: not stable."""
    rng = np.random.default_rng(0)
    n = 4000
    old = pd.DataFrame({"id": [f"s{i}" for i in range(n)], "segment": np.arange(n) % 4})
    old["churn_prob"] = rng.random(n)
    new = old.copy()
    moved = rng.random(n) < 0.82  # 18 % keep their segment, shares stay the same
    new.loc[moved, "segment"] = (new.loc[moved, "segment"] + 1) % 4
    new.loc[~moved, "segment"] = new.loc[~moved, "segment"]
    r = drift(old, new, id_column="id")
    assert r["segments"]["psi"] < 0.01 and r["max_psi"] < 0.1
    assert r["transition"]["stayed"] < 0.2
    assert r["verdict"].startswith("major shift") and "kept their segment" in r["verdict"]
    some = new.copy()
    back = rng.random(n) < 0.85
    some.loc[back, "segment"] = old.loc[back, "segment"]  # about 88 % kept theirs
    r = drift(old, some, id_column="id")
    assert 0.7 <= r["transition"]["stayed"] < 0.9
    assert r["verdict"].startswith("moderate shift")
