"""The ``gpuseg`` command line: each command loads config, calls one library function, prints a
summary.

Errors from the library (:class:`GpusegError`) become one line on stderr and exit code 1; any other
exception is reported in one line too (exit 2) unless ``--debug`` asks for the traceback.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from gpuseg.config import SynthConfig, apply_overrides, from_dict, load_config
from gpuseg.errors import ConfigError, GpusegError

# click's UsageError and ClickException, whichever click typer runs on (newer typer vendors it)
UsageError = typer.BadParameter.__mro__[1]
ClickException = UsageError.__mro__[1]


class _Terminated(BaseException):  # noqa: N818  (a signal, like KeyboardInterrupt)
    """SIGTERM (a batch scheduler's time limit, ``kill``), raised in the main thread so that
    the command unwinds like an interrupt: its temporary files are removed on the way out."""


def _on_sigterm(signum, frame):
    raise _Terminated


@contextlib.contextmanager
def _sigterm_unwinds():
    """While a command runs, SIGTERM raises :class:`_Terminated` (main thread only); the
    previous handler comes back after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Commands(typer.core.TyperGroup):
    """The command group: a usage error (unknown option, missing argument, bad value) is bad
    input like any other, so one line naming the command and exit code 1, not click's usage
    block and exit 2 (which gpuseg keeps for internal errors)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            with _sigterm_unwinds():
                code = super().main(args, prog_name, complete_var, False, **extra)
        except UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `gpuseg`: the help
                exc.show()
                sys.exit(0)
            where = exc.ctx.command_path if exc.ctx is not None else "gpuseg"
            line = " ".join(exc.format_message().split())
            err.print(
                f"error: {where}: {line} (see '{where} --help')", markup=False, soft_wrap=True
            )
            sys.exit(1)
        except ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except typer.Abort:
            err.print("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_Commands,
    add_completion=False,
    rich_markup_mode=None,  # plain help: KEY=VALUE, [auto|cpu|cuda], FILE... (not <list[str]>)
    no_args_is_help=True,
    help="Churn, migration and segments of telecom subscribers, on GPU or CPU.",
)
# a terminal's own width (tables and the progress bar fit 80 columns); 160 when piped to a file
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML run config", metavar="YAML")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="override, e.g. train.epochs=5 (repeatable)", metavar="KEY=VALUE"
    ),
]
DeviceOpt = Annotated[
    Literal["auto", "cpu", "cuda"] | None,
    typer.Option("--device", help="where to run (overrides the config's device)"),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="show tracebacks", metavar="")]
ClusterOpt = Annotated[
    str | None,
    typer.Option(
        "--cluster",
        help="run on Dask: local, local:N (N workers) or a scheduler address tcp://host:8786",
        metavar="ADDRESS",
    ),
]
OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="reuse a run directory made by another config (its training checkpoint is dropped)",
        metavar="",
    ),
]
RunArg = Annotated[Path, typer.Argument(help="a run directory made by gpuseg run", metavar="RUN")]


def handle_errors(fn):
    """Turn library errors into one line and an exit code; the only place that does so."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        debug = kwargs.get("debug", False)
        try:
            return fn(*args, **kwargs)
        except GpusegError as exc:
            if debug:
                raise
            err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
        except _Terminated:
            err.print("terminated (SIGTERM)")
            raise typer.Exit(143) from None
        except Exception as exc:
            if debug:
                raise
            from gpuseg.io.store import WRITE_ERRNOS

            if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:  # the place, not gpuseg
                where = f"{exc.filename}: " if exc.filename else ""
                err.print(f"error: {where}{exc.strerror}", markup=False, soft_wrap=True)
                raise typer.Exit(1) from None
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            if isinstance(exc, KeyError):  # its message may list subscriber IDs: never shown
                first = "a key or ID was not found"
            elif len(first) > 160:
                first = first[:160] + "..."
            err.print(
                f"internal error: {type(exc).__name__}: {first} (run with --debug for the "
                "traceback)",
                markup=False,
                soft_wrap=True,
            )
            raise typer.Exit(2) from None

    return wrapper


def _load(config: Path | None, overrides: list[str] | None, device: str | None):

    sets = list(overrides or [])
    if device is not None:
        sets.append(f"device={device}")
    return load_config(config, sets)


def _backend(cfg):
    from gpuseg.backend import resolve_backend

    backend = resolve_backend(cfg.device)
    for note in backend.notes:
        err.print(f"[dim]{note}[/dim]", markup=True, highlight=False)
    return backend


@contextlib.contextmanager
def _stage(
    config: Path | None, overrides: list[str] | None, device: str | None, overwrite: bool = False
):
    """What every stage command runs in: (config, checked run directory, backend), with the run
    directory locked (one writer at a time, see gpuseg.io.lock). The config is validated before
    anything heavy is imported or any file written."""
    cfg = _load(config, overrides, device)
    from gpuseg.io.lock import RunDirLock
    from gpuseg.pipeline.stages import check_run_dir

    with RunDirLock(cfg.out_dir):
        yield cfg, check_run_dir(cfg, overwrite), _backend(cfg)


def _run_stage(name: str, cluster: str | None, backend, *args):
    """``gpuseg.pipeline.<name>(*args)``; with ``--cluster``, ``gpuseg.parallel.<name>`` on Dask."""
    if cluster is None:
        from gpuseg.pipeline import stages as pipeline

        return getattr(pipeline, name)(*args)
    from gpuseg.pipeline import dask_stages as parallel

    with parallel.connect(cluster, backend) as client:
        return getattr(parallel, name)(*args, client)


@contextlib.contextmanager
def _epoch_progress(epochs: int):
    """A progress bar over epochs; yields the on_epoch callback of train_model."""

    columns = (  # one line at 80 columns: a short bar, and the status cut rather than wrapped
        TextColumn("train"),
        BarColumn(bar_width=16),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}", table_column=Column(no_wrap=True, overflow="ellipsis")),
    )
    with Progress(*columns, console=out, transient=False) as progress:
        task = progress.add_task("train", total=epochs, status="")

        def on_epoch(r: dict) -> None:
            f1 = r.get("val_migration_f1")
            status = (
                f"loss {r['loss']:.4f}  val AUC {r['val_auc']:.4f}  "
                + (f"migr. F1 {f1:.3f}  " if f1 is not None and f1 == f1 else "")
                + f"{r['subscribers_per_s']:,.0f} subs/s"
            )
            progress.update(task, completed=r["epoch"], status=status)
            if not out.is_terminal:
                out.print(f"  epoch {r['epoch']:>3}  {status}")

        yield on_epoch


def _migration_cell(migration: dict | None) -> str:
    """The migration macro-F1, or "no labels" for a run trained on churn labels only."""
    if not migration or migration.get("macro_f1") is None:
        return "no labels"
    return f"{migration['macro_f1']:.4f}"


def _ci(bounds) -> str:
    """A 95 % interval as printed beside an estimate: ``[lo, hi]``."""
    return f"[{bounds[0]:.4f}, {bounds[1]:.4f}]"


def _metrics_table(metrics: dict, oracle: float | None = None) -> Table:
    migration = metrics.get("migration") or {}
    f1 = migration.get("macro_f1")
    has_f1 = f1 is not None and f1 == f1
    t = Table(
        title="Churn and migration on the test split" if has_f1 else "Churn on the test split"
    )
    for col in (
        "ROC-AUC",
        "oracle AUC",
        "PR-AUC",
        "top-decile lift",
        "Brier",
        "migration macro-F1",
    ):
        t.add_column(col, justify="right")
    c = metrics["churn"]
    if c["roc_auc"] != c["roc_auc"] and "n" in c:  # NaN: the test split holds one class
        t.caption = (
            f"the test split's {c['n']} subscribers hold one churn class ({c['positives']} "
            "churned): ROC-AUC, PR-AUC and lift are undefined"
        )
    t.add_row(
        f"{c['roc_auc']:.4f}",
        f"{oracle:.4f}" if oracle is not None else "-",
        f"{c['pr_auc']:.4f}",
        f"{c['top_decile_lift']:.2f}",
        f"{c['brier']:.4f}",
        _migration_cell(migration) if has_f1 else "no labels",
    )
    return t


# segment table columns: profile key, header (with its unit), format
PROFILE_COLUMNS = (
    ("segment", "#", "{}"),
    ("name", "name", "{}"),
    ("size", "subscri-\nbers", "{:,}"),
    ("share", "share\n%", "{:.1%}"),
    ("revenue_share", "revenue\n%", "{:.1%}"),
    ("arpu", "ARPU\n/period", "{:.1f}"),
    ("churn_rate", "churn\n%", "{:.1%}"),
    ("churn_pred", "predic-\nted %", "{:.1%}"),
)


def _profiles_table(profiles) -> Table:
    """The segment table; fits 80 columns (long names wrap inside their column)."""

    t = Table(title="Segments", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for key, header, _ in PROFILE_COLUMNS:
        if key == "name":
            t.add_column(header, justify="left", overflow="fold", min_width=18, max_width=44)
        else:
            t.add_column(header, justify="right", no_wrap=True)
    for r in profiles:
        cells = []
        for key, _, fmt in PROFILE_COLUMNS:
            v = r.get(key)
            ok = v is not None and (not isinstance(v, float) or v == v)
            cells.append(fmt.format(v).replace("%", "") if ok else "-")
        t.add_row(*cells)
    return t


@app.command()
@handle_errors
def info(debug: DebugOpt = False) -> None:
    """Python, torch, CUDA, GPU, cuDF and cuML versions, and what --device auto resolves to.

    Example: gpuseg info
    """
    from gpuseg.backend import describe_environment, resolve_backend

    t = Table(title="gpuseg environment")
    t.add_column("item")
    t.add_column("value")
    for k, v in describe_environment().items():
        t.add_row(k, v)
    b = resolve_backend("auto")
    t.add_row("auto: training/embedding", b.device)
    t.add_row("auto: data preparation", b.frames)
    t.add_row("auto: clustering", b.ml)
    out.print(t)
    for note in b.notes:
        out.print(note)


@app.command()
@handle_errors
def synth(
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="folder for the world's files", metavar="DIR")
    ] = Path("data/synth"),
    n: Annotated[
        int, typer.Option("--subscribers", "-n", help="subscribers in the world", metavar="N")
    ] = 50_000,
    periods: Annotated[
        int, typer.Option("--periods", "-t", help="periods (weeks) of usage", metavar="T")
    ] = 26,
    seed: Annotated[int, typer.Option("--seed", help="random seed", metavar="N")] = 0,
    preset: Annotated[
        Literal["default", "hard"],
        typer.Option("--preset", help="hard: weaker signal, more noise, late joiners"),
    ] = "default",
    fmt: Annotated[
        Literal["parquet", "csv"], typer.Option("--format", help="file type of the tables")
    ] = "parquet",
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-s",
            help="any synth key, e.g. late_joiner_frac=0.2 (repeatable)",
            metavar="KEY=VALUE",
        ),
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Write a synthetic telecom world (usage, static, labels, truth) and print its oracle AUC.

    Example: gpuseg synth --out data/synth -n 50000 -t 26

    A later window for out-of-time tests: gpuseg synth --out data/later --seed 1 --set shift=8
    """
    from gpuseg.data.synth import generate

    raw = dict(n_subscribers=n, n_periods=periods, seed=seed, preset=preset)
    cfg = from_dict(SynthConfig, apply_overrides(raw, set_ or []))
    s = generate(cfg, out_dir, fmt)
    out.print(f"wrote {s['n_subscribers']:,} subscribers x {s['n_periods']} periods to {out_dir}")
    out.print(f"churn rate {s['churn_rate']:.3f}  oracle AUC {s['oracle_auc']:.4f}")


@app.command("init")
@handle_errors
def init_cmd(
    data: Annotated[
        list[Path],
        typer.Argument(
            help="usage, static and labels files (Parquet or CSV), in any order", metavar="FILE..."
        ),
    ],
    output: Annotated[
        Path, typer.Option("--out", "-o", help="the config file to write", metavar="YAML")
    ] = Path("gpuseg.yaml"),
    rows: Annotated[
        int, typer.Option("--rows", help="rows read from each file to guess from", metavar="N")
    ] = 20_000,
    force: Annotated[bool, typer.Option("--force", help="replace an existing config file")] = False,
    debug: DebugOpt = False,
) -> None:
    """Write a commented config for your files: layout, id, period, labels, metrics, revenue.

    Reads the first --rows rows of each file (never the whole file) and guesses; every guess is a
    comment in the YAML. Then: gpuseg check -c my.yaml, and gpuseg run -c my.yaml.

    Example: gpuseg init exports/usage.parquet exports/subscribers.csv exports/churn.csv -o my.yaml
    """
    from gpuseg.data.infer import init_config
    from gpuseg.io.store import write_text_atomic

    if output.exists() and not force:
        raise ConfigError(f"{output}: exists; use --force to replace it or -o another file")
    text, guess = init_config([str(p) for p in data], rows, name=output.stem)
    write_text_atomic(output, text)
    d = guess.data
    out.print(
        f"layout {d['layout']}, id column {d['id_column'] or '(row number)'}"
        + (f", period column {d['period_column']}" if "period_column" in d else "")
        + f", {len(d.get('metrics', {}))} metrics, revenue metric {d.get('revenue_metric', '-')}"
    )
    churn = d.get("churn_column")
    out.print(
        f"labels: churn {churn!r} in {d['labels']}" if churn else "labels: none found",
        soft_wrap=True,
    )
    for w in guess.warnings:
        out.print(f"check: {w}", soft_wrap=True, markup=False)
    out.print(f"wrote {output}; next: gpuseg check -c {output}", soft_wrap=True)


@app.command("check")
@handle_errors
def check_cmd(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    rows: Annotated[
        int,
        typer.Option("--rows", help="rows of each file whose values are checked", metavar="N"),
    ] = 200_000,
    debug: DebugOpt = False,
) -> None:
    """Check a config against its files before any training: one line per problem, exit 1.

    Columns exist, the revenue metric is a metric, label values are readable, metric values are
    numbers (or missing with a fill policy), and the ids of the usage, static and labels files
    join. Reads headers, id columns and the first --rows rows; writes nothing.

    Example: gpuseg check -c my.yaml
    """
    from gpuseg.data.check import check_config

    cfg = _load(config, set_, None)
    res = check_config(cfg, rows)
    for note in res.notes:
        out.print(note, soft_wrap=True, markup=False, highlight=False)
    for problem in res.problems:
        err.print(f"[red]problem:[/red] {problem}", markup=True, highlight=False, soft_wrap=True)
    if res.problems:
        err.print(f"{len(res.problems)} problem(s); fix them, then run gpuseg check again")
        raise typer.Exit(1)
    out.print(f"ok: {config or 'the default config'} matches its files")


@app.command("prepare")
@handle_errors
def prepare_cmd(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    cluster: ClusterOpt = None,
    overwrite: OverwriteOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Raw usage/static/labels tables -> panel artifact in <out_dir>/panel, with rejects.csv.

    Example: gpuseg prepare -c configs/demo.yaml -s data.usage=my_usage.parquet --cluster local
    """
    with _stage(config, set_, device, overwrite) as (cfg, run_dir, backend):
        meta = _run_stage("prepare_stage", cluster, backend, cfg, backend, run_dir)
    for note in meta.get("notes", []):
        err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    c = meta["counts"]
    out.print(
        f"panel: {c['output']:,} subscribers x {len(meta['periods'])} periods x "
        f"{len(meta['metrics'])} metrics -> {run_dir / 'panel'}"
    )
    out.print(
        f"input {c['input']:,} = output {c['output']:,} + rejected {c['rejected']:,} (see "
        f"{run_dir / 'panel' / 'rejects.csv'})"
    )
    from gpuseg.data.prepare import summary_lines

    for line in summary_lines(meta):
        out.print(line, soft_wrap=True)


@app.command("train")
@handle_errors
def train_cmd(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    overwrite: OverwriteOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Train the sequence model on <out_dir>/panel; writes model.safetensors and metrics.json.

    Example: gpuseg train -c configs/demo.yaml -s train.epochs=10

    After tuning: gpuseg train -c runs/demo/best.yaml --overwrite (same panel, the best settings)
    """
    with _stage(config, set_, device, overwrite) as (cfg, run_dir, backend):
        from gpuseg.pipeline.stages import train_stage

        with _epoch_progress(cfg.train.epochs) as on_epoch:
            log = lambda m: err.print(m, markup=False, highlight=False)  # noqa: E731
            metrics = train_stage(cfg, backend, run_dir, on_epoch, log=log)
    out.print(_metrics_table(metrics))
    _print_head(metrics)


def _print_head(metrics: dict) -> None:
    """With ``model.head`` a booster scores churn: say so, with its test ROC-AUC."""
    head = metrics.get("head") or {}
    if head.get("kind", "sequence") != "sequence":
        out.print(
            f"churn head ({head['kind']}, model.head={head['requested']}): test ROC-AUC "
            f"{head['test_roc_auc']:.4f}, validation {head['val_auc']:.4f}; the table above is "
            "the sequence model's"
        )


@app.command("embed")
@handle_errors
def embed_cmd(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    cluster: ClusterOpt = None,
    overwrite: OverwriteOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Embeddings and predictions of every subscriber in bounded-memory batches, to Parquet.

    Example: gpuseg embed -c configs/demo.yaml --cluster tcp://10.0.0.5:8786
    """
    with _stage(config, set_, device, overwrite) as (cfg, run_dir, backend):
        n = _run_stage("embed_stage", cluster, backend, cfg, backend, run_dir)
    out.print(
        f"embedded {n:,} subscribers -> {run_dir / 'embeddings.parquet'}, "
        f"{run_dir / 'predictions.parquet'}"
    )


@app.command("cluster")
@handle_errors
def cluster_cmd(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    cluster: ClusterOpt = None,
    overwrite: OverwriteOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Segments from the embeddings (KMeans or HDBSCAN; cuML on GPU, scikit-learn on CPU).

    Example: gpuseg cluster -c configs/demo.yaml -s cluster.k=5 --cluster local:2
    """
    with _stage(config, set_, device, overwrite) as (cfg, run_dir, backend):
        r = _run_stage("cluster_stage", cluster, backend, cfg, backend, run_dir)
    out.print(
        f"{r['reason']} (backend {r['backend']}); sizes {r['sizes']} -> "
        f"{run_dir / 'segments.parquet'}"
    )


@app.command("report")
@handle_errors
def report_cmd(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    overwrite: OverwriteOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Segment profiles, classic segments, tags, value x stability, quality: report tables.

    Writes <out_dir>/report/: segments.csv|md, effects.csv, rules.csv, classic.parquet, tags.csv,
    concentration.json, value_stability.csv, crosstab_*.csv, quality.json and report.md; then
    report.html, one self-contained page with every chart (-s report.html=false skips it).

    Example: gpuseg report -c configs/demo.yaml
    """

    with _stage(config, set_, device, overwrite) as (cfg, run_dir, backend):
        from gpuseg.pipeline.stages import report_stage

        profiles = report_stage(cfg, run_dir, backend)
    out.print(_profiles_table(profiles.to_dict(orient="records")))
    report = run_dir / "report"
    conc = json.loads((report / "concentration.json").read_text())
    quality = json.loads((report / "quality.json").read_text())
    ari = quality["stability_ari"]["mean"]
    recall = ""
    if (report / "rules.csv").is_file():
        with open(report / "rules.csv", newline="") as f:
            rec = [float(r["recall"]) for r in csv.DictReader(f) if r.get("recall")]
        if rec:
            recall = f" (per-segment recall {min(rec):.1%} to {max(rec):.1%})"
    out.print(
        f"top 20% of subscribers hold {conc['top_share']['0.2']:.1%} of revenue (Gini"
        f" {conc['gini']:.3f}); rules fidelity {quality['rules']['fidelity']:.1%}{recall}"
        + (f"; bootstrap stability ARI {ari:.3f}" if ari is not None else "")
    )
    out.print(f"wrote {report / 'report.md'}, segments.md|csv and the other tables in {report}")
    if cfg.report.html:
        out.print(f"wrote {report / 'report.html'} (self-contained HTML)")


@app.command("score")
@handle_errors
def score_cmd(
    run: RunArg,
    usage: Annotated[
        Path, typer.Option("--usage", help="usage table of the new data", metavar="FILE")
    ],
    static: Annotated[
        Path | None,
        typer.Option(
            "--static",
            help="static attributes of the new subscribers; needed when the run was trained with "
            "static attributes (a table-layout run reads them from --usage)",
            metavar="FILE",
        ),
    ] = None,
    output: Annotated[
        Path,
        typer.Option("--out", "-o", help="scores (Parquet); rejects beside it", metavar="FILE"),
    ] = Path("scores.parquet"),
    device: DeviceOpt = None,
    cluster: ClusterOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Score new data through a trained run: churn and migration probabilities and segment.

    With --cluster the new data is prepared and scored over partitions on Dask.

    Example: gpuseg score runs/demo --usage new.parquet --static new_static.parquet -o s.parquet
    """

    cfg = load_config(run / "config.yaml") if (run / "config.yaml").is_file() else load_config(None)
    if device is not None:
        cfg = replace(cfg, device=device)
    if static is None and cfg.data.static and cfg.data.static == cfg.data.usage:
        static = usage  # trained on one file holding usage and attributes: so is the new data
    data = replace(cfg.data, usage=str(usage), static=str(static) if static else None, labels=None)
    backend = _backend(cfg)
    r = _run_stage("score", cluster, backend, run, data, backend, output)
    for note in r.get("notes", []):
        err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    out.print(
        f"scored {r['scored']:,} of {r['input']:,} subscribers -> {r['out']}; rejected "
        f"{r['rejected']:,} -> {r['rejects']}"
    )
    out.print("columns: churn_prob, migration_*, segment and segment_name (from the run's report)")


@app.command("evaluate")
@handle_errors
def evaluate_cmd(
    run: RunArg,
    truth: Annotated[
        Path | None,
        typer.Option(
            "--truth",
            help="truth table (.parquet or .csv, with churn_prob) for the oracle row",
            metavar="FILE",
        ),
    ] = None,
    truth_id: Annotated[
        str | None,
        typer.Option(
            "--truth-id",
            help="id column of the truth table (default: the run's id column, else subscriber_id)",
            metavar="NAME",
        ),
    ] = None,
    n_boot: Annotated[
        int,
        typer.Option("--boot", help="bootstrap resamples for the 95% intervals", metavar="N"),
    ] = 200,
    test_panel: Annotated[
        Path | None,
        typer.Option(
            "--test-panel", help="out of time: a later window's panel to test on", metavar="DIR"
        ),
    ] = None,
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="JSON result (default RUN/evaluation.json)", metavar="FILE"
        ),
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Model vs baselines (logistic, gradient boosting) vs oracle on the test split, with CIs.

    Example: gpuseg evaluate runs/demo --truth runs/demo/world/truth.parquet

    Out of time: gpuseg evaluate runs/jan --test-panel runs/feb/panel --truth feb/truth.parquet
    """
    from gpuseg.pipeline.evaluate import comparison_markdown, evaluate_run

    if truth is None and test_panel is None and (run / "world" / "truth.parquet").is_file():
        truth = run / "world" / "truth.parquet"
    out_path = out_path or run / "evaluation.json"
    result = evaluate_run(
        run, run / "panel", truth, n_boot=n_boot, test_panel_dir=test_panel, out_path=out_path,
        truth_id_column=truth_id,
    )  # fmt: skip
    out.print(comparison_markdown(result), soft_wrap=True)
    out.print(f"wrote {out_path}")


@app.command("compare")
@handle_errors
def compare_cmd(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    folds: Annotated[int, typer.Option("--folds", "-k", help="stratified folds", metavar="K")] = 5,
    repeats: Annotated[
        int, typer.Option("--repeats", help="K-fold repeats (other shuffles)", metavar="R")
    ] = 1,
    candidates: Annotated[
        str | None,
        typer.Option(
            "--candidates",
            help="comma list of sequence, stack, xgboost_seq, tabm, blend, auto and head_blend "
            "(what model.head: auto / blend score with), head_blend_tabm (head_blend + tabm), "
            "logistic, hist_gb, xgboost, lightgbm, blend_baselines (default: the --head, "
            "sequence and every baseline installed, and blend_baselines with a blend head)",
            metavar="NAME,...",
        ),
    ] = None,
    head: Annotated[
        str | None,
        typer.Option(
            "--head",
            help="the candidate reported as gpuseg's model (default: what the config's "
            "model.head scores with; head_blend for model.head: blend)",
            metavar="NAME",
        ),
    ] = None,
    trials: Annotated[
        int, typer.Option("--trials", help="Optuna trials per booster", metavar="N")
    ] = 15,
    seeds: Annotated[
        int, typer.Option("--seeds", help="sequence model: seeds averaged", metavar="N")
    ] = 1,
    n_boot: Annotated[
        int, typer.Option("--boot", help="paired bootstrap resamples", metavar="N")
    ] = 200,
    shuffle_labels: Annotated[
        bool,
        typer.Option(
            "--shuffle-labels", help="control: permute the target's labels first", metavar=""
        ),
    ] = False,
    target: Annotated[
        str,
        typer.Option(
            "--target",
            help="churn, or migration: value-tier migration (down/stay/up) where the labels "
            "have it or it is derived (macro one-vs-rest ROC-AUC, ROC-AUC and lift of down)",
            metavar="NAME",
        ),
    ] = "churn",
    test_panel: Annotated[
        Path | None,
        typer.Option(
            "--test-panel",
            help="out of time: test on a later window's panel (same periods, metrics and static "
            "columns, e.g. prepared with the same config): its labelled subscribers cut into the "
            "K folds' test parts; train and validation rows stay the run's",
            metavar="DIR",
        ),
    ] = None,
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="JSON result (default <out_dir>/compare.json; migration: compare_migration.json;"
            " --test-panel: compare_oot.json, compare_migration_oot.json)",
            metavar="FILE",
        ),
    ] = None,
    predictions: Annotated[
        Path | None,
        typer.Option(
            "--predictions",
            help="also write every candidate's validation and test probabilities per fold, "
            "with the rows and labels, to this .npz (for blend studies without rerunning)",
            metavar="FILE",
        ),
    ] = None,
    overwrite: OverwriteOpt = False,
    debug: DebugOpt = False,
) -> None:
    """K-fold comparison of the model and tuned baselines on the same folds, paired intervals.

    Example: gpuseg compare -c configs/demo.yaml --folds 5 -s synth.n_subscribers=20000
    (--target migration: the same on value-tier migration; --test-panel runs/later/panel: out of
    time, tested on a later window's subscribers)
    """
    kw = dict(folds=folds, repeats=repeats, head=head, trials=trials, seeds=seeds)
    if test_panel is not None:
        kw["test_panel_dir"] = test_panel
    if target != "churn":
        kw["target"] = target
    if candidates:
        kw["candidates"] = [c.strip() for c in candidates.split(",") if c.strip()]
    if out_path is not None:
        kw["out_path"] = out_path
    if predictions is not None:
        kw["predictions_path"] = predictions
    with _stage(config, set_, device, overwrite) as (cfg, run_dir, backend):
        from gpuseg.pipeline.compare import compare_stage, comparison_markdown, result_name

        result = compare_stage(
            cfg,
            backend,
            run_dir,
            n_boot=n_boot,
            shuffle_labels=shuffle_labels,
            on_fold=lambda r: err.print(f"[dim]fold {r['fold'] + 1} done[/dim]", markup=True),
            **kw,
        )
    out.print(comparison_markdown(result), soft_wrap=True, markup=False)
    out.print(f"wrote {out_path or run_dir / result_name(target, test_panel is not None)}")


@app.command("targets")
@handle_errors
def targets_cmd(
    run: RunArg,
    output: Annotated[
        Path, typer.Option("--out", "-o", help="the list: .csv or .parquet", metavar="FILE")
    ] = Path("targets.csv"),
    segment: Annotated[
        list[int] | None,
        typer.Option("--segment", help="learned segment number (repeatable)", metavar="N"),
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option(
            "--tag",
            help="tag from the run's rule file, e.g. churn_warning, retain_now (repeatable)",
            metavar="NAME",
        ),
    ] = None,
    all_tags: Annotated[
        bool, typer.Option("--all-tags", help="require every --tag, not any", metavar="")
    ] = False,
    min_risk: Annotated[
        float,
        typer.Option("--min-risk", help="lowest churn probability kept, 0 to 1", metavar="P"),
    ] = 0.0,
    top: Annotated[
        int | None,
        typer.Option("--top", help="at most this many, best expected value first", metavar="N"),
    ] = None,
    horizon_months: Annotated[
        float | None,
        typer.Option(
            "--horizon-months",
            help="value = ARPU x this many months (default: ARPU of one month)",
            metavar="M",
        ),
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Campaign list: by segment, tag and churn risk, ranked by expected value saved.

    Subscribers without marketing consent or in do-not-disturb are always excluded.

    Example: gpuseg targets runs/demo --tag churn_warning --min-risk 0.3 --top 1000 -o t.csv
    """
    from gpuseg.segment.targets import counts_line, select_targets, write_targets

    frame = select_targets(
        run,
        segments=segment,
        tags=tag,
        tag_mode="all" if all_tags else "any",
        min_risk=min_risk,
        top=top,
        horizon_months=horizon_months,
    )
    write_targets(frame, output)
    out.print(counts_line(frame.attrs["counts"]))
    out.print(f"wrote {len(frame):,} targets -> {output}")


@app.command("plan")
@handle_errors
def plan_cmd(
    run: RunArg,
    budget: Annotated[
        float, typer.Option("--budget", help="total spend allowed", metavar="AMOUNT")
    ] = 50_000.0,
    offers: Annotated[
        Path | None,
        typer.Option("--offers", help="product library YAML (configs/offers.yaml)", metavar="YAML"),
    ] = None,
    output: Annotated[
        Path, typer.Option("--out", "-o", help=".parquet or .csv", metavar="FILE")
    ] = Path("plan.parquet"),
    campaigns: Annotated[
        Path | None,
        typer.Option(
            "--campaigns", help="campaign table (default: a synthetic run's)", metavar="FILE"
        ),
    ] = None,
    future_revenue: Annotated[
        Path | None,
        typer.Option(
            "--future-revenue",
            help="observed revenue over the horizon, for the ZILN head",
            metavar="FILE",
        ),
    ] = None,
    priors: Annotated[
        bool,
        typer.Option(
            "--priors", help="ignore the campaign table: effects from the offer priors", metavar=""
        ),
    ] = False,
    learner: Annotated[
        Literal["s", "t"], typer.Option("--learner", help="uplift learner: S- or T-learner")
    ] = "s",
    no_takeup: Annotated[
        bool,
        typer.Option(
            "--no-takeup",
            help="S-learner without the take-up input learned from the table's accepted column",
            metavar="",
        ),
    ] = False,
    chunk_size: Annotated[
        int,
        typer.Option("--chunk-size", help="subscribers per chunk (bounds memory)", metavar="N"),
    ] = 65_536,
    fit_sample: Annotated[
        int,
        typer.Option(
            "--fit-sample",
            help="fit lifetime value and uplift on at most N subscribers (a random sample)",
            metavar="N",
        ),
    ] = 200_000,
    device: DeviceOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Contact plan: per subscriber at most one offer, channel and date, within the budget.

    Example: gpuseg plan runs/demo --offers configs/offers.yaml --budget 50000 -o plan.parquet
    """
    from gpuseg.backend import resolve_backend
    from gpuseg.pipeline.stages import plan_stage

    if learner not in ("s", "t"):
        raise ConfigError(f"--learner: {learner!r} is not one of s, t")
    if output.suffix.lower() not in (".parquet", ".pq", ".csv"):
        raise ConfigError(f"{output}: output must end in .parquet or .csv")
    backend = resolve_backend(device or "auto")
    if chunk_size < 1 or fit_sample < 1:
        raise ConfigError(
            f"--chunk-size and --fit-sample: must be >= 1, got {chunk_size}, {fit_sample}"
        )
    a, path, skipped = plan_stage(
        run,
        budget,
        offers,
        campaigns,
        future_revenue,
        not priors,
        learner,
        backend,
        output,
        chunk=chunk_size,
        fit_sample=fit_sample,
        takeup=not no_takeup,
    )
    s = a.result.summary
    for note in s["notes"]:
        out.print(note, soft_wrap=True)
    t = Table(title=f"plan: {s['planned']:,} actions, value in {s['value_unit']}")
    for col in ("by", "name", "actions", "spend", "expected value"):
        t.add_column(col)
    for by in ("offer", "channel", "segment"):
        for name, v in s[f"per_{by}"].items():
            t.add_row(by, name, f"{v['n']:,}", f"{v['spend']:,.0f}", f"{v['value']:,.1f}")
    out.print(t)
    out.print(
        f"spend {s['spend']:,.0f} of {s['budget']:,.0f}; expected incremental value "
        f"{s['expected_incremental_value']:,.1f}; {s['bound_kind']} {s['bound']:,.1f} "
        f"(greedy gap {s['gap']:.2%})"
    )
    for c, e in s["channel_exclusions"].items():
        out.print(
            f"{c}: open {e['open']:,}; "
            + ", ".join(f"{k} {v:,}" for k, v in e.items() if k != "open")
        )
    for offer, q in (a.qini or {}).items():
        out.print(
            f"effects of {offer}: Qini {q['learned']:.4f} {_ci(q['learned_ci'])} against "
            f"churn risk {q['risk']:.4f} {_ci(q['risk_ci'])} on {q['n']:,} past tests, out of "
            f"fold: {q['verdict']}",
            soft_wrap=True,
        )
    out.print("not planned: " + ", ".join(f"{k} {v:,}" for k, v in s["skipped"].items()))
    out.print(f"wrote {path} and {skipped}")


@app.command("drift")
@handle_errors
def drift_cmd(
    old: Annotated[
        Path, typer.Argument(help="earlier scoring output (gpuseg score)", metavar="OLD")
    ],
    new: Annotated[Path, typer.Argument(help="later scoring output (gpuseg score)", metavar="NEW")],
    output: Annotated[
        Path, typer.Option("--out", "-o", help="folder for drift.json|md", metavar="DIR")
    ] = Path("drift"),
    bins: Annotated[
        int, typer.Option("--bins", help="quantile bins of each score for its PSI", metavar="N")
    ] = 10,
    old_panel: Annotated[
        Path | None,
        typer.Option("--old-panel", help="panel dir of OLD: adds feature PSI", metavar="DIR"),
    ] = None,
    new_panel: Annotated[
        Path | None,
        typer.Option("--new-panel", help="panel dir of NEW: adds feature PSI", metavar="DIR"),
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Drift between two scoring runs: PSI per score and segment share, segment transitions.

    Example: gpuseg drift scores_2026-10.parquet scores_2026-11.parquet -o runs/drift
    """
    from gpuseg.evaluate.drift import drift_runs

    r = drift_runs(old, new, output, bins, old_panel, new_panel)
    stayed = r["transition"]["stayed"]
    out.print(
        f"segment share PSI {r['segments']['psi']:.4f} ({r['segments']['reading']}); "
        + ", ".join(f"{k} {v['psi']:.4f}" for k, v in r["features"].items())
    )
    out.print(
        f"{r['subscribers']['both']:,} subscribers in both runs"
        + (f", {stayed:.1%} kept their segment" if stayed is not None else "")
    )
    out.print(f"{r['verdict']}; wrote {output / 'drift.json'} and drift.md")


@app.command("bench")
@handle_errors
def bench_cmd(
    profile: Annotated[
        str,
        typer.Option("--profile", "-p", help="small, full or a manifest YAML", metavar="PROFILE"),
    ] = "small",
    output: Annotated[
        Path, typer.Option("--out", "-o", help="folder for bench.json|md", metavar="DIR")
    ] = Path("runs/bench"),
    kinds: Annotated[
        str,
        typer.Option(
            "--kinds",
            help="device kinds to measure: cpu,cuda (default), cpu or cuda",
            metavar="KINDS",
        ),
    ] = "cpu,cuda",
    debug: DebugOpt = False,
) -> None:
    """CPU and GPU throughput of every stage in one run; writes bench.json and bench.md.

    Example: gpuseg bench --profile small --out runs/bench
    """
    from gpuseg.bench import run_bench

    run_bench(profile, output, [k.strip() for k in kinds.split(",")], log=out.print)
    out.print((output / "bench.md").read_text(), soft_wrap=True)
    out.print(f"wrote {output / 'bench.json'} and bench.md")


@app.command("tune")
@handle_errors
def tune_cmd(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    trials: Annotated[
        int, typer.Option("--trials", "-n", help="trials run by this process", metavar="N")
    ] = 20,
    storage: Annotated[
        str | None,
        typer.Option("--storage", help="sqlite:///f.db, journal:PATH or an RDB URL", metavar="URL"),
    ] = None,
    study: Annotated[
        str | None,
        typer.Option(
            "--study", help="study name shared by processes (default: run name)", metavar="NAME"
        ),  # fmt: skip
    ] = None,
    pruner: Annotated[
        Literal["median", "hyperband", "none"],
        typer.Option("--pruner", help="stops unpromising trials early"),
    ] = "median",
    device: DeviceOpt = None,
    overwrite: OverwriteOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Optuna study over model and training settings; writes <out_dir>/best.yaml for gpuseg train.

    Example: gpuseg tune -c configs/demo.yaml -n 30 --storage journal:runs/demo/study.log
    """
    with _stage(config, set_, device, overwrite) as (cfg, run_dir, backend):
        from gpuseg.training.tune import tune

        r = tune(
            cfg,
            run_dir / "panel",
            run_dir,
            trials,
            storage=storage,
            study_name=study,
            pruner=pruner,
            device=backend.torch_device,
        )
    best = r.get("best")
    out.print(
        f"best validation AUC {best['value']:.4f} (trial {best['number']})"
        if best
        else "no trial completed"
    )
    out.print(f"wrote {run_dir / 'best.yaml'} and tune.json")
    out.print(f"next: gpuseg train -c {run_dir / 'best.yaml'} --overwrite", soft_wrap=True)


@app.command("run")
@handle_errors
def run_cmd(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    overwrite: OverwriteOpt = False,
    debug: DebugOpt = False,
) -> None:
    """The whole pipeline: (synth) -> prepare -> train -> embed -> cluster -> report.

    Example: gpuseg run --config configs/demo.yaml
    """
    cfg = _load(config, set_, device)
    from gpuseg.pipeline.stages import run_pipeline

    backend = _backend(cfg)
    with _epoch_progress(cfg.train.epochs) as on_epoch:
        s = run_pipeline(
            cfg,
            backend,
            log=lambda m: out.print(f"[bold]{m}[/bold]"),
            on_epoch=on_epoch,
            overwrite=overwrite,
        )
    c = s["counts"]
    out.print(
        f"subscribers: input {c['input']:,} = in panel {c['output']:,} + rejected {c['rejected']:,}"
    )
    from gpuseg.data.prepare import summary_lines
    from gpuseg.io.store import read_json

    for line in summary_lines(read_json(Path(s["run_dir"]) / "panel" / "meta.json")):
        out.print(line, soft_wrap=True)
    out.print(_profiles_table(s["profiles"]))
    truth = s.get("truth", {})
    out.print(_metrics_table(s["metrics"], truth.get("oracle_auc_test")))
    _print_head(s["metrics"])
    out.print(f"segments: {s['cluster']['reason']} (backend {s['cluster']['backend']})")
    if truth:
        gap = truth["oracle_auc_test"] - s["metrics"]["churn"]["roc_auc"]
        out.print(
            f"churn ROC-AUC {s['metrics']['churn']['roc_auc']:.4f} vs oracle "
            f"{truth['oracle_auc_test']:.4f} (gap {gap:.4f}); segment ARI vs truth "
            f"{truth['segment_ari']:.3f}"
        )
    out.print(f"run directory: {s['run_dir']}")
    report = Path(s["run_dir"]) / "report"
    if cfg.report.html:
        out.print(f"report: {report / 'report.html'} (open it in a browser)", soft_wrap=True)
    out.print(f"tables: {report / 'report.md'} and the CSV files beside it", soft_wrap=True)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
