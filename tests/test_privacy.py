"""Privacy (issue 6): keyed-hash pseudonyms, the key never written, no IDs in logs or reports,
consent honoured in target lists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gpuseg.cli import app
from gpuseg.config import DataConfig, load_config
from gpuseg.data.privacy import pseudonymize, pseudonymize_ids, read_key
from gpuseg.errors import ConfigError, DataError
from gpuseg.segment.targets import select_targets

KEY = "k3y-for-tests-0123456789-abcdef"  # what the operator keeps secret
ENV = "GPUSEG_TEST_ID_KEY"
runner = CliRunner()


def test_pseudonyms_are_keyed_hex_hmac():
    ids = ["S00000001", "S00000002", "Zoë"]
    a = pseudonymize(ids, KEY.encode())
    assert all(len(p) == 64 and int(p, 16) >= 0 for p in a)
    assert len(set(a)) == 3
    assert pseudonymize(ids, KEY.encode()).tolist() == a.tolist()  # deterministic
    assert not set(pseudonymize(ids, b"another-key-0123456789")) & set(a)  # keyed
    assert [p[:12] for p in a] == pseudonymize(ids, KEY.encode(), 12).tolist()
    import hashlib
    import hmac

    assert a[0] == hmac.new(KEY.encode(), b"S00000001", hashlib.sha256).hexdigest()


def test_disabled_leaves_ids_alone():
    ids = np.array(["b", "a"])
    assert pseudonymize_ids(ids, DataConfig()) is ids


def test_key_from_env_or_file(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV, KEY)
    assert read_key(DataConfig(pseudonymize=True, id_key_env=ENV)) == KEY.encode()
    f = tmp_path / "id.key"
    f.write_text("file-key-0123456789abcdef\n")  # the trailing newline is not part of the key
    key = read_key(DataConfig(pseudonymize=True, id_key_file=str(f)))
    assert key == b"file-key-0123456789abcdef"


def test_missing_or_short_key_is_a_config_error(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(ConfigError, match=f"environment variable {ENV} is not set"):
        read_key(DataConfig(pseudonymize=True, id_key_env=ENV))
    monkeypatch.setenv(ENV, "short")
    with pytest.raises(ConfigError) as info:
        read_key(DataConfig(pseudonymize=True, id_key_env=ENV))
    assert "shorter than 16 bytes" in str(info.value) and "short'" not in str(info.value)
    with pytest.raises(ConfigError, match="key file not found"):
        read_key(DataConfig(pseudonymize=True, id_key_file=str(tmp_path / "nope")))


def test_pseudonym_collision_is_refused(monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    cfg = DataConfig(pseudonymize=True, id_key_env=ENV, pseudonym_chars=1)
    with pytest.raises(DataError, match="share a pseudonym"):
        pseudonymize_ids([f"S{i}" for i in range(40)], cfg, "u.csv")  # 40 IDs, 16 pseudonyms
    with pytest.raises(ConfigError, match="data.pseudonym_chars"):
        pseudonymize_ids(["a"], DataConfig(pseudonymize=True, id_key_env=ENV, pseudonym_chars=65))


def test_missing_key_via_cli_is_one_line(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV, raising=False)
    usage = Path(__file__).parent / "corpus" / "usage_ok.csv"
    r = runner.invoke(
        app,
        ["prepare", "-s", f"out_dir={tmp_path}", "-s", f"data.usage={usage}", "--device", "cpu"]
        + ["-s", "data.pseudonymize=true", "-s", f"data.id_key_env={ENV}"],
    )
    assert r.exit_code == 1 and "Traceback" not in r.output
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert errors == [
        f"error: data.pseudonymize: environment variable {ENV} is not set"
        " (or give data.id_key_file)"
    ]


# ---------------------------------------------------------------------------------------------
# A whole pseudonymised run


@pytest.fixture(scope="module")
def private_run(tiny_world, tmp_path_factory):
    """prepare -> train -> embed -> cluster -> report -> targets -> score with pseudonyms on;
    returns (run dir, every CLI output joined, the scores path)."""
    torch.set_num_threads(1)
    mp = pytest.MonkeyPatch()
    mp.setenv(ENV, KEY)
    tmp = tmp_path_factory.mktemp("private")
    run_dir = tmp / "run"
    cfg = dict(
        out_dir=str(run_dir),
        device="cpu",
        data=dict(
            usage=str(tiny_world.usage),
            static=str(tiny_world.static),
            labels=str(tiny_world.labels),
            pseudonymize=True,
            id_key_env=ENV,
        ),
        model=dict(hidden_size=16, embedding_dim=8, static_hidden=8),
        train=dict(epochs=1, batch_size=256),
        cluster=dict(k=3, sample_size=800, n_init=1, stability_repeats=0),
        report=dict(map_sample=300),
    )
    config = tmp / "private.yaml"
    config.write_text(yaml.safe_dump(cfg))
    outputs = []
    for cmd in ("prepare", "train", "embed", "cluster", "report"):
        r = runner.invoke(app, [cmd, "-c", str(config)])
        assert r.exit_code == 0, (cmd, r.output)
        outputs.append(r.output)
    r = runner.invoke(app, ["targets", str(run_dir), "-o", str(run_dir / "targets.csv")])
    assert r.exit_code == 0, r.output
    outputs.append(r.output)
    scores = tmp / "scores" / "scores.parquet"
    r = runner.invoke(
        app,
        ["score", str(run_dir), "--usage", str(tiny_world.usage), "--static"]
        + [str(tiny_world.static), "-o", str(scores), "--device", "cpu"],
    )
    assert r.exit_code == 0, r.output
    outputs.append(r.output)
    yield run_dir, "\n".join(outputs), scores
    mp.undo()


def _strings_in_parquet(path: Path) -> set[str]:
    table = pq.read_table(path)
    out: set[str] = set()
    for col in table.columns:
        if str(col.type) in ("string", "large_string") or "dictionary" in str(col.type):
            out |= {str(v) for v in col.to_pylist() if v is not None}
    return out


def test_every_artifact_holds_pseudonyms_only(private_run, tiny_world):
    run_dir, _, scores = private_run
    raw = pd.read_parquet(tiny_world.usage)["subscriber_id"].astype(str).unique()
    pseudo = set(pseudonymize(raw, KEY.encode()))
    files = [p for p in [*run_dir.rglob("*"), *scores.parent.rglob("*")] if p.is_file()]
    assert len(files) > 20
    key = KEY.encode()
    sample_raw = [r.encode() for r in raw[:: max(1, len(raw) // 50)]]
    checked_ids = 0
    for f in files:
        data = f.read_bytes()
        assert key not in data, f  # the key is in no output file (config.yaml included)
        if f.suffix == ".parquet":
            strings = _strings_in_parquet(f)
            assert not strings & set(raw), f
            checked_ids += len(strings & pseudo)
        else:
            assert not any(r in data for r in sample_raw), f
    assert checked_ids > 0
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["data"]["id_key_env"] == ENV and saved["data"]["pseudonymize"] is True
    # the panel, its rejects and the scores carry pseudonyms of real subscribers
    index = pd.read_parquet(run_dir / "panel" / "index.parquet").iloc[:, 0]
    rejects = pd.read_csv(run_dir / "panel" / "rejects.csv").iloc[:, 0].astype(str)
    assert set(index) | set(rejects) <= pseudo
    assert index.is_monotonic_increasing
    assert set(pd.read_parquet(scores)["subscriber_id"]) == set(index)  # same key, same names


def test_logs_and_reports_hold_no_ids(private_run, tiny_world):
    """CLI output, the report's Markdown, HTML and JSON hold neither raw IDs nor pseudonyms."""
    run_dir, output, _ = private_run
    index = pd.read_parquet(run_dir / "panel" / "index.parquet").iloc[:, 0].tolist()
    raw = pd.read_parquet(tiny_world.usage)["subscriber_id"].astype(str).unique().tolist()
    texts = [output] + [
        p.read_text(errors="replace")
        for p in (run_dir / "report").rglob("*")
        if p.suffix in (".md", ".html", ".json", ".csv") and p.is_file()
    ]
    texts += [(run_dir / n).read_text() for n in ("metrics.json", "cluster.json", "model.json")]
    assert KEY not in output
    for text in texts:
        for sid in index[::25] + raw[::25]:
            assert sid not in text


def test_targets_honour_consent_and_reidentify_with_the_key(private_run, tiny_world):
    run_dir, _, _ = private_run
    targets = pd.read_csv(run_dir / "targets.csv")
    assert len(targets) > 0
    attrs = pd.read_parquet(run_dir / "panel" / "attributes.parquet").set_index("subscriber_id")
    picked = attrs.loc[targets["subscriber_id"]]
    assert picked["marketing_consent"].astype(bool).all()
    assert not picked["do_not_disturb"].astype(bool).any()
    # the operator re-identifies with its own list and the same key
    static = pd.read_parquet(tiny_world.static)
    hashed = pseudonymize(static["subscriber_id"], KEY.encode())
    names = dict(zip(hashed, static["subscriber_id"], strict=True))
    back = static.set_index("subscriber_id").loc[[names[p] for p in targets["subscriber_id"]]]
    assert back["marketing_consent"].astype(bool).all()
    assert not back["do_not_disturb"].astype(bool).any()
    meta = json.loads((run_dir / "panel" / "meta.json").read_text())
    assert meta["counts"]["input"] == meta["counts"]["output"] + meta["counts"]["rejected"]


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    segments=st.none() | st.lists(st.integers(0, 2), min_size=1, max_size=2),
    tags=st.none()
    | st.lists(st.sampled_from(["churn_warning", "vip", "loyal", "data_lover"]), min_size=1),
    all_tags=st.booleans(),
    min_risk=st.sampled_from([0.0, 0.2, 0.5]),
    top=st.none() | st.integers(1, 50),
)
def test_every_target_list_honours_consent(private_run, segments, tags, all_tags, min_risk, top):
    """Whatever the filters, no subscriber without consent or in do-not-disturb is a target."""
    run_dir = private_run[0]
    frame = select_targets(
        run_dir, segments=segments, tags=tags, tag_mode="all" if all_tags else "any",
        min_risk=min_risk, top=top,
    )  # fmt: skip
    attrs = pd.read_parquet(run_dir / "panel" / "attributes.parquet").set_index("subscriber_id")
    picked = attrs.loc[frame["subscriber_id"]]
    assert (picked["marketing_consent"].fillna(0) != 0).all()
    assert (picked["do_not_disturb"].fillna(1) == 0).all()
    c = frame.attrs["counts"]
    assert c["candidates"] == c["selected"] + c["excluded"] + c["below_min_risk"] + c["cut_by_top"]


@pytest.mark.parametrize("exc", [KeyError("S00000042"), ValueError("S00000042 " + "x" * 400)])
def test_internal_errors_do_not_echo_ids(exc):
    """An unexpected error's one line never repeats a KeyError's keys (often IDs), stays short."""
    import typer

    from gpuseg.cli import handle_errors

    tiny = typer.Typer()

    @tiny.command()
    @handle_errors
    def boom(debug: bool = False) -> None:
        raise exc

    r = runner.invoke(tiny, [])
    assert r.exit_code == 2 and "Traceback" not in r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) < 260, r.output
    assert ("S00000042" in lines[0]) == isinstance(exc, ValueError)


def test_truth_and_oracle_follow_the_pseudonyms(private_run, tiny_world):
    """On a synthetic world the truth is keyed by raw ids: the truth check and the evaluation's
    oracle hash them like the panel (with the key from the environment) instead of failing."""
    from gpuseg.pipeline.evaluate import evaluate_run
    from gpuseg.pipeline.stages import truth_check

    run_dir, _, _ = private_run
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV, KEY)
        data_cfg = load_config(run_dir / "config.yaml").data
        check = truth_check(run_dir, tiny_world.dir, data_cfg)
        assert 0.7 < check["oracle_auc_test"] <= 1.0 and check["segment_ari"] > 0.1  # not chance
        result = evaluate_run(
            run_dir, run_dir / "panel", tiny_world.truth, n_boot=10, baselines=["logistic"]
        )
    oracle = next(row for row in result["rows"] if row["model"] == "oracle")
    assert oracle["roc_auc"]["value"] == pytest.approx(check["oracle_auc_test"], abs=1e-9)


def test_one_permission_rule_the_umask(tmp_path):
    """Every file of a run, per-subscriber data and aggregate report alike, gets the mode the
    umask gives a new file: 0600 under umask 077, 0644 under 022 (README "Privacy")."""
    import os
    import stat

    from gpuseg.backend import resolve_backend
    from gpuseg.config import load_config
    from gpuseg.io.store import write_text_atomic
    from gpuseg.pipeline.stages import run_pipeline

    root = Path(__file__).resolve().parents[1]
    old = os.umask(0o077)
    try:
        cfg = load_config(
            root / "configs" / "tiny.yaml",
            [f"out_dir={tmp_path / 'run'}", "device=cpu", "train.epochs=1", "report.map_sample=0"],
        )
        run_pipeline(cfg, resolve_backend("cpu"))
        os.umask(0o022)
        write_text_atomic(tmp_path / "shared.txt", "aggregate")
    finally:
        os.umask(old)
    modes = {
        str(p.relative_to(tmp_path / "run")): stat.S_IMODE(p.stat().st_mode)
        for p in (tmp_path / "run").rglob("*")
        if p.is_file()
    }
    for name in ("panel/index.parquet", "predictions.parquet", "report/report.html"):
        assert name in modes
    assert {m for m in modes.values()} == {0o600}, {k: oct(v) for k, v in modes.items()}
    assert stat.S_IMODE((tmp_path / "shared.txt").stat().st_mode) == 0o644
