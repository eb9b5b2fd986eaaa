"""The offline modes are built from the arms and the correction methods; their names are external (``--modes``,
``results.json``) and must not move when either vocabulary is edited."""

from stream_ctr.contracts.arms import FINE_TUNED
from stream_ctr.evaluate.config import MODES
from stream_ctr.learning.correction import METHODS


def test_every_correction_method_is_one_mode_and_every_fine_tuned_arm_keeps_its_name_offline():
    assert list(MODES) == [
        "cloud",
        "ft",
        "ft_lc",
        "ft_reweight",
        "ft_logit",
        "ft_lc_evidence",
        "ft_lc_significant",
        "ft_lc_bias",
        "ft_auto",
    ]
    methods = [m for m in MODES.values() if m not in (None, "auto")]
    assert sorted(methods) == sorted(METHODS)  # each method exactly once
    assert all(MODES[arm] == method for arm, method in FINE_TUNED.items())
