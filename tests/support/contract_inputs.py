"""Hypothesis settings and the feature-spec string strategy shared by the valid-input contract tests
(``tests/contracts/test_valid_input.py``, ``tests/contracts/test_valid_config.py``)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schema_strategies import CHAR

from stream_ctr.config import Settings

#: Generated inputs per entry point (every test asserts its own count); ``make test-fast`` lowers it.
QUOTA = int(os.environ.get("STREAM_CTR_HYPOTHESIS_QUOTA", "10000"))
DEFAULT = Settings()
#: A feature spec with numeric fields and a wide multi field, beside the default one.
NUMERIC_FEATURES = "age:num,gender,occupation:num,genres:multi:40"


def fast(max_examples: int):
    """Derandomized, database-free Hypothesis settings: the same examples every run, no deadline."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )


#: Field names the spec strings and the events both draw from, so that the events carry the specs' fields.
SPEC_POOL = ("age", "gender", "genres", "occupation", "price", "a b", "x|y", "😀", "\x00")
_NAME = st.one_of(
    st.sampled_from(SPEC_POOL),
    st.sampled_from(["user_id", "item_id", "", " ", " a b ", " age"]),
    st.text(CHAR, max_size=6),
    st.text(st.characters(blacklist_characters=",:"), max_size=6),
)
_KIND = st.one_of(st.sampled_from(["cat", "num", "multi", " multi ", "", "Multi", "blob"]), st.text(CHAR, max_size=4))
_WIDTH = st.one_of(
    st.integers(-2, 70).map(str),
    st.text(CHAR, max_size=3),
    st.sampled_from(["", " 3", "٣", "²", "1.5", "0x3", "+2", "3 ", "9" * 5000]),
)
_ITEM = st.one_of(
    _NAME,
    st.tuples(_NAME, _KIND).map(":".join),
    st.tuples(_NAME, st.just("multi"), _WIDTH).map(":".join),
    st.tuples(_NAME, _KIND, _WIDTH).map(":".join),
    st.lists(st.text(CHAR, max_size=3), max_size=5).map(":".join),
)
#: FeatureSpec strings: well-formed ones, near misses, and any text at all.
SPEC_TEXT = st.one_of(
    st.builds(str.join, st.sampled_from([",", ", ", ",,", " , "]), st.lists(_ITEM, max_size=6)),
    st.text(CHAR, max_size=30),
    st.just(DEFAULT.features),
    st.just(NUMERIC_FEATURES),
)
