"""The contact plan: exact consent / do-not-disturb / frequency-cap exclusions on known
subscribers, dates outside do-not-disturb windows, the budget, the LP bound, priors without a
campaign table, no lifetime value without revenue, and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from gpuseg.action import contact
from gpuseg.action.library import load_library, parse_library
from gpuseg.action.plan import Options, greedy, lagrangian_bound, lp_bound
from gpuseg.action.stage import plan_run
from gpuseg.action.uplift import Campaigns
from gpuseg.backend import resolve_backend
from gpuseg.cli import app
from gpuseg.config import load_config
from gpuseg.errors import ConfigError
from gpuseg.pipeline.stages import run_pipeline

ROOT = Path(__file__).resolve().parent.parent
START = np.datetime64("2026-04-06", "D")


@pytest.fixture(scope="module")
def action_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("plan") / "run"
    cfg = load_config(
        ROOT / "configs" / "tiny.yaml", [f"out_dir={out}", "device=cpu", "synth.campaigns=true"]
    )
    run_pipeline(cfg, resolve_backend("cpu"))
    return out


def known_attributes() -> pd.DataFrame:
    """Ten subscribers with known consent, DND and windows."""
    t, f, na = True, False, pd.NA
    return pd.DataFrame(
        {
            "subscriber_id": [f"k{i}" for i in range(10)],
            "marketing_consent": pd.array([t, t, f, t, na, t, t, t, t, f], dtype="boolean"),
            "do_not_disturb": pd.array([f, f, f, t, f, na, f, f, f, f], dtype="boolean"),
            "consent_call": pd.array([t, f, t, t, t, t, na, t, t, t], dtype="boolean"),
            "consent_sms": pd.array([t, t, t, t, t, t, t, f, t, t], dtype="boolean"),
        }
    )


def test_channel_exclusions_are_exact():
    lib = load_library(ROOT / "configs" / "offers.yaml")
    attrs = known_attributes()
    # k8 had a call contact 10 days before the plan (cap: 1 per 30 days); k0 one 40 days before
    history = Campaigns(
        row=np.array([8, 0, 2]),
        offer=np.array(["device_upgrade"] * 3),
        channel=np.array(["call", "call", "call"]),
        treated=np.array([1, 1, 0], dtype=np.int8),  # k2's row is a control: not a contact
        retained=np.array([1, 1, 1], dtype=np.int8),
        date=np.array([START - 10, START - 40, START - 5]).astype("datetime64[D]"),
    )
    st = contact.channel_status(attrs, 10, lib, START, history)
    assert list(st["call"]) == [
        "",  # k0: the contact is 40 days old
        "no_channel_consent",  # k1
        "no_marketing_consent",  # k2 (its history row is a control)
        "do_not_disturb",  # k3
        "no_marketing_consent",  # k4: missing marketing consent counts as none
        "do_not_disturb",  # k5: missing DND counts as DND
        "no_channel_consent",  # k6: missing channel consent counts as none
        "",  # k7
        "frequency_cap",  # k8
        "no_marketing_consent",  # k9
    ]
    assert list(st["sms"]) == [
        "",
        "",
        "no_marketing_consent",
        "do_not_disturb",
        "no_marketing_consent",
        "do_not_disturb",
        "",
        "no_channel_consent",
        "",
        "no_marketing_consent",
    ]
    # email: the data set has no consent_email column -> nobody has e-mail consent
    assert set(st["email"]) == {"no_channel_consent"}
    # store: no consent column, marketing consent and DND still apply, no cap without contacts
    assert list(st["store"]) == [
        "",
        "",
        "no_marketing_consent",
        "do_not_disturb",
        "no_marketing_consent",
        "do_not_disturb",
        "",
        "",
        "",
        "no_marketing_consent",
    ]
    # a service action needs no marketing consent, but channel consent and DND still hold
    svc = contact.channel_status(attrs, 10, lib, START, history, service=True)
    assert list(svc["call"]) == [
        "",
        "no_channel_consent",
        "",
        "do_not_disturb",
        "",
        "do_not_disturb",
        "no_channel_consent",
        "",
        "frequency_cap",
        "",
    ]


def test_dates_avoid_dnd_windows():
    lo = np.full(4, START)
    hi = np.full(4, START + 27)
    nat = np.datetime64("NaT", "D")
    dnd_from = np.array([nat, START - 3, START, START], dtype="datetime64[D]")
    dnd_to = np.array([nat, START + 4, START + 30, START - 1], dtype="datetime64[D]")
    day = contact.first_free_day(lo, hi, dnd_from, dnd_to)
    assert day[0] == START and day[1] == START + 5 and np.isnat(day[2]) and day[3] == START
    lo, hi = contact.moment_windows("renewal", 2, START, 28, np.array([10.0, np.nan]), 7.0, [])
    assert lo[0] == START + 70 - 56 and lo[1] == START and hi[0] == START + 27
    lo, hi = contact.moment_windows("abnormal", 1, START, 28, None, 7.0, [])
    assert hi[0] == START + 2
    lo, hi = contact.moment_windows("any", 1, START, 28, None, 7.0, ["2026-04-20", "2027-01-01"])
    assert lo[0] == hi[0] == np.datetime64("2026-04-20")


def test_library_validation(tmp_path):
    raw = yaml.safe_load((ROOT / "configs" / "offers.yaml").read_text())
    lib = parse_library(raw)
    assert set(lib.offers) == {"device_upgrade", "family_bundle", "data_gift", "service_recovery"}
    assert lib.offers["service_recovery"].service and lib.channels["call"].capacity == 3000
    bad = {**raw, "offers": {**raw["offers"], "x": {**raw["offers"]["data_gift"], "colour": 1}}}
    with pytest.raises(ConfigError, match="offers.x.colour"):
        parse_library(bad)
    bad = {**raw, "offers": {"x": {**raw["offers"]["data_gift"], "channels": ["fax"]}}}
    with pytest.raises(ConfigError, match="unknown channel 'fax'"):
        parse_library(bad)
    bad = {**raw, "offers": {"x": {**raw["offers"]["data_gift"], "eligible": {"op": "eq"}}}}
    with pytest.raises(ConfigError, match="offers.x.eligible"):
        parse_library(bad)
    bad = {**raw, "channels": {**raw["channels"], "sms": {**raw["channels"]["sms"], "cost": -1}}}
    with pytest.raises(ConfigError, match="channels.sms.cost"):
        parse_library(bad)
    with pytest.raises(ConfigError, match="unknown key 'budget'"):
        parse_library({**raw, "budget": 5})


def random_options(seed: int, n: int = 12, per: int = 3) -> Options:
    rng = np.random.default_rng(seed)
    m = n * per
    cost = rng.uniform(1, 10, m)
    net = rng.normal(3, 4, m)
    return Options(
        row=np.repeat(np.arange(n), per),
        offer=np.zeros(m, np.int64),
        channel=rng.integers(0, 2, m),
        date=np.full(m, START),
        p0=np.zeros(m),
        p1=np.zeros(m),
        incremental=net + cost,
        cost=cost,
        net=net,
    )


@pytest.mark.parametrize("seed", range(6))
def test_greedy_feasible_and_below_bounds(seed):
    from itertools import product

    opts = random_options(seed, n=7, per=2)
    cap = np.array([3.0, np.inf])
    budget = 20.0
    chosen = greedy(opts, budget, cap, 7)
    assert opts.cost[chosen].sum() <= budget + 1e-9
    assert len(set(opts.row[chosen])) == len(chosen)
    assert (opts.channel[chosen] == 0).sum() <= 3
    total = opts.net[chosen].sum()
    # brute force the integer optimum: each subscriber takes option 0, 1 or none
    best = 0.0
    for pick in product((-1, 0, 1), repeat=7):
        idx = [2 * i + p for i, p in enumerate(pick) if p >= 0]
        if opts.cost[idx].sum() <= budget and (opts.channel[idx] == 0).sum() <= 3:
            best = max(best, opts.net[idx].sum())
    lp = lp_bound(opts, budget, cap, 7)
    lag = lagrangian_bound(opts, budget, cap, 7)
    assert total <= best + 1e-9 <= lp + 1e-6 <= lag + 1e-6


def test_greedy_by_blocks_chooses_the_same(monkeypatch):
    """The greedy walks its sorted options a block at a time: any block size, the same plan."""
    import gpuseg.action.plan as plan_mod

    opts = random_options(5, n=400, per=3)
    cap = np.array([60.0, np.inf])
    want = greedy(opts, 300.0, cap, 400)
    assert 10 < len(want) < 400
    for block in (1, 7, 64):
        monkeypatch.setattr(plan_mod, "GREEDY_BLOCK", block)
        np.testing.assert_array_equal(greedy(opts, 300.0, cap, 400), want)


def test_plan_respects_every_rule(action_run):
    a = plan_run(action_run, budget=1500.0)
    plan, skipped, s = a.result.plan, a.result.skipped, a.result.summary
    attrs = pd.read_parquet(action_run / "panel" / "attributes.parquet").set_index("subscriber_id")
    ids = pd.read_parquet(action_run / "panel" / "index.parquet").iloc[:, 0].astype(str)
    assert sorted(plan["subscriber_id"].tolist() + skipped["subscriber_id"].tolist()) == sorted(ids)
    assert plan["subscriber_id"].is_unique and len(plan) > 0
    assert plan["cost"].sum() <= 1500.0 + 1e-9 and s["spend"] <= 1500.0 + 1e-9
    assert (plan["expected_incremental_value"] > 0).all()
    lib = a.library
    for _, r in plan.iterrows():
        at = attrs.loc[r["subscriber_id"]]
        ch = lib.channels[r["channel"]]
        if ch.consent:
            assert at[ch.consent] is True or at[ch.consent] == 1
        if not lib.offers[r["offer"]].service:
            assert bool(at["marketing_consent"])
        assert not bool(at["do_not_disturb"])
        if pd.notna(at["dnd_from"]):
            assert not (at["dnd_from"] <= r["date"] <= at["dnd_to"])
        assert r["channel"] in lib.offers[r["offer"]].channels
    for c, count in plan["channel"].value_counts().items():
        cap = lib.channels[c].capacity
        assert cap is None or count <= cap
    assert s["expected_incremental_value"] <= s["bound"] + 1e-6
    assert s["effects"] == "campaign table" and s["ltv"] == "ziln"
    assert set(skipped["reason"]) <= {
        "no eligible offer",
        "no open channel (consent, do-not-disturb or frequency cap)",
        "do-not-disturb window covers every possible date",
        "no action with positive expected value",
        "budget or channel capacity reached",
    }


def test_priors_without_campaigns_and_no_ltv_without_revenue(action_run, tmp_path):
    a = plan_run(action_run, budget=500.0, use_campaigns=False)
    assert a.result.summary["effects"] == "offer-library priors"
    assert any("prior" in n and "no campaign table" in n for n in a.result.summary["notes"])
    # the table still serves as contact history: frequency caps are checked
    assert not any("frequency caps not checked" in n for n in a.result.summary["notes"])
    run = tmp_path / "run"
    shutil.copytree(action_run, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["data"]["revenue_metric"] = "no_such_metric"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    b = plan_run(run, budget=500.0)
    assert b.ltv is None
    assert any("lifetime value unavailable" in n for n in b.result.summary["notes"])
    assert b.result.summary["value_unit"] == "subscribers retained"
    assert b.result.plan["ltv"].isna().all()


def test_cli_plan(action_run, tmp_path):
    out = tmp_path / "plan.parquet"
    r = CliRunner().invoke(
        app, ["plan", str(action_run), "--budget", "800", "--priors", "-o", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert "offer-library" in r.output or "prior" in r.output
    assert out.is_file() and (tmp_path / "plan.skipped.parquet").is_file()
    # the report page gains the plan section; neither it nor plan.json holds an id
    html = (action_run / "report" / "report.html").read_text()
    assert '<section id="plan">' in html and html.count("<section") == html.count("</section>")
    summary = (action_run / "report" / "plan.json").read_text()
    ids = pd.read_parquet(action_run / "predictions.parquet").iloc[:, 0].astype(str)
    assert [i for i in ids if i in html or i in summary] == []
    # the four lifetime-value estimates' metrics, the customer-base baseline among them
    assert "customer_base:" in r.output
    lm = json.loads(summary)["ltv_metrics"]
    assert set(lm) == {"arpu_baseline", "hazard_value", "customer_base", "ziln"}
    r = CliRunner().invoke(app, ["plan", str(action_run), "-o", str(tmp_path / "p.txt")])
    assert r.exit_code == 1 and "must end in .parquet or .csv" in r.output


def test_chunked_plan_equals_whole(action_run):
    """Options, lifetime value and effects built 97 subscribers at a time give the plan of the
    one-chunk pass (1,200 subscribers), and keeping only positive options changes nothing."""
    whole = plan_run(action_run, budget=1500.0, keep="all")
    parts = plan_run(action_run, budget=1500.0, chunk=97)
    assert len(parts.inputs.ids) > 10 * 97
    pd.testing.assert_frame_equal(whole.result.plan, parts.result.plan)
    pd.testing.assert_frame_equal(whole.result.skipped, parts.result.skipped)
    np.testing.assert_array_equal(whole.ltv.value, parts.ltv.value)
    for name in ("customer_base", "arpu_baseline"):
        np.testing.assert_array_equal(whole.ltv.estimates[name], parts.ltv.estimates[name])
    sw, sp = whole.result.summary, parts.result.summary
    for key in ("per_offer", "per_channel", "per_segment", "skipped", "channel_exclusions"):
        assert sw[key] == sp[key], key
    assert sw["bound"] == pytest.approx(sp["bound"], rel=1e-6)
    ow, op = whole.result.options, parts.result.options
    assert sp["options"] == int((ow.net > 0).sum()) < len(ow.net)
    assert (op.net > 0).all() and op.row.dtype == np.int32 and op.net.dtype == np.float32
    assert op.offer.dtype == np.int8 and op.channel.dtype == np.int8


def test_ltv_and_uplift_fit_on_a_sample_above_its_size(action_run):
    from gpuseg.action.features import read_run, take_rows
    from gpuseg.action.ltv import estimate_ltv
    from gpuseg.action.uplift import read_campaigns, sample_campaigns

    inputs = read_run(action_run)
    world = action_run / "world"
    future = pd.read_parquet(world / "future.parquet")
    n = len(inputs.ids)
    full = estimate_ltv(inputs, 4, future=future)
    assert full.metrics["ziln"]["n"] == n and "sample" not in full.notes[-1]
    same = estimate_ltv(inputs, 4, future=future, fit_sample=n, chunk=300)
    np.testing.assert_array_equal(full.value, same.value)
    part = estimate_ltv(inputs, 4, future=future, fit_sample=400, chunk=300)
    assert part.metrics["ziln"]["n"] == 400 and "random sample of 1,200" in part.notes[-1]
    assert np.isfinite(part.value).all() and (part.value >= 0).all()
    assert not np.array_equal(part.value, full.value)
    # the ZILN value still ranks revenue: Gini well above zero on its out-of-fold sample
    assert part.metrics["ziln"]["gini"] > 0.3
    base = full.estimates["customer_base"]
    assert (
        np.isfinite(base).all() and (base >= 0).all() and full.metrics["customer_base"]["gini"] > 0
    )
    camp = read_campaigns(world / "campaigns.parquet", inputs.ids, inputs.id_column)
    assert sample_campaigns(camp, n) is camp
    few = sample_campaigns(camp, 300, seed=1)
    assert len(np.unique(few.row)) == 300 and set(few.row) <= set(camp.row)
    # every test of a sampled subscriber is kept
    assert len(few.row) == int(np.isin(camp.row, few.row).sum())
    rows = np.array([n - 1, 0, 5, 5, 700])
    np.testing.assert_array_equal(take_rows(inputs.features, rows, block=64), inputs.features[rows])


def test_skipped_frame_is_the_pandas_frame_and_file(tmp_path):
    """The skipped table built block by block from reason codes is the frame (and the Parquet
    file) that ``pd.DataFrame({id: ids[~planned], "reason": pd.Categorical(reasons)})`` gives."""
    import pyarrow.parquet as pq

    from gpuseg.action.plan import SKIP_REASONS, skipped_frame

    rng = np.random.default_rng(3)
    n = 1_000
    ids = np.array([f"S{i:0{1 + i % 5}d}" + ("é" if i % 7 == 0 else "") for i in range(n)])
    planned = rng.random(n) < 0.3
    why = np.where(planned, 0, rng.choice([1, 2, 4, 5], n)).astype(np.int8)  # 3 never occurs
    old = pd.DataFrame(
        {
            "subscriber_id": ids[~planned],
            "reason": pd.Categorical(np.array(SKIP_REASONS, dtype=object)[why[~planned]]),
        }
    )
    for block in (1, 7, 64, n, 10 * n):
        new = skipped_frame(ids, planned, why, "subscriber_id", block=block)
        pd.testing.assert_frame_equal(new, old)
    assert list(new["reason"].cat.categories) == sorted(SKIP_REASONS[i] for i in (1, 2, 4, 5))
    old.to_parquet(tmp_path / "old.parquet", index=False)
    new.to_parquet(tmp_path / "new.parquet", index=False)
    a, b = pq.read_table(tmp_path / "old.parquet"), pq.read_table(tmp_path / "new.parquet")
    assert a.equals(b, check_metadata=True)
    none = skipped_frame(ids, np.ones(n, bool), np.zeros(n, np.int8), "subscriber_id")
    assert len(none) == 0 and list(none.columns) == ["subscriber_id", "reason"]
    with pytest.raises(ConfigError, match="block size"):
        skipped_frame(ids, planned, why, "subscriber_id", block=0)


def test_compact_attributes_decode_to_the_same_frame():
    """Text attributes held as int8 dictionaries read back as the table and pandas frame they
    were (nulls, several chunks); a column with many distinct values stays as it is."""
    import pyarrow as pa

    from gpuseg.action.features import compact_attributes, decoded

    part = pa.table(
        {
            "plan_type": pa.array(["prepaid", "postpaid", None, "prepaid"], pa.large_string()),
            "region": pa.array(["n", "s", "e", "w"], pa.string()),
            "note": pa.array([f"x{i}" for i in range(4)], pa.large_string()),
            "tenure": [1.0, 2.0, None, 4.0],
        }
    )
    table = pa.concat_tables([part, part.slice(1, 2)])
    wide = pa.table({"note": [f"n{i}" for i in range(300)]})
    small, types = compact_attributes(table)
    assert set(types) == {"plan_type", "region", "note"}
    assert pa.types.is_dictionary(small.schema.field("plan_type").type)
    assert small.schema.field("plan_type").type.index_type == pa.int8()
    assert decoded(small, types).equals(table)
    pd.testing.assert_frame_equal(
        decoded(small.slice(2, 3), types).to_pandas(), table.slice(2, 3).to_pandas()
    )
    kept, none = compact_attributes(wide)
    assert none == {} and kept.equals(wide)


def test_plan_says_when_effects_used_the_take_up_input(action_run, tmp_path):
    """The world's campaign table has an accepted column: the effects use it by default and
    the plan's note says so; --no-takeup plans without it."""
    with_tu = plan_run(action_run, budget=800.0)
    assert with_tu.effects.takeup
    assert any("take-up input" in n for n in with_tu.result.summary["notes"])
    out = tmp_path / "plan.parquet"
    r = CliRunner().invoke(
        app, ["plan", str(action_run), "--budget", "800", "--no-takeup", "-o", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert "s-learner" in r.output and "take-up input" not in r.output
    assert "predict on cpu" in r.output
    # each offer of the table: its learned effects' Qini against the risk ranking's
    html = (action_run / "report" / "report.html").read_text()
    for offer in np.unique(with_tu.campaigns.offer):
        assert f"effects of {offer}: Qini" in r.output
        # and the report's Qini caption says the same verdict
        assert f"{offer}: " in html and "the learned effects are " in html


def test_a_sampled_uplift_fit_says_how_to_use_every_test(action_run):
    a = plan_run(action_run, budget=500.0, fit_sample=600)
    source = next(n for n in a.result.summary["notes"] if n.startswith("effects: learned"))
    assert "random sample of 600 subscribers" in source and "--fit-sample" in source
    assert len(a.campaigns.row) < a.history.counts["used"]
    assert f"of {a.history.counts['used']:,} tests in all" in source
