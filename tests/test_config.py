"""Run configuration: YAML loading, overrides, one-line errors naming the key, round trips."""

from __future__ import annotations

import dataclasses

import pytest

from gpuseg.config import (
    ClusterConfig,
    DataConfig,
    RunConfig,
    SynthConfig,
    TrainConfig,
    apply_overrides,
    from_dict,
    load_config,
    parse_override,
    save_config,
    to_dict,
)
from gpuseg.errors import ConfigError

TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)}


def config_error(*expected: str, path=None, overrides=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    msg = str(info.value)
    assert "\n" not in msg, msg
    for part in expected:
        assert part in msg, f"{part!r} not in {msg!r}"
    return msg


def test_defaults():
    cfg = load_config()
    assert cfg == RunConfig()
    assert cfg.synth is None and cfg.train.epochs == 20 and cfg.model.encoder == "gru"


def test_load_yaml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "name: t\n"
        "device: cpu\n"
        "synth:\n  n_subscribers: 300\n  start: 2026-02-02\n"  # unquoted date: YAML reads a date
        "data:\n  metrics: {revenue: arpu}\n  static_columns: [age]\n"
        "model: {encoder: lstm, hidden_size: 16}\n"
        # 1e-3 is a string in YAML 1.1; 2 is an int given for a float
        "train: {epochs: 5, lr: 1e-3, pos_weight: 2}\n"
        "cluster: {k: 4}\n"
    )
    cfg = load_config(path)
    assert cfg.name == "t" and cfg.device == "cpu"
    assert cfg.synth == SynthConfig(n_subscribers=300, start="2026-02-02")
    assert cfg.data.metrics == {"revenue": "arpu"} and cfg.data.static_columns == ["age"]
    assert cfg.model.encoder == "lstm" and cfg.model.hidden_size == 16
    assert cfg.train.epochs == 5 and cfg.train.lr == pytest.approx(1e-3)
    assert cfg.train.pos_weight == 2.0 and isinstance(cfg.train.pos_weight, float)
    assert cfg.cluster.k == 4


def test_empty_yaml_is_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == RunConfig()


def test_overrides():
    cfg = load_config(
        overrides=["train.epochs=3", "model.encoder=tcn", "cluster.k=null", "data.usage=u.parquet"]
    )
    assert cfg.train.epochs == 3 and cfg.model.encoder == "tcn" and cfg.cluster.k is None
    assert cfg.data.usage == "u.parquet"
    cfg = load_config(overrides=["synth.seed=7", "train.lr=5E-4", "train.amp=false"])
    assert cfg.synth == SynthConfig(seed=7)  # an override can create an absent section
    assert cfg.train.lr == pytest.approx(5e-4) and cfg.train.amp is False


def test_overrides_beat_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  epochs: 5\n  batch_size: 64\n")
    cfg = load_config(path, ["train.epochs=3"])
    assert cfg.train.epochs == 3 and cfg.train.batch_size == 64


def test_unknown_key_names_it(tmp_path):
    msg = config_error("'train.epoch'", overrides=["train.epoch=3"])
    assert "epochs" in msg  # the known keys are listed
    config_error("'nosuch'", overrides=["nosuch=1"])
    config_error("'segments.stability.tenure'", overrides=["segments.stability.tenure=1"])
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  hiden_size: 8\n")
    config_error("run.yaml", "'model.hiden_size'", path=path)


def test_non_string_yaml_keys(tmp_path):
    """YAML 1.1 reads `on:` as True and `1:` as an int; mixed with str keys they must not crash."""
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  on: 1\n  epoch: 2\n  3: x\n")
    config_error("run.yaml", "unknown key", path=path)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.epochs=abc", "train.epochs"),
        ("train.epochs=2.5", "train.epochs"),
        ("train.epochs=true", "train.epochs"),
        ("train.lr=fast", "train.lr"),
        ("train.amp=maybe", "train.amp"),
        ("model.encoder=rnn", "model.encoder"),
        ("name=[1, 2]", "name"),
        ("data.metrics=[a]", "data.metrics"),
        ("data.static_columns=age", "data.static_columns"),
        ("segments.value_quantiles=[0.5, x]", "segments.value_quantiles[1]"),
        ("train=5", "train"),
        ("cluster.k=many", "cluster.k"),
        ("model.wide_bins=-1", "model.wide_bins"),  # the right type, out of range
        ("model.last_level_periods=-4", "model.last_level_periods"),
        ("model.wide_bins_churn=some", "model.wide_bins_churn"),  # true, false or static
    ],
)
def test_wrong_type_names_key(override, expected):
    config_error(f"{expected}:", overrides=[override])


def test_override_syntax_errors(tmp_path):
    config_error("must look like", overrides=["train.epochs"])
    config_error("names no key", overrides=["=3"])
    config_error("not valid YAML", overrides=["train.epochs=[1"])  # YAML's own error is 4 lines
    config_error("name:", "expected a string", overrides=["name.x=1"])
    path = tmp_path / "run.yaml"
    path.write_text("name: t\n")
    config_error("'name' is not a section", path=path, overrides=["name.x=1"])


def test_config_file_errors(tmp_path):
    config_error("nope.yaml", "not found", path=tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: [1\n")
    config_error("bad.yaml", "line", "invalid YAML", path=bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    config_error("list.yaml", "mapping", path=top)


def test_save_config_round_trip(tmp_path):
    cfg = load_config(
        overrides=[
            "synth.n_subscribers=500",
            "train.epochs=3",
            "train.pos_weight=2.5",
            "data.metrics={revenue: arpu}",
            "data.static=s.parquet",
            "cluster.algorithm=hdbscan",
            "segments.value_levels=[a, b, c]",
            "segments.value_quantiles=[0.3, 0.6]",
            "name=2026-01-01",
        ]
    )
    path = tmp_path / "config.yaml"
    save_config(cfg, path)
    again = load_config(path)
    assert again == cfg
    assert to_dict(again) == to_dict(cfg)
    assert again.name == "2026-01-01"  # dumped quoted, read back as a string
    save_config(RunConfig(), path)
    assert load_config(path) == RunConfig()


def test_from_dict_nested_and_to_dict():
    cfg = from_dict(RunConfig, {"cluster": {"k_min": 2}, "data": {"usage": "u.csv"}})
    assert cfg.cluster == ClusterConfig(k_min=2) and cfg.data == DataConfig(usage="u.csv")
    assert from_dict(RunConfig, to_dict(cfg)) == cfg


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

IDENT = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
YAML_WORDS = {"y", "yes", "n", "no", "on", "off", "true", "false", "null", "nan", "inf"}


@settings(max_examples=100, deadline=None)
@given(st.lists(IDENT, min_size=1, max_size=4), st.integers(min_value=-(10**9), max_value=10**9))
def test_parse_override_ints(keys, value):
    assert parse_override(f"{'.'.join(keys)}={value}") == (keys, value)


@settings(max_examples=100, deadline=None)
@given(st.lists(IDENT, min_size=1, max_size=4), IDENT.filter(lambda s: s.lower() not in YAML_WORDS))
def test_parse_override_strings(keys, value):
    assert parse_override(f"{'.'.join(keys)}={value}") == (keys, value)
    assert parse_override(f" {'.'.join(keys)} ={value}") == (keys, value)  # spaces around the key


@settings(max_examples=100, deadline=None)
@given(
    st.floats(min_value=1e-9, max_value=1e9, allow_nan=False, allow_infinity=False),
    st.sampled_from(["{:g}", "{:e}", "{!r}", "{:.3f}"]),
)
def test_float_override_any_notation(value, fmt):
    """1e-05 style values (strings in YAML 1.1) and plain decimals both set a float field."""
    text = fmt.format(value)
    assert load_config(
        overrides=[f"train.weight_decay={text}"]
    ).train.weight_decay == pytest.approx(float(text))


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=10**6))
def test_int_override_round_trip(value):
    cfg = load_config(overrides=[f"train.epochs={value}", f"cluster.seed={value}"])
    assert cfg.train.epochs == value and cfg.cluster.seed == value


@settings(max_examples=100, deadline=None)
@given(IDENT.filter(lambda s: s not in TRAIN_KEYS), st.integers() | st.text(max_size=5) | st.none())
def test_from_dict_rejects_unknown_keys(key, value):
    with pytest.raises(ConfigError) as info:
        from_dict(TrainConfig, {"epochs": 2, key: value}, prefix="train.")
    assert f"'train.{key}'" in str(info.value) and "\n" not in str(info.value)


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(TRAIN_KEYS)), st.text(max_size=3), min_size=1))
def test_from_dict_rejects_strings_for_non_string_fields(data):
    """No TrainConfig field is a string, so any string value is a type error naming its key."""
    with pytest.raises(ConfigError) as info:
        from_dict(TrainConfig, data, prefix="train.")
    assert any(f"train.{k}" in str(info.value) for k in data)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["epochs", "batch_size", "patience", "seed"]), st.integers(1, 1000)
        ),
        max_size=6,
    )
)
def test_apply_overrides_last_wins(pairs):
    data = apply_overrides({}, [f"train.{k}={v}" for k, v in pairs])
    expected = {}
    for k, v in pairs:
        expected[k] = v
    assert data == ({"train": expected} if pairs else {})


def test_wide_bins_churn_takes_a_bool_or_static():
    for text, value in (("true", True), ("false", False), ("static", "static")):
        assert load_config(None, [f"model.wide_bins_churn={text}"]).model.wide_bins_churn == value


# ---------------------------------------------------------------------------------------------
# Values out of range (issue 17): one line naming the key and the allowed range


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.epochs=-1", "train.epochs: must be >= 1, got -1"),
        ("train.epochs=0", "train.epochs: must be >= 1, got 0"),
        ("train.batch_size=0", "train.batch_size: must be >= 1"),
        ("train.lr=-0.1", "train.lr: must be > 0"),
        ("train.val_frac=0.9", "train.test_frac: val_frac + test_frac must be < 1"),
        ("cluster.sample_size=0", "cluster.sample_size: must be >= 2"),
        ("cluster.n_init=0", "cluster.n_init: must be >= 1"),
        ("cluster.min_cluster_size=0", "cluster.min_cluster_size: must be >= 2"),
        ("cluster.k=1", "cluster.k: must be >= 2 and <= 1000, got 1"),
        ("cluster.k=5000", "cluster.k: must be >= 2 and <= 1000, got 5000"),
        ("cluster.k_min=9", "cluster.k_max: must be >= cluster.k_min (9)"),
        ("data.max_missing_frac=-0.5", "data.max_missing_frac: must be >= 0 and <= 1, got -0.5"),
        ("data.pseudonym_chars=65", "data.pseudonym_chars: must be >= 0 and <= 64"),
        ("model.dropout=1", "model.dropout: must be >= 0 and < 1"),
        ("train.lr=.nan", "train.lr: must be > 0, got nan"),
        ("out_dir=", "out_dir: must not be empty"),
        ("out_dir=' '", "out_dir: must not be empty"),
        ("data.id_column=''", "data.id_column: must not be empty"),
        ("segments.stability.bands=[0.6, 0.3]", "segments.stability.bands: must increase"),
        ("segments.value_quantiles=[0.5]", "segments.value_quantiles: need 4 cut points"),
        ("synth.n_subscribers=0", "synth.n_subscribers: must be >= 1"),
        ("report.tree_max_depth=0", "report.tree_max_depth: must be >= 1 and <= 32"),
    ],
)
def test_out_of_range_values_name_key_and_range(override, expected):
    config_error(expected, overrides=[override])


def test_range_errors_also_for_config_files(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  batch_size: 0\n")
    config_error("run.yaml", "train.batch_size: must be >= 1, got 0", path=path)


def test_transformer_heads_must_divide_hidden_size():
    config_error(
        "model.n_heads: must divide model.hidden_size (30)",
        overrides=["model.encoder=transformer", "model.hidden_size=30", "model.n_heads=4"],
    )
    load_config(overrides=["model.encoder=gru", "model.hidden_size=30", "model.n_heads=4"])


BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize("where", ["typed", "unknown"])
def test_yaml_anchor_bomb_is_refused_at_once(tmp_path, where):
    """Billion laughs: 9**9 strings from 600 bytes. Under a typed key this used to expand into the
    error message (75 s, 6.5 GB, then MemoryError); anchors and aliases are now refused unread."""
    path = tmp_path / "bomb.yaml"
    key = "train:\n  epochs: *i\n" if where == "typed" else "nosuch: *i\n"
    path.write_text(BOMB + key)
    msg = config_error("bomb.yaml", "line 1", "anchors and aliases", path=path)
    assert len(msg) < 300


def test_alias_in_override_is_refused():
    config_error("anchors and aliases", overrides=["data.metrics={a: &x b, c: *x}"])


def test_error_messages_never_print_long_values():
    """A value is shown in at most 80 characters, however long (or deep) it is."""
    huge = "x" * 100_000
    msg = config_error("train.epochs: expected an integer", overrides=[f"train.epochs={huge}"])
    assert len(msg) < 300
    deep = "[" * 50 + "1" + "]" * 50
    msg = config_error("model.encoder", overrides=[f"model.encoder={deep}"])
    assert len(msg) < 300
    msg = config_error("train.lr", overrides=[f"train.lr=[{', '.join(['1'] * 100_000)}]"])
    assert len(msg) < 300


def test_big_or_binary_config_files_are_refused(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("name: " + "x" * (5 << 20) + "\n")
    config_error("big.yaml", "larger than 4 MiB", path=big)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"name: \xff\xfe\x00\n")
    config_error("bin.yaml", "not UTF-8", path=binary)


def test_config_errors_come_before_heavy_imports():
    """A bad value is reported before torch, pandas or the pipeline are imported."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from gpuseg.cli import app\n"
        "try:\n"
        "    app(['prepare', '-s', 'train.epochs=0'])\n"
        "except SystemExit as e:\n"
        "    mods = ('torch', 'pandas', 'gpuseg.pipeline.stages')\n"
        "    heavy = [m for m in mods if m in sys.modules]\n"
        "    print(e.code, heavy)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.stdout.strip() == "1 []", (p.stdout, p.stderr)
    assert "train.epochs: must be >= 1" in p.stderr
