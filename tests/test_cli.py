"""Every CLI command through Typer's runner, with exit codes; the end-to-end run on a tiny world."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from gpuseg.cli import app

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    r = invoke("run", "-c", TINY, "-s", f"out_dir={run_dir}", "--device", "cpu")
    assert r.exit_code == 0, r.output
    return run_dir


def test_run_writes_every_artifact_and_accounts_for_every_subscriber(tiny_run: Path):
    for name in (
        "config.yaml",
        "panel/meta.json",
        "panel/rejects.csv",
        "model.safetensors",
        "model.json",
        "metrics.json",
        "predictions.parquet",
        "embeddings.parquet",
        "segments.parquet",
        "cluster.json",
        "report/segments.md",
        "report/segments.csv",
        "summary.json",
    ):
        assert (tiny_run / name).is_file(), name
    summary = json.loads((tiny_run / "summary.json").read_text())
    c = summary["counts"]
    assert c["input"] == c["output"] + c["rejected"] == 1200
    segs = pd.read_parquet(tiny_run / "segments.parquet")
    preds = pd.read_parquet(tiny_run / "predictions.parquet")
    assert len(segs) == len(preds) == c["output"]
    assert preds["churn_prob"].between(0, 1).all()
    assert (
        preds[["migration_down", "migration_stay", "migration_up"]].sum(axis=1).round(4).eq(1).all()
    )
    # the oracle on the test split scores about what it scores on the whole world
    assert abs(summary["truth"]["oracle_auc_test"] - summary["world"]["oracle_auc"]) < 0.1
    profiles = pd.read_csv(tiny_run / "report" / "segments.csv")
    assert profiles["size"].sum() == c["output"]
    assert (tiny_run / "report" / "report.html").is_file()
    assert abs(profiles["share"].sum() - 1) < 1e-6


def test_stage_commands_rerun_on_the_same_run_directory(tiny_run: Path):
    s = f"out_dir={tiny_run}"
    for cmd in ("prepare", "embed", "cluster", "report"):
        r = (
            invoke(cmd, "-c", TINY, "-s", s, "--device", "cpu")
            if cmd != "report"
            else invoke(cmd, "-c", TINY, "-s", s)
        )
        assert r.exit_code == 0, (cmd, r.output)
    assert "segments.md" in r.output


def test_train_command(tiny_run: Path):
    r = invoke("train", "-c", TINY, "-s", f"out_dir={tiny_run}", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "ROC-AUC" in r.output


def test_score_new_data_counts_in_equals_out_plus_rejected(tiny_run: Path, tmp_path: Path):
    world = tiny_run / "world"
    usage = pd.read_parquet(world / "usage.parquet")
    static = pd.read_parquet(world / "static.parquet")
    # one subscriber without a static row: it must be rejected, not dropped silently
    static = static.iloc[1:]
    usage.to_parquet(tmp_path / "u.parquet")
    static.to_parquet(tmp_path / "s.parquet")
    out = tmp_path / "scores.parquet"
    r = invoke(
        "score",
        tiny_run,
        "--usage",
        tmp_path / "u.parquet",
        "--static",
        tmp_path / "s.parquet",
        "-o",
        out,
        "--device",
        "cpu",
    )
    assert r.exit_code == 0, r.output
    scores = pd.read_parquet(out)
    rejects = pd.read_csv(tmp_path / "scores.rejects.csv")
    assert len(scores) + len(rejects) == usage["subscriber_id"].nunique()
    assert rejects["reason"].tolist() == ["no static attributes"]
    assert set(scores.columns) >= {"subscriber_id", "churn_prob", "segment"}
    # the same subscribers get the same predictions as in the run itself
    run_preds = pd.read_parquet(tiny_run / "predictions.parquet").set_index("subscriber_id")
    joined = scores.merge(run_preds, on="subscriber_id", suffixes=("", "_run"))
    assert len(joined) == len(scores)
    assert (joined["churn_prob"] - joined["churn_prob_run"]).abs().max() < 1e-5


def test_info_and_synth(tmp_path: Path):
    r = invoke("info")
    assert r.exit_code == 0 and "torch" in r.output and "auto: clustering" in r.output
    r = invoke("synth", "--out", tmp_path / "w", "-n", "300", "-t", "10")
    assert r.exit_code == 0, r.output
    assert "oracle AUC" in r.output and (tmp_path / "w" / "truth.parquet").is_file()


def one_line_error(r) -> str:
    assert r.exit_code == 1, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, r.output  # the error is one line (an info line may precede it)
    assert "Traceback" not in r.output
    return lines[0]


def test_unknown_config_key_is_one_line_exit_1(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epoch: 3\n")
    line = one_line_error(invoke("prepare", "-c", bad))
    assert "train.epoch" in line and "bad.yaml" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["plan", "RUN", "--offers", "o.yaml", "--budgt", "5"], "No such option: --budgt"),
        (["plan"], "Missing argument 'RUN'"),
        (["plan", "RUN", "--offers", "o.yaml", "--budget", "abc"], "'--budget'"),
        (["nosuch"], "No such command 'nosuch'"),
    ],
)
def test_usage_errors_are_one_line_exit_1(args, expected):
    """A mistyped option, a missing argument or a bad value is bad input: one line naming the
    command, exit 1 (exit 2 stays for internal errors)."""
    r = invoke(*args)
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and lines[0].startswith("error: ")


def test_bare_command_prints_the_help():
    r = invoke()
    assert r.exit_code == 0 and "Commands" in r.output and "plan" in r.output


def test_missing_usage_file_is_one_line_exit_1(tmp_path: Path):
    line = one_line_error(
        invoke(
            "prepare",
            "-s",
            f"out_dir={tmp_path / 'r'}",
            "-s",
            f"data.usage={tmp_path / 'nope.csv'}",
            "--device",
            "cpu",
        )
    )
    assert "nope.csv" in line


def test_bad_usage_value_is_one_line_exit_1(tmp_path: Path):
    csv = tmp_path / "usage.csv"
    csv.write_text("subscriber_id,period,data_mb\nA,2026-01-05,1\nA,2026-01-12,-3\n")
    line = one_line_error(
        invoke(
            "prepare",
            "-s",
            f"out_dir={tmp_path / 'r'}",
            "-s",
            f"data.usage={csv}",
            "--device",
            "cpu",
        )
    )
    assert "usage.csv" in line and "data_mb" in line and "row 2" in line


def test_explicit_cuda_without_gpu_is_a_clear_error(tmp_path: Path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    line = one_line_error(invoke("prepare", "-s", f"out_dir={tmp_path / 'r'}", "--device", "cuda"))
    assert "cuda" in line.lower()


def test_run_directory_of_another_config_is_refused(tiny_run: Path):
    line = one_line_error(
        invoke("report", "-c", TINY, "-s", f"out_dir={tiny_run}", "-s", "cluster.k=4")
    )
    assert "different config" in line


def test_score_on_missing_run_is_one_line_exit_1(tmp_path: Path):
    (tmp_path / "u.csv").write_text("subscriber_id,period,x\nA,1,1\n")
    line = one_line_error(invoke("score", tmp_path / "norun", "--usage", tmp_path / "u.csv"))
    assert "gpuseg run" in line


def test_targets_command(tiny_run: Path, tmp_path: Path):
    out = tmp_path / "t.csv"
    r = invoke("targets", tiny_run, "-o", out, "--min-risk", "0.1")
    assert r.exit_code == 0, r.output
    frame = pd.read_csv(out)
    attrs = pd.read_parquet(tiny_run / "panel" / "attributes.parquet").set_index("subscriber_id")
    picked = attrs.loc[frame["subscriber_id"]]
    assert picked["marketing_consent"].all() and not picked["do_not_disturb"].any()
    assert (frame["churn_prob"] >= 0.1).all()
    assert frame["expected_value_saved"].is_monotonic_decreasing


def test_bench_command_small_profile(tmp_path: Path):
    r = invoke("bench", "--profile", "small", "-o", tmp_path / "b")
    assert r.exit_code == 0, r.output
    record = json.loads((tmp_path / "b" / "bench.json").read_text())
    ok = [x for x in record["results"] if x["status"] == "ok"]
    assert {x["stage"] for x in ok} >= {
        "prepare",
        "train_epoch",
        "embed",
        "kmeans",
        "hdbscan",
        "report",
    }


@pytest.mark.parametrize("cluster", [None, "local:1"])
def test_score_with_an_untrained_run_dir_names_the_missing_file(tmp_path: Path, cluster):
    run = tmp_path / "untrained"
    run.mkdir()
    args = ["score", run, "--usage", tmp_path / "usage.parquet", "-o", tmp_path / "s.parquet"]
    if cluster:
        pytest.importorskip("distributed")
        args += ["--cluster", cluster]
    line = one_line_error(invoke(*args))
    assert "model.safetensors: missing" in line and "gpuseg run" in line


@pytest.mark.parametrize("cluster", [None, "local:1"])
def test_score_to_a_file_not_named_parquet_is_refused_before_any_work(tmp_path: Path, cluster):
    """Scores are Parquet; `-o scores.csv` wrote Parquet under a .csv name."""
    args = ["score", tmp_path / "norun", "--usage", tmp_path / "u.csv", "-o", tmp_path / "s.csv"]
    if cluster:
        pytest.importorskip("distributed")
        args += ["--cluster", cluster]
    line = one_line_error(invoke(*args))
    assert "s.csv: score writes Parquet; name the file .parquet" in line
    assert not (tmp_path / "s.csv").exists()


def test_score_without_static_for_a_run_trained_with_static_is_one_line(tiny_run, tmp_path):
    line = one_line_error(
        invoke(
            "score",
            tiny_run,
            "--usage",
            tiny_run / "world" / "usage.parquet",
            "-o",
            tmp_path / "s.parquet",
            "--device",
            "cpu",
        )  # fmt: skip
    )
    assert "trained with" in line and "static attributes" in line and "--static" in line


def test_score_output_names_segments(tiny_run, tmp_path):
    world = tiny_run / "world"
    out = tmp_path / "s.parquet"
    r = invoke("score", tiny_run, "--usage", world / "usage.parquet", "--static",
               world / "static.parquet", "-o", out, "--device", "cpu")  # fmt: skip
    assert r.exit_code == 0, r.output
    scores = pd.read_parquet(out)
    names = pd.read_csv(tiny_run / "report" / "segments.csv").set_index("segment")["name"]
    assert scores["segment_name"].tolist() == names.loc[scores["segment"]].tolist()


def test_tune_then_train_best_yaml_with_overwrite(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    best = tmp_path / "best.yaml"
    best.write_text((run / "config.yaml").read_text().replace("hidden_size: 16", "hidden_size: 8"))
    refused = one_line_error(invoke("train", "-c", best, "-s", f"out_dir={run}"))
    assert "different config" in refused and "--overwrite" in refused
    r = invoke("train", "-c", best, "-s", f"out_dir={run}", "--device", "cpu", "--overwrite")
    assert r.exit_code == 0, r.output
    assert "hidden_size: 8" in (run / "config.yaml").read_text()
    r = invoke("prepare", "-c", best, "-s", f"out_dir={run}", "--device", "cpu", "--overwrite")
    assert r.exit_code == 0, r.output


def test_prepare_without_its_synthetic_world_says_what_makes_it(tmp_path):
    line = one_line_error(invoke("prepare", "-c", TINY, "-s", f"out_dir={tmp_path / 'r'}"))
    assert "no synthetic world yet" in line and "gpuseg run" in line and "gpuseg synth" in line


def test_missing_run_files_name_the_stage_that_writes_them(tmp_path):
    (tmp_path / "r").mkdir()
    line = one_line_error(invoke("report", "-c", TINY, "-s", f"out_dir={tmp_path / 'r'}"))
    assert "run `gpuseg prepare`" in line
    assert "stage that writes it" not in line


def test_every_option_has_help_and_a_readable_type():
    import typer.main

    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        assert command.help, name
        for param in command.params:
            if param.name != "help":
                assert getattr(param, "help", None), (name, param.name)
        page = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"}).output
        options = page.split("Options:")[-1]
        for odd in ("<bool>", "list[", "<int>", "<float>", "<path>", "<text>"):
            assert odd not in options, (name, odd)
    page = runner.invoke(app, ["tune", "--help"], env={"COLUMNS": "200"}).output
    assert "<median|hyperband|none>" in page and "<auto|cpu|cuda>" in page
    assert "-s, --set KEY=VALUE" in page and "-c, --config YAML" in page


def test_segment_table_and_progress_fit_80_columns():
    from rich.console import Console

    from gpuseg.cli import _epoch_progress, _profiles_table

    rows = [
        dict(segment=0, name="High roaming, high social circle, 13-24m contract, low risk",
             size=1_234_567, share=0.345, revenue_share=0.25, arpu=115.6, churn_rate=0.118,
             churn_pred=0.061),
        dict(segment=1, name="Low data", size=42, share=0.655, revenue_share=0.75, arpu=21.4,
             churn_rate=float("nan"), churn_pred=0.2),
    ]  # fmt: skip
    console = Console(width=80, record=True)
    console.print(_profiles_table(rows))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "1,234,567" in text and "115.6" in text and "6.1" in text  # last column not cut
    assert "High roaming, high" in text and "contract, low risk" in text  # the name wraps
    import gpuseg.cli as cli

    narrow = Console(width=80, record=True, force_terminal=True)
    old, cli.out = cli.out, narrow
    try:
        with _epoch_progress(3) as on_epoch:
            on_epoch(
                dict(
                    epoch=1,
                    loss=1.2345,
                    val_auc=0.81234,
                    val_migration_f1=0.4321,
                    subscribers_per_s=1_234_567.0,
                )  # fmt: skip
            )
    finally:
        cli.out = old
    # the live display's frames, one per refresh, recorded one after the other
    frames = ["train" + f for f in narrow.export_text().split("train") if f.strip()]
    assert frames and all(len(f.rstrip()) <= 80 for f in frames), frames
    assert "\n" not in "".join(f.rstrip() for f in frames)  # one line each: never wrapped


def test_metrics_table_says_why_a_one_class_test_split_has_no_auc():
    from rich.console import Console

    from gpuseg.cli import _metrics_table

    nan = float("nan")
    one = dict(roc_auc=nan, pr_auc=nan, top_decile_lift=nan, brier=0.06, n=18, positives=0)
    console = Console(width=100, record=True)
    console.print(_metrics_table(dict(churn=one)))
    assert "18 subscribers hold one churn class (0 churned)" in console.export_text()
    both = one | dict(roc_auc=0.8, pr_auc=0.5, top_decile_lift=2.0, positives=5)
    console = Console(width=100, record=True)
    console.print(_metrics_table(dict(churn=both)))
    text = console.export_text()
    assert "one churn class" not in text and "0.8000" in text


def test_sigterm_unwinds_a_command_so_its_temporary_files_go(tmp_path, monkeypatch):
    """A batch scheduler's SIGTERM ends the command like an interrupt (exit 143, one line), so
    its cleanups run: the plan's 3.5 GB feature file at 10M subscribers was left in the run
    directory by a killed plan. The previous SIGTERM handler comes back afterwards."""
    import os
    import shutil
    import signal
    import tempfile
    import time

    import gpuseg.pipeline.stages as stages

    made = []

    def killed_stage(*args, **kwargs):
        tmp = Path(tempfile.mkdtemp(dir=tmp_path, prefix=".gpuseg-plan-"))
        made.append(tmp)
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)  # the handler raises here
        finally:
            shutil.rmtree(tmp)
        raise AssertionError("SIGTERM did not stop the stage")

    monkeypatch.setattr(stages, "plan_stage", killed_stage)
    before = signal.getsignal(signal.SIGTERM)
    t0 = time.monotonic()
    r = CliRunner().invoke(
        app, ["plan", str(tmp_path), "--budget", "10", "-o", str(tmp_path / "p.parquet")]
    )
    assert r.exit_code == 143, r.output
    assert "terminated (SIGTERM)" in r.output and time.monotonic() - t0 < 20
    assert made and not made[0].exists()
    assert signal.getsignal(signal.SIGTERM) is before
