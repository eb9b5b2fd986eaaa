"""The demo's run over time, and its picture: what the Pipeline and Drift dashboards would show, without Grafana.

:class:`Timeline` keeps one row per reading of the worker's ``/v1/stats`` (the same counters ``/metrics``
exports): events done, throughput, each arm's windowed gAUC, drifting users, and the drift detectors' alarm
times. :func:`plot_timeline` draws it as one PNG: throughput, per-arm gAUC, and the alarms on the same time axis.
A demo polls once a second for a few minutes, so the rows stay in the hundreds; ``max_rows`` bounds them anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from stream_ctr.contracts.arms import ARMS

__all__ = ["Timeline", "plot_timeline"]


@dataclass
class Timeline:
    start: float  # unix time of the first event sent
    max_rows: int = 10_000
    rows: list[dict] = field(default_factory=list)
    alarms: dict[str, list[float]] = field(default_factory=dict)  # signal -> alarm times, seconds since start

    def read(self, stats: dict, now: float, rate: float) -> None:
        """One reading of ``/v1/stats`` at unix time ``now``, with the throughput ``rate`` since the last."""
        if len(self.rows) >= self.max_rows:
            self.rows = self.rows[::2]  # keep the whole run, at half the resolution
        arms = stats["window"]["arms"]
        self.rows.append(
            {
                "t": now - self.start,
                "done": stats["applied"] + stats["dead_letters"],
                "rate": rate,
                "users_drifting": stats.get("users_drifting", 0),
                **{f"gauc_{arm}": arms[arm]["gauc"] for arm in ARMS},
            }
        )
        for signal, state in stats.get("detectors", {}).items():
            self.alarms[signal] = [t - self.start for t in state["alarm_times"] if t >= self.start]


def plot_timeline(timeline: Timeline, path: Path) -> Path:
    """Three panels over seconds since the first event: events/s, windowed gAUC per arm, detector alarms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["t"] for r in timeline.rows]
    fig, (ax_rate, ax_gauc, ax_alarm) = plt.subplots(
        3, 1, figsize=(9, 8), sharex=True, gridspec_kw={"height_ratios": [2, 2, 1.2]}
    )
    ax_rate.plot(t, [r["rate"] for r in timeline.rows], color="tab:blue")
    ax_rate.set_ylabel("events/s applied")
    ax_rate.set_title("stream-ctr demo: throughput, per-arm online gAUC, drift alarms")
    for arm in ARMS:
        ax_gauc.plot(t, [r[f"gauc_{arm}"] for r in timeline.rows], label=arm)
    ax_gauc.set_ylabel("gAUC (window)")
    ax_gauc.legend(loc="lower right")
    signals = sorted(timeline.alarms) or ["(no detector)"]
    for i, signal in enumerate(signals):
        times = timeline.alarms.get(signal, [])
        ax_alarm.scatter(times, [i] * len(times), marker="|", s=200, color="tab:red")
    ax_alarm.set_yticks(range(len(signals)), signals)
    ax_alarm.set_ylim(-0.5, len(signals) - 0.5)
    ax_alarm.set_xlabel("seconds since the first event")
    ax_alarm.set_ylabel("alarms")
    for ax in (ax_rate, ax_gauc, ax_alarm):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
