"""The offline modes are built from the arms and the correction methods; their names are external (``--modes``,
``results.json``) and must not move when either vocabulary is edited."""

from stream_ctr.contracts.arms import FINE_TUNED
from stream_ctr.evaluate.config import COMPANIONS, DEFAULT_MODES, MODES
from stream_ctr.learning.correction import METHODS


def test_every_correction_method_is_one_mode_and_every_fine_tuned_arm_keeps_its_name_offline():
    assert (
        list(DEFAULT_MODES)
        == [m for m in MODES if m not in COMPANIONS]
        == [
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
    )
    methods = [m for mode, m in MODES.items() if m not in (None, "auto") and mode not in COMPANIONS]
    assert sorted(methods) == sorted(METHODS)  # each method exactly once
    assert all(MODES[arm] == method for arm, method in FINE_TUNED.items())


def test_companion_modes_are_named_by_arm_and_kind_and_train_on_raw_or_corrected_labels():
    assert list(COMPANIONS) == [f"{a}_{k}" for k in ("ode", "fifo", "reservoir", "coda") for a in ("ft", "ft_lc")]
    assert all(MODES[m] == ("lc" if m.startswith("ft_lc_") else "none") for m in COMPANIONS)
