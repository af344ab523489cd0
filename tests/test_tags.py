"""Tag rules (parsing, evaluation) and key-moment flags, on hand-made frames and a tiny world."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from gpuseg.backend import resolve_backend
from gpuseg.config import DataConfig, KeyMomentConfig, SynthConfig, TagsConfig, from_dict
from gpuseg.data.panel import Panel, load_attributes, load_panel
from gpuseg.data.prepare import prepare
from gpuseg.data.synth import generate
from gpuseg.errors import ConfigError
from gpuseg.segment.tags import (
    DEFAULT_RULES,
    apply_tags,
    build_tag_frame,
    first_use,
    key_moments,
    load_tag_rules,
    parse_tag_rules,
    spike,
    tag_subscribers,
)

METRICS = [
    "data_mb",
    "voice_min",
    "sms",
    "roaming_mb",
    "revenue",
    "support_contacts",
    "dropped_calls",
]


def make_panel(
    usage: np.ndarray, mask: np.ndarray | None = None, metrics: list[str] = METRICS
) -> Panel:
    n, t, _ = usage.shape
    return Panel(
        usage=usage.astype(np.float32),
        mask=np.ones((n, t), bool) if mask is None else mask,
        static=np.zeros((n, 0), np.float32),
        churn=np.full(n, -1, np.int8),
        migration=np.full(n, -1, np.int8),
        ids=np.array([f"S{i:03d}" for i in range(n)]),
        meta=dict(
            metrics=metrics,
            periods=[str(np.datetime64("2026-01-05") + 7 * i) for i in range(t)],
            revenue_metric="revenue",
            id_column="subscriber_id",
        ),
    )


def base_usage(n: int, t: int) -> np.ndarray:
    u = np.zeros((n, t, len(METRICS)))
    u[..., 0], u[..., 1], u[..., 2], u[..., 3], u[..., 4] = 3000.0, 100.0, 10.0, 5.0, 10.0
    return u


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "value_level": pd.Categorical(
                ["low", "vip", "high", "premium", "mid"],
                categories=["low", "mid", "high", "premium", "vip"],
                ordered=True,
            ),
            "group": pd.Categorical(["a", "b", "a", "c", "b"]),
            "churn_prob": [0.1, 0.9, np.nan, 0.5, 0.3],
            "usage_change": [0.0, -0.5, -0.1, 0.3, -0.35],
            "flag": [True, False, True, False, True],
            "count": [0, 2, 1, np.nan, 5],
            "region": ["north", "south", None, "north", "east"],
        },
        index=pd.Index([f"S{i}" for i in range(5)], name="subscriber_id"),
    )


def rules(**tags) -> dict:
    return {"tags": {name: {"when": when} for name, when in tags.items()}}


# ---------------------------------------------------------------------------------------------
# Evaluation


def test_ops_on_hand_made_frame(frame):
    out = apply_tags(
        frame,
        rules(
            vip={"column": "value_level", "op": "in", "value": ["vip"]},
            top={"column": "value_level", "op": ">=", "value": "premium"},
            hot={"column": "churn_prob", "op": "gt", "value": 0.4},
            cold={"column": "churn_prob", "op": "lt", "value": 0.4},
            mid={"column": "churn_prob", "op": "between", "value": [0.3, 0.5]},
            flag={"column": "flag", "op": "is_true"},
            noflag={"column": "flag", "op": "is_false"},
            counted={"column": "count", "op": "is_true"},
            nocount={"column": "count", "op": "is_null"},
            not_north={"column": "region", "op": "ne", "value": "north"},
            outside={"column": "region", "op": "not_in", "value": ["north", "east"]},
            group_b={"column": "group", "op": "eq", "value": "b"},
        ),
    )
    assert out.index.equals(frame.index) and all(dt == np.dtype(bool) for dt in out.dtypes)
    expect = {
        "vip": [0, 1, 0, 0, 0],
        "top": [0, 1, 0, 1, 0],
        "hot": [0, 1, 0, 1, 0],
        "cold": [1, 0, 0, 0, 1],  # NaN matches neither side
        "mid": [0, 0, 0, 1, 1],
        "flag": [1, 0, 1, 0, 1],
        "noflag": [0, 1, 0, 1, 0],
        "counted": [0, 1, 1, 0, 1],  # NaN is neither true nor false
        "nocount": [0, 0, 0, 1, 0],
        "not_north": [0, 1, 0, 0, 1],  # missing region never matches
        "outside": [0, 1, 0, 0, 0],
        "group_b": [0, 1, 0, 0, 1],
    }
    for name, values in expect.items():
        assert out[name].tolist() == [bool(v) for v in values], name


def test_combinators_and_tag_references(frame):
    out = apply_tags(
        frame,
        rules(
            warning={
                "any": [
                    {"column": "churn_prob", "op": "ge", "value": 0.5},
                    {"column": "usage_change", "op": "le", "value": -0.3},
                ]
            },
            valuable={"column": "value_level", "op": "ge", "value": "high"},
            retain={"all": [{"tag": "valuable"}, {"tag": "warning"}]},
            calm={"not": {"tag": "warning"}},
        ),
    )
    assert out["warning"].tolist() == [False, True, False, True, True]
    assert out["retain"].tolist() == [False, True, False, True, False]
    assert out["calm"].tolist() == [True, False, True, False, False]
    assert list(out.columns) == ["warning", "valuable", "retain", "calm"]


def test_missing_columns_optional_and_required(frame):
    out = apply_tags(
        frame,
        rules(
            x={
                "any": [
                    {"column": "absent", "op": "is_true", "optional": True},
                    {"column": "flag", "op": "is_true"},
                ]
            }
        ),
    )
    assert out["x"].tolist() == frame["flag"].tolist()
    assert any("absent" in n for n in out.attrs["notes"])
    with pytest.raises(ConfigError, match="'absent'"):
        apply_tags(frame, rules(x={"column": "absent", "op": "is_true"}))


def test_bad_values_against_the_frame(frame):
    with pytest.raises(ConfigError, match="'VIP' is not a value of 'value_level'"):
        apply_tags(frame, rules(x={"column": "value_level", "op": "in", "value": ["VIP"]}))
    with pytest.raises(ConfigError, match="no order"):
        apply_tags(frame, rules(x={"column": "group", "op": "gt", "value": "a"}))
    with pytest.raises(ConfigError, match="numeric"):
        apply_tags(frame, rules(x={"column": "region", "op": "gt", "value": 1}))
    with pytest.raises(ConfigError, match="boolean"):
        apply_tags(frame, rules(x={"column": "region", "op": "is_true"}))


# ---------------------------------------------------------------------------------------------
# Parsing


@pytest.mark.parametrize(
    "data, match",
    [
        ({"tags": {"a": {"when": {"colum": "x", "op": "eq", "value": 1}}}}, "tags.a.when.colum"),
        ({"tags": {"a": {"when": {"column": "x", "op": "like", "value": 1}}}}, "unknown op 'like'"),
        (
            {"tags": {"a": {"when": {"column": "x", "op": "eval", "value": "1"}}}},
            "unknown op 'eval'",
        ),
        ({"tags": {"a": {"wen": {"column": "x", "op": "is_true"}}}}, "tags.a.wen"),
        ({"tags": {"a": {"kind": "sometimes", "when": {"column": "x", "op": "is_true"}}}}, "kind"),
        ({"rules": {}}, "unknown key 'rules'"),
        ({"tags": {"a": {"when": {"column": "x", "op": "in", "value": "vip"}}}}, "list"),
        ({"tags": {"a": {"when": {"column": "x", "op": "is_true", "value": 1}}}}, "takes no value"),
        ({"tags": {"a": {"when": {"column": "x", "op": "gt"}}}}, "needs a 'value'"),
        ({"tags": {"a": {"when": {"column": "x", "op": "between", "value": [3, 1]}}}}, "between"),
        ({"tags": {"a": {"when": {"any": []}}}}, "non-empty list"),
        (
            {"tags": {"a": {"when": {"all": [{"column": "x", "op": "is_true"}], "op": "x"}}}},
            "tags.a.when.op",
        ),
        (
            {
                "tags": {
                    "a": {"when": {"tag": "b"}},
                    "b": {"when": {"column": "x", "op": "is_true"}},
                }
            },
            "'b' is not a tag declared above",
        ),
        (
            {"tags": {"a": {"when": {"any": [{"column": "x", "op": "is_true", "optionl": True}]}}}},
            r"tags.a.when.any\[0\].optionl",
        ),
    ],
)
def test_rule_errors_name_the_key(data, match):
    with pytest.raises(ConfigError, match=match):
        parse_tag_rules(data)


def test_load_tag_rules_file(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(rules(a={"column": "x", "op": "is_true"})))
    assert load_tag_rules(path).names == ("a",)
    path.write_text("tags: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_tag_rules(path)
    with pytest.raises(ConfigError, match="not found"):
        load_tag_rules(tmp_path / "missing.yaml")
    path.write_text(
        yaml.safe_dump({"tags": {"a": {"when": {"column": "x", "op": "eq", "valu": 1}}}})
    )
    with pytest.raises(ConfigError, match=f"{path}.*tags.a.when.valu"):
        load_tag_rules(path)


def test_shipped_rules_parse():
    shipped = load_tag_rules()
    assert DEFAULT_RULES.name == "tags.yaml"
    assert {"vip", "churn_warning", "loyal", "do_not_contact", "first_use"} <= set(shipped.names)
    kinds = {r.name: r.kind for r in shipped.rules}
    assert kinds["vip"] == "static" and kinds["churn_warning"] == "dynamic"


# ---------------------------------------------------------------------------------------------
# Key moments


def test_first_use_and_spike_kernels():
    mask = np.ones((4, 10), bool)
    x = np.zeros((4, 10))
    x[0, 6:] = 1.0  # 6 zero periods then use: a first use
    x[1, 2:] = 1.0  # only 2 zeros before: too few
    x[2, :] = 1.0  # used from the start
    x[3, 8] = 1.0
    mask[3, :5] = False  # 3 present zero periods before the use (5..7): too few with min 4
    assert first_use(x, mask, 4).tolist() == [True, False, False, False]
    assert first_use(x, mask, 3).tolist() == [True, False, False, True]

    d = np.ones((3, 12))
    d[0, -4:] = 5.0  # 1 -> 5 per period
    d[1, -4:] = 1.5  # 20 events but only 1.5x the baseline
    d[2, :] = 0.0
    d[2, -1] = 2.0  # from nothing, but only 2 events
    assert spike(d, np.ones((3, 12), bool), 4, 2.0, 3.0).tolist() == [True, False, False]


def test_key_moments_hand_built():
    t = 12
    u = base_usage(6, t)
    u[0, :6, 3] = 0.0  # roaming starts at period 6: first use
    u[1, -4:, :3] *= 0.5  # usage halves: usage drop
    u[2, :, 6] = 1.0
    u[2, -4:, 6] = 4.0  # dropped calls spike
    u[3, -4:, 5] = 1.0  # 4 support contacts from none: complaint spike
    u[4, -4:, 5] = [1.0, 0.0, 1.0, 0.0]  # 2 contacts: below min events
    attrs = pd.DataFrame(
        {
            "subscriber_id": [f"S{i:03d}" for i in range(6)],
            "weeks_to_contract_end": [np.nan, 10.0, 8.0, 0.0, -1.0, 3.0],
            "marketing_consent": [True, False, True, None, True, True],
            "do_not_disturb": [False, False, True, False, None, False],
        }
    )
    km = key_moments(make_panel(u), attrs)
    assert km.index.tolist() == [f"S{i:03d}" for i in range(6)]
    assert km["first_use_roaming_mb"].tolist() == [True, False, False, False, False, False]
    assert km["first_use"].tolist() == km["first_use_roaming_mb"].tolist()
    assert km["usage_drop"].tolist() == [False, True, False, False, False, False]
    assert km["failure_spike"].tolist() == [False, False, True, False, False, False]
    assert km["complaint_spike"].tolist() == [False, False, False, True, False, False]
    assert km["abnormal_moment"].tolist() == [False, True, True, True, False, False]
    assert km["contract_end_approaching"].tolist() == [False, False, True, True, False, True]
    # missing consent counts as no consent, missing DND as do-not-disturb
    assert km["no_marketing_consent"].tolist() == [False, True, False, True, False, False]
    assert km["do_not_disturb"].tolist() == [False, False, True, False, True, False]
    assert km["contactable"].tolist() == [True, False, False, False, False, True]
    assert km.attrs["notes"] == []


def test_key_moments_degrade_without_inputs():
    u = base_usage(3, 10)[..., [0, 1, 4]]
    km = key_moments(
        make_panel(u, metrics=["data_mb", "voice_min", "revenue"]),
        None,
        KeyMomentConfig(first_use_metrics=["data_mb", "roaming_mb"]),
    )
    assert list(km.columns) == ["first_use_data_mb", "first_use", "usage_drop", "abnormal_moment"]
    notes = " | ".join(km.attrs["notes"])
    for word in (
        "roaming_mb",
        "dropped_calls",
        "support_contacts",
        "weeks_to_contract_end",
        "do_not_disturb",
        "marketing_consent",
    ):
        assert word in notes


# ---------------------------------------------------------------------------------------------
# The shipped rules on a tiny world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    generate(SynthConfig(n_subscribers=2000, n_periods=26, seed=5), root / "w")
    cfg = DataConfig(usage=str(root / "w/usage.parquet"), static=str(root / "w/static.parquet"))
    prepare(cfg, resolve_backend("cpu"), root / "p")
    truth = pd.read_parquet(root / "w/truth.parquet").set_index("subscriber_id")
    return load_panel(root / "p"), load_attributes(root / "p"), truth


def test_shipped_tags_on_world(world):
    panel, attrs, truth = world
    prob = truth.loc[panel.ids, "churn_prob"].to_numpy()
    frame = build_tag_frame(panel, attrs, churn_prob=prob)
    tags = apply_tags(frame, load_tag_rules())
    assert len(tags) == len(panel) and tags.index.equals(frame.index)
    a = attrs.set_index("subscriber_id").loc[tags.index]
    assert (tags["do_not_contact"] == (a["do_not_disturb"] | ~a["marketing_consent"])).all()
    assert (tags["vip"] == (frame["value_level"] == "vip")).all() and tags["vip"].sum() == 40
    assert (tags["high_value"] == frame["value_level"].isin(["premium", "vip"])).all()
    weeks = a["weeks_to_contract_end"]
    assert (tags["contract_renewal"] == ((weeks >= 0) & (weeks <= 8))).all()
    warn = (frame["churn_prob"] >= 0.5) | (frame["usage_change"] <= -0.3)
    assert (tags["churn_warning"] == warn).all()
    assert (tags["retain_now"] <= tags["high_value"]).all()
    assert tags.attrs["notes"] == []
    # abnormal moments carry real churn risk in the synthetic world
    ab = tags["abnormal_moment"].to_numpy()
    assert 0 < ab.sum() < len(ab) and prob[ab].mean() > 1.3 * prob[~ab].mean()
    assert ab.mean() < 0.1  # a moment, not a third of the base
    both = frame["failure_spike"] & frame["complaint_spike"]
    assert (tags["abnormal_moment"] == ((frame["usage_change"] <= -0.5) | both)).all()


def test_tag_subscribers_without_churn_prob_or_dnd(world, tmp_path):
    panel, attrs, _ = world
    tags = tag_subscribers(panel, attrs.drop(columns=["do_not_disturb"]))
    notes = " | ".join(tags.attrs["notes"])
    assert "churn_prob" in notes and "do_not_disturb" in notes
    assert (tags["do_not_contact"] == ~attrs["marketing_consent"].to_numpy()).all()
    custom = tmp_path / "mine.yaml"
    custom.write_text(
        yaml.safe_dump(rules(prepaid={"column": "plan_type", "op": "eq", "value": "prepaid"}))
    )
    mine = tag_subscribers(panel, attrs, tags_cfg=TagsConfig(rules=str(custom)))
    assert list(mine.columns) == ["prepaid"]
    assert (mine["prepaid"].to_numpy() == (attrs["plan_type"] == "prepaid").to_numpy()).all()


def test_tags_config_loads_from_dict():
    cfg = from_dict(TagsConfig, {"rules": "x.yaml", "moments": {"spike_factor": 3}})
    assert cfg.moments.spike_factor == 3.0 and cfg.rules == "x.yaml"
    with pytest.raises(ConfigError, match="moments.spike"):
        from_dict(TagsConfig, {"moments": {"spike": 3}})


def test_tag_rule_file_with_yaml_aliases_is_refused(tmp_path):
    """Rule files are read like configs: anchors/aliases (the YAML bomb's tool) are refused."""
    path = tmp_path / "tags.yaml"
    path.write_text("a: &x [1, 2]\nb: *x\n")
    with pytest.raises(ConfigError, match="anchors and aliases"):
        load_tag_rules(path)
