"""Hostile configs by the hundred: any value at any key, unknown keys, out-of-range numbers, ``--set`` items,
config files of any bytes, Flower run-config entries, and the ``potara run`` command line over them.

Each is accepted with every value of its declared type, or refused with a one-line ``ConfigError`` naming the
key; the command line exits 2 with one line on stderr and writes nothing.
"""

from __future__ import annotations

import dataclasses
import types
import typing

import yaml
from hostile import assert_clear, hostile
from hypothesis import given
from hypothesis import strategies as st

from potara import config as config_mod
from potara.cli import main as cli
from potara.config import ConfigError, RunConfig
from potara.flower.settings import DEFAULTS, from_run_config
from potara.methods import resolve


def leaves(values: dict, prefix: str = "") -> dict[str, object]:
    """Every non-section key of a config dict, dotted, with its value."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


DEFAULT = RunConfig().to_dict()
LEAVES = sorted(leaves(DEFAULT))
SECTIONS = sorted(k for k, v in DEFAULT.items() if isinstance(v, dict))
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.dates(),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)


def nested(path: str, value: object) -> dict:
    values: dict = {}
    config_mod.set_key(values, path, value)
    return values


def assert_typed(cfg: object) -> None:
    """Every field of ``cfg`` (a config dataclass, recursively) holds a value of its declared type."""
    for name, kind in typing.get_type_hints(type(cfg)).items():
        value = getattr(cfg, name)
        if dataclasses.is_dataclass(value):
            assert_typed(value)
        else:
            assert _is(value, kind), f"{name}={value!r} is not {kind}"


def _is(value: object, kind: object) -> bool:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return any(_is(value, k) for k in typing.get_args(kind))
    if typing.get_origin(kind) is list:
        return isinstance(value, list) and all(_is(v, typing.get_args(kind)[0]) for v in value)
    if kind is type(None):
        return value is None
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def accepted_or_refused(values: object, *names: str) -> RunConfig | None:
    """The config of ``values`` (its methods resolved, every field typed), or None after a clear refusal."""
    try:
        cfg = config_mod.from_dict(values)
        resolve(cfg)
    except ConfigError as err:
        assert_clear(str(err), *names)
        return None
    assert_typed(cfg)
    assert config_mod.from_dict(cfg.to_dict()) == cfg
    return cfg


@hostile(400)
@given(path=st.sampled_from(LEAVES), value=VALUES)
def test_any_value_at_any_key_is_taken_as_typed_or_refused_naming_the_key(path, value):
    accepted_or_refused(nested(path, value), path.rsplit(".", 1)[-1])


@hostile(100)
@given(section=st.sampled_from(["", *SECTIONS]), key=st.text(max_size=12) | st.integers(), value=VALUES)
def test_an_unknown_key_is_refused_naming_it(section, key, value):
    known = DEFAULT[section] if section else DEFAULT
    if key in known:
        return
    values = {key: value} if not section else {section: {key: value}}
    assert accepted_or_refused(values, "unknown config key") is None


@hostile(60)
@given(section=st.sampled_from(SECTIONS), value=VALUES.filter(lambda v: not isinstance(v, dict)))
def test_a_section_that_is_not_a_mapping_is_refused_naming_it(section, value):
    assert accepted_or_refused({section: value}, f"config section '{section}' must be a mapping") is None


NOT_POSITIVE = st.one_of(st.integers(-(10**12), 0), st.floats(max_value=0.0), st.sampled_from([float("nan"), float("-inf")]))
OUT_OF_RANGE = {
    "data.num_clients": st.integers(-(10**12), 0), "fed.rounds": st.integers(-(10**12), 0),
    "fed.batch_size": st.integers(-(10**12), 0), "fed.local_epochs": st.integers(-(10**12), 0),
    "fed.local_steps": st.integers(-(10**12), 0), "local.epochs": st.integers(-(10**12), 0),
    "local.batch_size": st.integers(-(10**12), 0), "lora.r": st.integers(-(10**12), 0),
    "eval_batch_size": st.integers(-(10**12), 0), "data.test_size": st.integers(-(10**12), 0),
    "validation.min_updates": st.integers(-(10**12), 0), "fed.lr": NOT_POSITIVE, "local.lr": NOT_POSITIVE,
    "lora.alpha": NOT_POSITIVE, "data.alpha": NOT_POSITIVE, "validation.max_norm_ratio": NOT_POSITIVE,
    "validation.max_norm": NOT_POSITIVE, "potara.damping": NOT_POSITIVE,
    "seed": st.integers(-(10**12), -1) | st.integers(2**32, 10**20), "fed.fraction": st.floats().filter(lambda x: not 0 < x <= 1),
    "lora.dropout": st.floats().filter(lambda x: not 0 <= x < 1),
    "data.val_fraction": st.floats().filter(lambda x: not 0 <= x < 1),
    "peers.fixed_lambda": st.floats().filter(lambda x: not 0 <= x <= 1),
    "potara.grid": st.lists(st.floats().filter(lambda x: not 0 <= x <= 1), min_size=1, max_size=3),
    "data.train_sizes": st.lists(st.integers(-5, 5), min_size=2, max_size=2).filter(lambda s: not 1 <= s[0] <= s[1])
    | st.lists(st.integers(1, 5), min_size=3, max_size=4),
}


@hostile(150)
@given(data=st.data(), path=st.sampled_from(sorted(OUT_OF_RANGE)))
def test_an_out_of_range_number_is_refused_naming_the_key(data, path):
    value = data.draw(OUT_OF_RANGE[path])
    assert accepted_or_refused(nested(path, value), path) is None


@hostile(200)
@given(item=st.one_of(
    st.text(max_size=30),
    st.tuples(st.sampled_from(LEAVES) | st.text(max_size=10), st.text(max_size=20)).map("=".join),
))
def test_any_set_item_is_applied_as_typed_or_refused_in_one_line(item):
    try:
        cfg = config_mod.load(None, [item])
    except ConfigError as err:
        assert_clear(str(err))
        return
    assert_typed(cfg)


@hostile(100)
@given(content=st.one_of(
    st.binary(max_size=200),
    VALUES.map(lambda v: yaml.safe_dump(v).encode()),
    st.tuples(st.sampled_from(LEAVES), VALUES).map(lambda t: yaml.safe_dump(nested(*t)).encode()),
))
def test_any_config_file_loads_as_typed_or_is_refused_in_one_line(content, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    try:
        cfg = config_mod.load(path)
    except ConfigError as err:
        assert_clear(str(err))
        return
    assert_typed(cfg)


FLOWER_VALUES = st.one_of(st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))


@hostile(100)
@given(key=st.sampled_from(sorted(DEFAULTS)) | st.text(max_size=8), value=FLOWER_VALUES)
def test_any_flower_run_config_entry_is_taken_or_refused_in_one_line(key, value):
    try:
        settings = from_run_config({key: value})
    except ConfigError as err:
        assert_clear(str(err))
        return
    assert settings.min_train_nodes >= 1 and settings.round_timeout > 0 and settings.evaluate_every >= 0


SURELY_INVALID = st.one_of(
    st.sampled_from(sorted(OUT_OF_RANGE)).flatmap(lambda p: OUT_OF_RANGE[p].map(lambda v: nested(p, v))),
    st.text(min_size=1, max_size=8).filter(lambda k: k not in DEFAULT).map(lambda k: {k: 1}),
    st.sampled_from(LEAVES).map(lambda p: nested(p, {"not": "a value"})),
)


@hostile(40)
@given(values=SURELY_INVALID, as_file=st.booleans())
def test_the_cli_refuses_a_hostile_config_in_one_line_and_writes_nothing(values, as_file, tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    before = sorted(work.iterdir())
    args = ["run", "--out", str(work / "out")]
    if as_file:
        (tmp_path / "hostile.yaml").write_text(yaml.safe_dump(values))
        args += ["--config", str(tmp_path / "hostile.yaml")]
    else:
        args += [f"--set={path}={yaml.safe_dump(v, default_flow_style=True).strip()}" for path, v in leaves(values).items()]
    capsys.readouterr()
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("potara: error: ") and err.count("\n") == 1, err
    assert sorted(work.iterdir()) == before  # no output folder, no partial run
