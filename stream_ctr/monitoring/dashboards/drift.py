"""The ``Drift`` dashboard: the detectors, their inputs, the gap between users' and the global CTR, drifting
users.
"""

from __future__ import annotations

from stream_ctr.monitoring.dashboards.panels import (
    DRIFT_BUCKETS,
    STABLE_DRIFTING,
    TRAINER,
    Z_BUCKETS,
    Row,
    bargauge,
    buckets,
    dashboard,
    heatmap,
    override,
    q,
    quantile,
    rate,
    row,
    sel,
    stat,
    steps,
    timeseries,
)


def _drift_detectors() -> Row:
    return row(
        "Detectors (signals: global_ctr, logloss_<arm>)",
        timeseries(
            "Detector alarms per signal",
            "Which detectors fired recently: alarms per signal in the last 5 minutes (ADWIN on every "
            "label for global_ctr, Page-Hinkley on block means of each arm's logloss).",
            [q(f"sum by (signal) (increase({sel('stream_ctr_drift_alarms_total')}[5m]))", "{{signal}}")],
            "short",
            w=8,
            min=0,
        ),
        timeseries(
            "Drift state per signal",
            "When each signal was drifting: 1 from its first alarm until the hold time passes without "
            "another, 0 when stable (any worker drifting counts).",
            [q(f"max by (signal) ({sel('stream_ctr_drift_detected')})", "{{signal}}")],
            "none",
            w=8,
            min=0,
            max=1,
            decimals=0,
            step=True,
        ),
        stat(
            "Drifting now, and for how long",
            "Is any signal drifting right now (stable / DRIFTING), and since how long (seconds since the "
            "episode began on the first worker that saw it; no value while stable).",
            [
                q(f"max by (signal) ({sel('stream_ctr_drift_detected')})", "{{signal}}"),
                q(
                    f"time() - min by (signal) ({sel('stream_ctr_drift_since_timestamp_seconds')})",
                    "{{signal}} drifting for",
                ),
            ],
            "none",
            w=8,
            mappings=STABLE_DRIFTING,
            thresholds=steps(("green", None), ("red", 1)),
            overrides=[override("B", unit="s", mappings=[], thresholds=steps(("red", None)))],
        ),
    )


def _drift_inputs() -> Row:
    return row(
        "What the detectors watch",
        timeseries(
            "Global CTR p_g: workers vs trainer",
            "Did the click rate of the whole stream move? The global CTR the workers use (the target "
            "prior of label correction) and the one the trainer publishes.",
            [
                q(f"avg({sel('stream_ctr_global_ctr')})", "in use (workers)"),
                q(f"max({sel('stream_ctr_global_ctr', TRAINER)})", "published (trainer)"),
            ],
            "percentunit",
            w=8,
            decimals=2,
        ),
        timeseries(
            "Online logloss per arm (window)",
            "Does an arm predict worse than it did? Test-then-train logloss over the sliding window, "
            "per arm: the input of the logloss_<arm> detectors.",
            [q(f"avg by (arm) ({sel('stream_ctr_arm_logloss', scope='window')})", "{{arm}}")],
            "none",
            w=8,
            decimals=3,
        ),
        timeseries(
            "Correction magnitude (ft_lc)",
            "How hard label correction pushes: mean |corrected label - raw label| per learned event of "
            "the label-corrected arm. 0 when users' click rates match p_g; it grows as local CTRs "
            "drift away from the global one.",
            [
                q(
                    f"sum({rate(sel('stream_ctr_label_shift_total'))}) / "
                    f"sum({rate(sel('stream_ctr_events_total', outcome='applied'))})",
                    "mean |label shift| per event",
                )
            ],
            "none",
            w=8,
            min=0,
            decimals=3,
        ),
    )


def _drift_gap_across_users() -> Row:
    return row(
        "Local vs global CTR |p_u - p_g| across users",
        timeseries(
            "Drift quantiles across users",
            "How far users' own click rates sit from the global one: quantiles over users of "
            "|p_u - p_g| (one value per user, rebuilt at each scrape, so no rate(); interpolated "
            "inside buckets) and the mean.",
            [
                *(q(quantile(p, DRIFT_BUCKETS), f"p{round(p * 100)}") for p in (0.1, 0.5, 0.9)),
                q(
                    f"sum({sel('stream_ctr_user_ctr_drift_sum')}) / sum({sel('stream_ctr_user_ctr_drift_count')})",
                    "mean",
                ),
            ],
            "percentunit",
            min=0,
        ),
        bargauge(
            "Users per |p_u - p_g| bucket (now)",
            "How many users fall in each drift bucket right now (bucket upper bound shown).",
            [buckets(DRIFT_BUCKETS, instant=True)],
            "short",
        ),
        heatmap(
            "|p_u - p_g| distribution over time",
            "How the users' drift distribution moves: users per bucket at each scrape.",
            [buckets(DRIFT_BUCKETS, instant=False)],
            "short",
            y_unit="percentunit",
        ),
    )


def _drift_drifting_users() -> Row:
    return row(
        "Drifting users (|z|: |window CTR - p_g| in units of the user's own binomial std)",
        timeseries(
            "Drifting users",
            "How many users' window CTR lies significantly away from p_g (|z| above the worker's "
            "threshold; users with few events never count).",
            [q(f"sum({sel('stream_ctr_users_drifting')})", "drifting users")],
            "short",
            w=6,
            min=0,
            decimals=0,
        ),
        timeseries(
            "Share of users drifting",
            "Which share of the active users is drifting (drifting users / users with state).",
            [q(f"sum({sel('stream_ctr_users_drifting')}) / sum({sel('stream_ctr_users')})", "share")],
            "percentunit",
            w=6,
            min=0,
        ),
        timeseries(
            "|z| quantiles across users",
            "How significant the users' gaps are: quantiles over users of |z| = |window CTR - p_g| / "
            "sqrt(p_g (1 - p_g) / n) of each user's window (0 for users with few events).",
            [q(quantile(p, Z_BUCKETS), f"p{round(p * 100)}") for p in (0.5, 0.9, 0.99)],
            "none",
            w=6,
            min=0,
            decimals=2,
        ),
        bargauge(
            "Users per |z| bucket (now)",
            "How many users fall in each |z| bucket right now (bucket upper bound shown, in sampling "
            "standard deviations).",
            [buckets(Z_BUCKETS, instant=True)],
            "short",
        ),
    )


def drift() -> dict:
    return dashboard(
        "drift.json",
        "Has the stream moved? The drift detectors per signal, the global CTR, each "
        "user's CTR against the global one (never a per-user series: distributions across users), "
        "and how hard label correction pushes the labels.",
        [
            _drift_detectors(),
            _drift_inputs(),
            _drift_gap_across_users(),
            _drift_drifting_users(),
        ],
    )
