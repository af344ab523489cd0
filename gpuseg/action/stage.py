"""``gpuseg plan`` as one library call: read a run, estimate lifetime value and effects, plan.

Inputs found automatically in a synthetic run (``synth.campaigns: true``): the world's
``campaigns.parquet`` (the campaign table) and ``future.parquet`` (observed future revenue, for
the ZILN value head). Real runs name them: ``campaigns`` and ``future_revenue``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import torch

from gpuseg.action.features import PLAN_CHUNK, RunInputs, read_run, release_memory
from gpuseg.action.library import Library, load_library
from gpuseg.action.ltv import FIT_SAMPLE, LTVResult, estimate_ltv, unavailable_reason
from gpuseg.action.plan import PlanResult, make_plan
from gpuseg.action.uplift import (
    Campaigns,
    CrossFit,
    crossfit,
    qini_by_offer,
    read_campaigns,
    sample_campaigns,
)
from gpuseg.errors import ConfigError, DataError


@dataclass
class ActionRun:
    inputs: RunInputs
    library: Library
    ltv: LTVResult | None
    campaigns: Campaigns | None  # the tests the effects were learned from, else the table
    effects: CrossFit | None
    result: PlanResult
    horizon: int
    world: Path | None
    history: Campaigns | None = None  # the whole campaign table: the contact history
    qini: dict | None = None  # per offer: learned effects against churn risk (qini_by_offer)


def world_of(inputs: RunInputs) -> Path | None:
    synth = inputs.cfg.synth
    if synth is None or not synth.campaigns:
        return None
    return Path(synth.out_dir) if synth.out_dir else inputs.run_dir / "world"


def label_horizon(inputs: RunInputs) -> int:
    """Periods of the churn label window: synth.horizon, data.label_periods, else 8."""
    if inputs.cfg.synth is not None:
        return int(inputs.cfg.synth.horizon)
    if inputs.cfg.data.label_periods > 0:
        return int(inputs.cfg.data.label_periods)
    return 8


def plan_run(
    run_dir: str | Path,
    budget: float,
    offers: str | Path | None = None,
    campaigns: str | Path | None = None,
    future_revenue: str | Path | None = None,
    use_campaigns: bool = True,
    learner: str = "s",
    takeup: bool = True,
    seed: int = 0,
    device: str = "cpu",
    chunk: int = PLAN_CHUNK,
    fit_sample: int = FIT_SAMPLE,
    keep: str = "positive",
) -> ActionRun:
    """Everything ``gpuseg plan`` does, returned for printing, writing and measuring.

    Memory stays bounded at any number of subscribers: features, lifetime values, effects and
    options are computed ``chunk`` subscribers at a time, and the ZILN value head and the
    uplift learners are fitted on at most ``fit_sample`` subscribers (all of them below it, so
    a smaller run is planned exactly as a whole-run fit would). ``keep``: the options kept in
    ``result.options`` (``positive``: what the selection needs; ``all`` for evaluation)."""
    if fit_sample < 1:
        raise ConfigError(f"plan: fit sample must be >= 1 subscriber, got {fit_sample}")
    library = load_library(offers)
    inputs = read_run(run_dir)
    world = world_of(inputs)
    horizon = label_horizon(inputs)
    if campaigns is None and world is not None and (world / "campaigns.parquet").is_file():
        campaigns = world / "campaigns.parquet"
    if future_revenue is None and world is not None and (world / "future.parquet").is_file():
        future_revenue = world / "future.parquet"
    future = None
    if future_revenue is not None:
        p = Path(future_revenue)
        if not p.is_file():
            raise DataError(f"{p}: future revenue table not found")
        if p.suffix.lower() in (".parquet", ".pq"):  # only the columns the value head reads
            names = pq.read_schema(p).names
            cols = [c for c in (inputs.id_column, "future_revenue_disc") if c in names]
            future = pd.read_parquet(p, columns=cols)
        else:
            future = pd.read_csv(p)
    ltv = None
    if unavailable_reason(inputs.panel, inputs.cfg.data.revenue_metric) is None:
        ltv = estimate_ltv(
            inputs,
            horizon,
            library.horizon_months,
            library.discount_annual,
            future,
            seed=seed,
            device=device,
            fit_sample=fit_sample,
            chunk=chunk,
        )
    del future
    release_memory()
    camp = fitted = effects = None
    source = ""
    if campaigns is not None:
        camp = read_campaigns(campaigns, inputs.ids, inputs.id_column)
        if use_campaigns:
            fitted = sample_campaigns(camp, fit_sample, seed)
            effects = crossfit(
                inputs.features,
                fitted,
                list(library.channels),
                seed=seed,
                learner=learner,
                takeup=takeup,
                device=device,
            )
            source = f"{Path(campaigns).name}, {camp.counts['used']:,} tests, {learner}-learner"
            if effects.takeup:
                source += " with a take-up input (the table's accepted column)"
            if fitted is not camp:
                source += (
                    f", fitted on the {len(fitted.row):,} tests of a random sample of "
                    f"{fit_sample:,} subscribers, of {camp.counts['used']:,} tests in all (uplift "
                    "is learned better from more tests: a larger --fit-sample uses more of them, "
                    "at more memory)"
                )
            source += (
                f"; the effect models fit on the CPU and predict on {torch.device(device).type}"
            )
    result = make_plan(
        inputs, library, budget, ltv, horizon, effects, camp, source, chunk=chunk, keep=keep
    )
    if camp is not None and camp.counts["unknown_subscriber"]:
        result.summary["notes"].append(
            f"campaign table: {camp.counts['unknown_subscriber']:,} rows of subscribers not in "
            "the run left out"
        )
    learned_from = fitted if fitted is not None else camp
    qini = None
    if effects is not None:
        qini = qini_by_offer(fitted, effects.oof_uplift, inputs.churn_prob)
    return ActionRun(
        inputs, library, ltv, learned_from, effects, result, horizon, world, camp, qini
    )
