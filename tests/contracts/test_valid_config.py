"""Property-based contract test for configuration (entry point 5 of ``test_valid_input.py``): whatever environment
a process starts with, ``Settings.from_env`` returns settings or raises ``ConfigError`` naming a variable that was
set; settings round-trip through ``to_env`` and build a feature spec and head parameters."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

from contract_inputs import QUOTA, SPEC_TEXT, fast
from hypothesis import given
from hypothesis import strategies as st

from stream_ctr.config import ConfigError, Settings
from stream_ctr.contracts.features import FeatureSpec
from stream_ctr.learning.heads import HeadParams

COUNTS: Counter = Counter()


KNOBS = {f.metadata["env"]: f for f in dataclasses.fields(Settings)}
#: Any text an environment can hold: on POSIX, bytes that are not UTF-8 reach os.environ as lone surrogates.
_ENV_TEXT = st.text(st.characters(), max_size=12)
_NUMBER_TEXT = st.one_of(
    st.integers(-5, 70_000).map(str),
    st.integers().map(str),
    st.floats().map(str),
    st.floats(0, 10).map(repr),
    st.sampled_from(
        [
            "",
            " ",
            "0",
            "-0",
            "1",
            "6",
            "7",
            "65535",
            "65536",
            "nan",
            "inf",
            "-inf",
            "1e309",
            "1e-400",
            " 5 ",
            "5_000",
            "٣",
            "²",
            "0x10",
            "1,5",
            "true",
            "9" * 5000,
        ]
    ),
)
_VALUES = {
    "int": st.one_of(_NUMBER_TEXT, _ENV_TEXT),
    "float": st.one_of(_NUMBER_TEXT, _ENV_TEXT),
    "str": st.one_of(
        _ENV_TEXT,
        SPEC_TEXT,
        st.sampled_from(
            [
                "",
                "localhost",
                "localhost:9092",
                "64,32",
                "64",
                "0",
                "64,-1",
                "64,,32",
                "deepfm",
                "lr",
                "lc",
                "lc_bias",
                "none",
                "adam",
                "adagrad",
                "sgd",
                "memory",
                "rocksdb",
                "cpu",
                "cuda",
                "0.0.0.0",
            ]
        ),
    ),
}
#: Environments setting a few knobs each (every knob, over the run), each to a value of its type or any text.
ENV = st.lists(
    st.one_of([st.tuples(st.just(name), _VALUES[KNOBS[name].type]) for name in sorted(KNOBS)]), max_size=4
).map(dict)


@given(envs=st.lists(ENV, min_size=5, max_size=5))
@fast(max_examples=QUOTA // 5)
def _configs(envs):
    for env in envs:
        COUNTS["configs"] += 1
        _config(env)


def _config(env: dict):
    try:
        settings_ = Settings.from_env(env)
    except ConfigError as exc:
        # It starts with a knob's name, and names (there or in the text: a check across two knobs names both) a
        # variable that was set: defaults alone are valid.
        message = str(exc)
        assert message.split(":", 1)[0] in KNOBS, message
        assert any(name in message for name in env), f"{message!r} names no variable that was set ({sorted(env)})"
        return
    for name, raw in env.items():
        knob = KNOBS[name]
        assert knob.type != "str" or getattr(settings_, knob.name) == raw
    assert all(math.isfinite(getattr(settings_, f.name)) for f in KNOBS.values() if f.type == "float")
    assert Settings.from_env(settings_.to_env()) == settings_
    FeatureSpec.parse(settings_.features, settings_.hash_buckets)
    HeadParams.from_settings(settings_)


def test_any_config_is_settings_or_a_config_error_naming_the_variable():
    _configs()
    assert COUNTS["configs"] >= QUOTA, COUNTS
