"""``stream-ctr evaluate``'s argument parsing (stream_ctr.evaluate.cli); the whole command runs in
test_experiment.py."""

from __future__ import annotations

import pytest

from stream_ctr.data.synthetic import Change
from stream_ctr.evaluate.cli import _change


@pytest.mark.parametrize(
    "text, change",
    [
        ("ramp:0.3", Change("ramp", 0.3)),
        ("ramp:0.3:1.5", Change("ramp", 0.3, 1.5)),
        ("jump:0.3:1.5:0.5", Change("jump", 0.3, 1.5, 0.5)),
    ],
)
def test_change_fills_at_size_and_over_and_leaves_the_rest_at_their_defaults(text, change):
    assert _change(text) == {"change": change}
    assert _change(None) is None


@pytest.mark.parametrize(
    "text, reason",
    [
        ("ramp", "give AT, SIZE and optionally OVER"),
        ("ramp:0.1:2:0.5:7", "give AT, SIZE and optionally OVER"),  # a fourth number is no seed
        ("wobble:0.3", "unknown change 'wobble'"),
        ("ramp:x", "could not convert string to float: 'x'"),
    ],
)
def test_a_bad_change_says_the_expected_form_and_why(text, reason):
    with pytest.raises(ValueError, match="--change must be KIND:AT:SIZE") as err:
        _change(text)
    assert reason in str(err.value)
