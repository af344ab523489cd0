"""``gpuseg bench``: time each pipeline stage on CPU and GPU in the same run.

A benchmark manifest (YAML; ``benchmarks/small.yaml``, ``benchmarks/full.yaml``,
``benchmarks/scaling.yaml``) lists subscriber counts (and optionally a ``period_sweep``: period
counts measured at ``period_sweep_size`` subscribers) and what to measure. For each size one
synthetic world is generated (cached under ``<out>/worlds``); then, for each backend kind
available, each stage runs ``warmup`` times untimed and ``repeats`` times timed, and the median
wall time is recorded:

- ``prepare``: long usage table -> panel (pandas, or cuDF with RAPIDS)
- ``train_epoch``: one epoch of :func:`gpuseg.training.step.train_epoch`, the step
  :func:`gpuseg.training.loop.train_model` runs (pos_weight, migration class weights, clipping,
  AdamW, one-cycle schedule), over the labelled subscribers in a seeded shuffled order (GRU,
  batch and hidden size from the manifest)
- ``embed``: inference over all subscribers, embeddings copied back to the host
- ``kmeans``: KMeans on all embeddings (scikit-learn, or cuML with RAPIDS)
- ``hdbscan``: HDBSCAN on a sample of the embeddings (scikit-learn, or cuML with RAPIDS)
- ``report``: :func:`gpuseg.report.tables.segment_profiles` (host code on both kinds)

Memory figures are honest about what they measure: ``rss_peak_mb`` is the process's resident set
sampled every 10 ms while the stage ran (a short spike between samples can be missed);
``torch_gpu_peak_mb`` is ``torch.cuda.max_memory_allocated`` (the torch allocator only, so
cuDF/cuML memory is not in it); ``gpu_used_peak_mb`` is device-wide used memory sampled with
``torch.cuda.mem_get_info`` (includes RAPIDS pools and any other process on the GPU).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
import yaml

from gpuseg.backend import Backend, cuda_available, describe_environment, resolve_backend
from gpuseg.config import DataConfig, ModelConfig, SynthConfig, TrainConfig, from_dict
from gpuseg.data.panel import load_panel
from gpuseg.data.prepare import prepare
from gpuseg.data.synth import generate
from gpuseg.errors import BackendError, ConfigError
from gpuseg.features.fitting import fit_normalization
from gpuseg.model.sequence import SubscriberModel, flops_per_subscriber
from gpuseg.report.tables import segment_profiles
from gpuseg.training import step
from gpuseg.training.loop import predict, to_device
from gpuseg.training.step import Losses

STAGES = ("prepare", "train_epoch", "embed", "kmeans", "hdbscan", "report")
KINDS = ("cpu", "cuda")
RAPIDS_STAGES = ("prepare", "kmeans", "hdbscan")  # the stages that cuDF / cuML replace
PROFILES_DIR = Path(__file__).resolve().parent.parent / "benchmarks"

# The shipped profiles, used when the benchmarks/ folder is not next to the package (installed
# wheel). tests/test_bench.py checks that benchmarks/*.yaml say the same.
BUILTIN_PROFILES: dict[str, dict[str, Any]] = {
    "small": dict(
        name="small",
        sizes=[2000, 10000],
        gpu_only_sizes=[],
        periods=13,
        repeats=2,
        warmup=1,
        backends=["cpu", "cuda"],
        stages=list(STAGES),
    ),
    "full": dict(
        name="full",
        sizes=[10000, 100000, 1000000],
        gpu_only_sizes=[10000000],
        periods=26,
        repeats=3,
        warmup=1,
        backends=["cpu", "cuda"],
        stages=list(STAGES),
    ),
}


@dataclass
class BenchManifest:
    """What one benchmark measures. Unknown keys raise :class:`ConfigError`."""

    name: str = "custom"
    sizes: list[int] = field(default_factory=lambda: [2000])  # subscriber counts, all backends
    gpu_only_sizes: list[int] = field(default_factory=list)  # measured on cuda only
    periods: int = 13
    repeats: int = 2  # timed runs per stage; the median is reported
    warmup: int = 1  # untimed runs per stage before the timed ones
    backends: list[str] = field(default_factory=lambda: list(KINDS))
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    seed: int = 0
    batch_size: int = 512
    hidden_size: int = 64
    k: int = 6  # KMeans clusters
    kmeans_n_init: int = 1
    hdbscan_max_rows: int = 200_000  # HDBSCAN sample: min(size, this) rows
    hdbscan_min_cluster_size: int = 200
    period_sweep: list[int] = field(default_factory=list)  # periods measured at one size
    period_sweep_size: int = 100_000  # subscriber count of the period sweep

    def points(self) -> list[tuple[int, int, bool]]:
        """(subscribers, periods, gpu only) of every world measured, sizes first, no repeats."""
        pts = [(s, self.periods, False) for s in self.sizes]
        pts += [(s, self.periods, True) for s in self.gpu_only_sizes]
        pts += [(self.period_sweep_size, t, False) for t in self.period_sweep]
        seen: set[tuple[int, int]] = set()
        return [p for p in pts if not (p[:2] in seen or seen.add(p[:2]))]


def _validate(m: BenchManifest) -> BenchManifest:
    if not m.sizes and not m.gpu_only_sizes:
        raise ConfigError("sizes: need at least one subscriber count")
    for key in ("sizes", "gpu_only_sizes"):
        for s in getattr(m, key):
            if s < 10:
                raise ConfigError(f"{key}: every size must be at least 10, got {s}")
    if m.periods < 8:
        raise ConfigError(f"periods: need at least 8, got {m.periods}")
    for t in m.period_sweep:
        if t < 8:
            raise ConfigError(f"period_sweep: every period count must be at least 8, got {t}")
    if m.period_sweep_size < 10:
        raise ConfigError(f"period_sweep_size: must be at least 10, got {m.period_sweep_size}")
    if m.repeats < 1:
        raise ConfigError(f"repeats: need at least 1, got {m.repeats}")
    if m.warmup < 0:
        raise ConfigError(f"warmup: must be >= 0, got {m.warmup}")
    for b in m.backends:
        if b not in KINDS:
            raise ConfigError(f"backends: unknown backend {b!r} (known: {', '.join(KINDS)})")
    for s in m.stages:
        if s not in STAGES:
            raise ConfigError(f"stages: unknown stage {s!r} (known: {', '.join(STAGES)})")
    for key in ("batch_size", "hidden_size", "k", "kmeans_n_init", "hdbscan_max_rows"):
        if getattr(m, key) < 1:
            raise ConfigError(f"{key}: must be >= 1, got {getattr(m, key)}")
    if m.hdbscan_min_cluster_size < 2:
        raise ConfigError("hdbscan_min_cluster_size: must be >= 2")
    return m


def manifest_from_dict(data: Any) -> BenchManifest:

    if not isinstance(data, dict):
        raise ConfigError(f"benchmark manifest must be a mapping, got {type(data).__name__}")
    return _validate(from_dict(BenchManifest, data))


def load_manifest(path_or_name: str | Path) -> BenchManifest:
    """``small``, ``full`` or a path to a YAML manifest."""
    text = str(path_or_name)
    if text in BUILTIN_PROFILES:
        path = PROFILES_DIR / f"{text}.yaml"
        if not path.is_file():
            return manifest_from_dict(dict(BUILTIN_PROFILES[text]))
    else:
        path = Path(text)
        if not path.is_file():
            known = ", ".join(BUILTIN_PROFILES)
            raise ConfigError(f"benchmark manifest {text!r}: no such file and not one of {known}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    try:
        return manifest_from_dict(data if data is not None else {})
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# Measurement helpers


class _Sampler:
    """Peak process RSS (and device-wide GPU use) sampled every ``interval`` s in a thread."""

    def __init__(self, gpu: bool, interval: float = 0.01):

        self.proc = psutil.Process()
        self.gpu, self.interval = gpu, interval
        self.rss_peak = self.rss_start = self.proc.memory_info().rss
        self.gpu_peak = self.gpu_start = self._gpu_used()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _gpu_used(self) -> int:
        if not self.gpu:
            return 0

        free, total = torch.cuda.mem_get_info()
        return total - free

    def _sample(self) -> None:
        self.rss_peak = max(self.rss_peak, self.proc.memory_info().rss)
        if self.gpu:
            self.gpu_peak = max(self.gpu_peak, self._gpu_used())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def _sync(gpu: bool) -> None:
    if gpu:
        torch.cuda.synchronize()


def _measure(fn: Callable[[], Any], gpu: bool, warmup: int, repeats: int) -> dict:
    """Run ``fn`` warmup + repeats times; median wall seconds of the timed runs and memory peaks."""

    for _ in range(warmup):
        fn()
        _sync(gpu)
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    times = []
    with _Sampler(gpu) as sampler:
        for _ in range(repeats):
            _sync(gpu)
            t0 = time.perf_counter()
            fn()
            _sync(gpu)
            times.append(time.perf_counter() - t0)
    mib = 1024.0**2
    out = dict(
        status="ok",
        seconds=statistics.median(times),
        seconds_all=times,
        rss_start_mb=sampler.rss_start / mib,
        rss_peak_mb=sampler.rss_peak / mib,
    )
    if gpu:
        out["torch_gpu_peak_mb"] = torch.cuda.max_memory_allocated() / mib
        out["gpu_used_peak_mb"] = sampler.gpu_peak / mib
        out["gpu_used_start_mb"] = sampler.gpu_start / mib
    return out


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _world(size: int, m: BenchManifest, out: Path, periods: int | None = None) -> Path:
    """The synthetic world for ``size`` x ``periods``, generated once and reused across runs."""

    periods = periods or m.periods
    cfg = SynthConfig(n_subscribers=size, n_periods=periods, seed=m.seed)
    d = out / "worlds" / f"n{size}_t{periods}_s{m.seed}"
    summary = d / "world.json"
    if summary.is_file():
        try:
            if json.loads(summary.read_text()).get("config") == dict(cfg.__dict__):
                return d
        except (OSError, ValueError):
            pass
    generate(cfg, d)
    return d


# ---------------------------------------------------------------------------------------------
# The stages


class _Run:
    """State for one (size, backend kind): panel, model, embeddings and labels between stages."""

    def __init__(
        self,
        size: int,
        kind: str,
        backend,
        world: Path,
        m: BenchManifest,
        out: Path,
        periods: int | None = None,
    ):
        self.size, self.kind, self.backend, self.world, self.m = size, kind, backend, world, m
        periods = periods or m.periods
        suffix = "" if periods == m.periods else f"_t{periods}"
        self.panel_dir = out / "panels" / f"n{size}{suffix}_{kind}"
        self.device = backend.torch_device
        self.gpu = backend.gpu
        self.panel = self.model = self.opt = self.data = None
        self.emb = self.labels = self.churn_prob = None

    # -- prepare -------------------------------------------------------------------------------
    def prepare(self) -> None:

        cfg = DataConfig(
            usage=str(self.world / "usage.parquet"),
            static=str(self.world / "static.parquet"),
            labels=str(self.world / "labels.parquet"),
        )
        prepare(cfg, self.backend, self.panel_dir)

    def ensure_panel(self) -> None:

        if self.panel is None:
            if not (self.panel_dir / "meta.json").is_file():
                self.prepare()
            self.panel = load_panel(self.panel_dir, mmap=False)

    # -- training --------------------------------------------------------------------------------
    def ensure_model(self) -> None:
        if self.model is not None:
            return
        self.ensure_panel()
        torch.manual_seed(self.m.seed)
        p = self.panel
        _, t, metrics = p.usage.shape
        model = SubscriberModel(
            metrics,
            p.static.shape[1],
            t,
            ModelConfig(encoder="gru", hidden_size=self.m.hidden_size),
        )
        churn = np.asarray(p.churn)
        labelled = np.flatnonzero(churn >= 0)
        model.set_normalization(**fit_normalization(p, labelled))
        self.model = model.to(self.device)
        tc = TrainConfig(batch_size=self.m.batch_size, seed=self.m.seed)
        self.train_cfg = tc
        self.amp = tc.amp
        self.losses = Losses.fit(
            churn[labelled], np.asarray(p.migration)[labelled], tc, self.device
        )
        self.opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        steps = math.ceil(len(labelled) / tc.batch_size) * (self.m.warmup + self.m.repeats)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(  # as train_model: one cycle over the
            self.opt,
            max_lr=tc.lr,
            total_steps=max(steps, 1),
            pct_start=0.15,  # epochs run here
        )
        self.data = to_device(p, self.device)
        gen = torch.Generator(device="cpu").manual_seed(self.m.seed)
        self.train_rows = torch.as_tensor(labelled, device=self.device)[
            torch.randperm(len(labelled), generator=gen).to(self.device)
        ]

    def train_epoch(self) -> None:
        """One epoch of :func:`gpuseg.training.step.train_epoch`, the function ``train_model``
        runs: the labelled rows in a seeded shuffled order, pos_weight, migration class weights,
        clipping, AdamW and the one-cycle schedule; the loss is read once, as in training."""
        total = step.train_epoch(
            self.model,
            self.model,
            self.data,
            self.train_rows,
            self.m.batch_size,
            self.losses,
            self.opt,
            self.sched,
            self.amp,
        )
        float(total)

    # -- embed -------------------------------------------------------------------------------
    def embed(self) -> None:

        out = predict(self.model, self.data, None, 4 * self.m.batch_size, self.amp)
        self.emb = out["embedding"].float().cpu().numpy()
        self.churn_prob = (1.0 / (1.0 + np.exp(-out["churn_logit"].float().cpu().numpy()))).astype(
            np.float64
        )

    def ensure_embeddings(self) -> None:
        self.ensure_model()
        if self.emb is None:
            self.embed()

    # -- clustering -----------------------------------------------------------------------------
    def kmeans(self) -> None:
        km = self.backend.kmeans(
            n_clusters=self.m.k, n_init=self.m.kmeans_n_init, random_state=self.m.seed, max_iter=300
        )
        km.fit(self.emb)
        self.labels = self.backend.to_numpy(km.labels_).astype(np.int64)

    def hdbscan_rows(self) -> int:
        return min(self.size, self.m.hdbscan_max_rows)

    def hdbscan(self) -> None:
        n = self.hdbscan_rows()
        rng = np.random.default_rng(self.m.seed)
        rows = np.sort(rng.choice(len(self.emb), size=n, replace=False))
        x = self.emb[rows]
        x = ((x - x.mean(0)) / (x.std(0) + 1e-6)).astype(np.float32)
        params: dict[str, Any] = dict(min_cluster_size=min(self.m.hdbscan_min_cluster_size, n))
        if self.backend.ml == "sklearn":
            params["copy"] = False  # x is this stage's own array; also silences a FutureWarning
        est = self.backend.hdbscan(**params)
        est.fit(x)
        self.backend.to_numpy(est.labels_)

    # -- report -------------------------------------------------------------------------------
    def report(self) -> None:

        if self.labels is None:
            self.kmeans()
        segment_profiles(self.panel, self.labels, self.churn_prob)

    def run_stage(self, stage: str) -> tuple[Callable[[], Any], int, dict]:
        """(the timed function, subscribers it processes, extra facts) after any set-up."""
        extra: dict[str, Any] = {}
        if stage == "prepare":
            return self.prepare, self.size, extra
        self.ensure_panel()
        if stage == "train_epoch":
            self.ensure_model()

            extra.update(
                batch_size=self.m.batch_size,
                hidden_size=self.m.hidden_size,
                encoder="gru",
                amp_bf16=bool(self.amp and self.gpu),
                forward_flops_per_subscriber=flops_per_subscriber(self.model),
            )
            return self.train_epoch, len(self.panel), extra
        if stage == "embed":
            self.ensure_model()
            return self.embed, len(self.panel), extra
        self.ensure_embeddings()
        if stage == "kmeans":
            extra.update(k=self.m.k, n_init=self.m.kmeans_n_init, rows=len(self.emb))
            return self.kmeans, len(self.emb), extra
        if stage == "hdbscan":
            n = self.hdbscan_rows()
            extra.update(rows=n, min_cluster_size=min(self.m.hdbscan_min_cluster_size, n))
            return self.hdbscan, n, extra
        if stage == "report":
            if self.labels is None:
                self.kmeans()
            extra.update(note="host code (numpy/pandas) on both backends")
            return self.report, len(self.panel), extra
        raise ConfigError(f"unknown stage {stage!r}")  # pragma: no cover


def _backend_for(kind: str) -> tuple[Any | None, Any | None, str]:
    """(full backend or None, torch-only backend or None, why RAPIDS/GPU is missing)."""

    if kind == "cpu":
        return resolve_backend("cpu"), resolve_backend("cpu"), ""
    if not cuda_available():
        return None, None, "no CUDA GPU (torch.cuda.is_available() is False)"
    try:
        return resolve_backend("cuda"), None, ""
    except BackendError as exc:
        torch_only = Backend("cuda", "pandas", "sklearn", ("bench: torch on cuda, no RAPIDS",))
        return None, torch_only, str(exc)


def run_bench(
    manifest_path_or_name: str | Path,
    out_dir: str | Path,
    device_kinds: tuple[str, ...] | list[str] = ("cpu", "cuda"),
    log: Callable[[str], None] | None = None,
) -> dict:
    """Run the benchmark manifest; write ``bench.json`` and ``bench.md`` to ``out_dir``.

    Returns the record written to ``bench.json``: ``meta`` (date, commit, environment, manifest)
    and ``results``, a list of one entry per (size, kind, stage) with ``status`` ``ok`` or
    ``skipped`` (``reason`` says why), median ``seconds``, ``subscribers_per_s`` and memory peaks.
    """

    m = load_manifest(manifest_path_or_name)
    for k in device_kinds:
        if k not in KINDS:
            raise ConfigError(f"device kind must be one of {', '.join(KINDS)}, not {k!r}")
    say = log or (lambda _msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 1)
    env = describe_environment()
    kinds = [k for k in KINDS if k in device_kinds and k in m.backends]
    backends = {k: _backend_for(k) for k in kinds}
    devices = {
        "cpu": f"{os.cpu_count()} CPU threads",
        "cuda": env["gpu"] if env["gpu"] != "none" else "none",
    }
    meta = dict(
        date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        git_commit=_git_commit(),
        seed=m.seed,
        manifest=dataclasses.asdict(m),
        manifest_source=str(manifest_path_or_name),
        environment=env,
        torch_threads=torch.get_num_threads(),
        devices={k: devices[k] for k in kinds},
        memory_notes=dict(
            rss_peak_mb="process resident set, sampled every 10 ms during the timed repeats",
            torch_gpu_peak_mb="torch.cuda.max_memory_allocated over the timed repeats (torch only)",
            gpu_used_peak_mb="device-wide used memory (torch.cuda.mem_get_info), sampled",
        ),
    )
    results: list[dict] = []
    for size, periods, gpu_only in m.points():
        world = None
        for kind in kinds:
            full, torch_only, why = backends[kind]

            def skip(
                stage: str, reason: str, kind: str = kind, size: int = size, periods: int = periods
            ) -> None:
                results.append(
                    dict(
                        size=size,
                        periods=periods,
                        kind=kind,
                        stage=stage,
                        status="skipped",
                        reason=reason,
                    )
                )

            if kind == "cpu" and gpu_only:
                for stage in m.stages:
                    skip(stage, "size is GPU-only in this manifest (gpu_only_sizes)")
                continue
            if full is None and torch_only is None:
                for stage in m.stages:
                    skip(stage, why)
                continue
            if world is None:
                say(f"world: {size} subscribers x {periods} periods")
                world = _world(size, m, out, periods)
            backend = full if full is not None else torch_only
            run = _Run(size, kind, backend, world, m, out, periods)
            for stage in m.stages:
                if full is None and stage in RAPIDS_STAGES:
                    skip(stage, f"RAPIDS unavailable: {why}")
                    continue
                say(f"{kind} {size} x {periods}: {stage}")
                fn, n_items, extra = run.run_stage(stage)
                rec = _measure(fn, backend.gpu, m.warmup, m.repeats)
                rec = dict(size=size, periods=periods, kind=kind, stage=stage, **rec)
                rec["items"] = n_items
                rec["subscribers_per_s"] = (
                    n_items / rec["seconds"] if rec["seconds"] > 0 else math.inf
                )
                rec["device"] = devices[kind]
                rec["backend"] = dict(device=backend.device, frames=backend.frames, ml=backend.ml)
                rec.update(extra)
                if stage == "train_epoch":
                    rec["achieved_flops_per_s"] = (
                        3 * extra["forward_flops_per_subscriber"] * n_items / rec["seconds"]
                    )
                results.append(rec)
            del run
            if kind == "cuda":
                torch.cuda.empty_cache()
    record = dict(meta=meta, results=results)
    (out / "bench.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    (out / "bench.md").write_text(bench_markdown(record))
    return record


# ---------------------------------------------------------------------------------------------
# Markdown


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def _si(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g}"


def bench_markdown(record: dict) -> str:
    """One table per stage: sizes down, CPU and GPU side by side, and GPU/CPU throughput."""
    meta, results = record["meta"], record["results"]
    env = meta["environment"]
    m = meta["manifest"]
    lines = [
        f"# gpuseg bench: {m['name']}",
        "",
        f"- date: {meta['date']}; commit: {meta['git_commit'] or 'unknown'}; seed: {meta['seed']}",
        f"- CPU: {meta['devices'].get('cpu', 'not run')} (torch threads {meta['torch_threads']}); "
        f"GPU: {env['gpu']}",
        f"- torch {env['torch']} (CUDA {env['torch_cuda']}), numpy {env['numpy']}, pandas "
        f"{env['pandas']}, scikit-learn {env['scikit-learn']}, cudf {env['cudf']}, "
        f"cuml {env['cuml']}",
        f"- {m['periods']} periods; median of {m['repeats']} timed runs after {m['warmup']} "
        f"warm-up; GRU hidden {m['hidden_size']}, batch {m['batch_size']}; KMeans k={m['k']}",
        "- peak RSS: process resident set sampled every 10 ms during the timed runs; GPU peak: "
        "torch.cuda.max_memory_allocated (torch allocator only)",
        "",
    ]
    default_t = m["periods"]
    by = {(r["stage"], r["size"], r.get("periods", default_t), r["kind"]): r for r in results}
    points = sorted({(r["size"], r.get("periods", default_t)) for r in results})
    stages = [s for s in STAGES if any(r["stage"] == s for r in results)]
    for stage in stages:
        lines += [f"## {stage}", ""]
        head = (
            "| subscribers x periods | CPU s | CPU subs/s | CPU peak RSS MiB | GPU s | GPU subs/s "
            "| GPU peak MiB (torch) | GPU/CPU throughput |"
        )
        if stage == "train_epoch":
            head += " CPU FLOP/s | GPU FLOP/s |"
        lines += [head, "|" + " --- |" * (head.count("|") - 1)]
        for size, periods in points:
            c = by.get((stage, size, periods, "cpu"))
            g = by.get((stage, size, periods, "cuda"))
            if c is None and g is None:
                continue
            c_ok = c is not None and c["status"] == "ok"
            g_ok = g is not None and g["status"] == "ok"
            c_cells = (
                [_fmt(c["seconds"]), _fmt(c["subscribers_per_s"]), _fmt(c["rss_peak_mb"])]
                if c_ok
                else ["n/a"] * 3
            )
            g_cells = (
                [
                    _fmt(g["seconds"]),
                    _fmt(g["subscribers_per_s"]),
                    _fmt(g.get("torch_gpu_peak_mb")),
                ]
                if g_ok
                else ["n/a"] * 3
            )
            ratio = (
                _fmt(g["subscribers_per_s"] / c["subscribers_per_s"]) if c_ok and g_ok else "n/a"
            )
            row = [f"{size:,} x {periods}", *c_cells, *g_cells, ratio]
            if stage == "train_epoch":
                row += [
                    _si(c["achieved_flops_per_s"]) if c_ok else "n/a",
                    _si(g["achieved_flops_per_s"]) if g_ok else "n/a",
                ]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    skipped = sorted({(r["kind"], r["reason"]) for r in results if r["status"] == "skipped"})
    if skipped:
        lines += ["## Skipped", ""]
        lines += [f"- {kind}: {reason}" for kind, reason in skipped]
        lines.append("")
    return "\n".join(lines)
