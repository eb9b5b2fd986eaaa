"""``stream-ctr demo``: the whole service on real clicks, then a report.

Starts Kafka (or uses ``KAFKA_BOOTSTRAP``), the trainer and the personalize worker as processes, replays
MovieLens-100K into ``ctr.events`` (with a few malformed records to exercise the dead-letter path), shows a live
progress line read from the worker's ``/v1/stats``, and ends with a markdown report: per-arm online gAUC and
logloss over the same events, the distribution of |local CTR - global CTR| across users, the drift detectors'
alarms, and a PNG of the run over time (:mod:`stream_ctr.monitoring.timeline`).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from stream_ctr import topics
from stream_ctr.broker.replay import replay
from stream_ctr.config import Settings
from stream_ctr.contracts.arms import ARMS
from stream_ctr.data import load_dataset
from stream_ctr.data.synthetic import FEATURES as SYNTHETIC_FEATURES
from stream_ctr.monitoring.timeline import Timeline, plot_timeline
from stream_ctr.process.net import free_port
from stream_ctr.service.stack import Stack

__all__ = ["render_report", "replay_live", "run_demo"]

#: The in-process figure the demo prints beside its live one: the service's own code in lockstep
#: (:mod:`stream_ctr.bench.lockstep`) with a delta every 8 samples and batches of 8, the bench's finest cadence.
IN_PROCESS_EVERY = 8


def _fmt(x) -> str:
    return "n/a" if x is None or x != x else f"{x:.4f}"


def _count(x) -> str:
    return "n/a" if x is None or x != x else f"{x:.0f}"


def render_report(stats: dict, meta: dict) -> str:
    """The demo report as markdown, from the worker's final ``/v1/stats`` and run facts."""
    life = stats["lifetime"]
    lines = _run_lines(stats, meta) + _arm_lines(life)
    lines += _live_vs_inprocess(life["arms"]["global"], meta)
    if "auto" in life:
        lines += [
            "",
            f"Auto choice of the fine-tuned head to serve (stream_ctr.quality.auto on these shadow arms): "
            f"**{life['auto']['arm']}**, {life['auto']['reason']}.",
        ]
    lines += ["", f"Predictions scored: {life['n']}.", *_user_drift_lines(stats)]
    return "\n".join(lines + _detector_lines(stats.get("detectors", {}), meta))


def _run_lines(stats: dict, meta: dict) -> list[str]:
    """The title and the facts of the run: events, throughput, the final model and its staleness."""
    return [
        "# stream-ctr demo report",
        "",
        f"- dataset: {meta['dataset']}, {meta['sent']} events replayed (+{meta['malformed']} malformed records)",
        f"- applied {stats['applied']}, dead-lettered {stats['dead_letters']}, duplicates skipped "
        f"{stats['duplicates']}, users {stats['users']}",
        f"- wall time {meta['seconds']:.0f} s from first event to last applied: "
        f"{stats['applied'] / max(meta['seconds'], 1e-9):.0f} events/s end to end",
        f"- final model version {stats['model_version']}, global CTR {_fmt(stats['global_ctr'])}",
        f"- staleness p50 {_count(stats['staleness']['p50'])} p99 {_count(stats['staleness']['p99'])} samples "
        f"(events the model in use had not learned when it scored an event); {stats['staleness']['ahead']} of "
        f"{stats['staleness']['scored']} events scored by a model that had already learned them",
        "",
    ]


def _arm_lines(life: dict) -> list[str]:
    """Per-arm online metrics of the lifetime scope, and the paired gAUC differences between arms."""
    lines = [
        "## Per-arm online metrics (test-then-train, every event scored before it is learned)",
        "",
        "| arm | gAUC | AUC | logloss | calibration |",
        "|---|---|---|---|---|",
    ]
    for arm in ARMS:
        m = life["arms"][arm]
        lines.append(
            f"| {arm} | {_fmt(m['gauc'])} | {_fmt(m['auc'])} | {_fmt(m['logloss'])} | {_fmt(m['calibration'])} |"
        )
    lines += [
        "",
        "gAUC differences, paired bootstrap over users (95% CI; * = the CI excludes 0):",
        "",
        "| comparison | Δ gAUC | 95% CI | users |",
        "|---|---|---|---|",
    ]
    for name, d in life.get("paired", {}).items():
        lo, hi = d["ci"]
        star = " *" if lo > 0 or hi < 0 else ""
        lines.append(f"| {name} | {d['delta']:+.4f}{star} | [{lo:+.4f}, {hi:+.4f}] | {d['users']} |")
    return lines


def _user_drift_lines(stats: dict) -> list[str]:
    """The distribution of |p_u - p_g| across users, its quantiles, and the users beyond their own band."""
    d = stats["drift"]
    edges = [0.0, *d["buckets"]]
    lines = [
        "",
        "## Local vs global CTR drift across users (|p_u - p_g|, p_u shrunk toward p_g)",
        "",
        "| bucket | users |",
        "|---|---|",
    ]
    for i, count in enumerate(d["counts"]):
        label = f"({edges[i]:.2f}, {edges[i + 1]:.2f}]" if i < len(d["buckets"]) else f"> {edges[-1]:.2f}"
        lines.append(f"| {label} | {count} |")
    q = d["quantiles"]
    return lines + [
        "",
        f"Median drift {_fmt(q['0.5'])}, 10th percentile {_fmt(q['0.1'])}, "
        f"90th percentile {_fmt(q['0.9'])}. Users beyond their own band (STREAM_CTR_USER_DRIFT_Z "
        f"sampling stds from p_g): {stats.get('users_drifting', 'n/a')}.",
        "",
    ]


def _live_vs_inprocess(live: dict, meta: dict) -> list[str]:
    """The global arm live beside the same events in-process (``meta["in_process"]``, when measured)."""
    ref = meta.get("in_process")
    if ref is None:
        return []
    rate = f"{meta['rate']:,.0f} events/s" if meta.get("rate") else "as fast as the producer goes"
    return [
        "",
        f"## Live against in-process (global arm, the same {meta['sent']:,} events)",
        "",
        "| run | AUC | logloss | gAUC |",
        "|---|---|---|---|",
        f"| live: Kafka, worker and trainer processes, replayed at {rate} | {_fmt(live['auc'])} | "
        f"{_fmt(live['logloss'])} | {_fmt(live['gauc'])} |",
        f"| in-process: the same code in lockstep, a delta every {IN_PROCESS_EVERY} samples | {_fmt(ref['auc'])} | "
        f"{_fmt(ref['logloss'])} | {_fmt(ref['gauc'])} |",
        "",
        f"Live minus in-process: AUC {live['auc'] - ref['auc']:+.4f}, logloss "
        f"{live['logloss'] - ref['logloss']:+.4f} (the live model is older when it scores: staleness above).",
    ]


def _detector_lines(detectors: dict, meta: dict) -> list[str]:
    lines = [
        "## Drift detectors (river ADWIN on the click rate, Page-Hinkley on each arm's logloss)",
        "",
        "| signal | alarms | first alarm (s after the first event) | drifting at the end |",
        "|---|---|---|---|",
    ]
    for signal, s in detectors.items():
        first = s["first_alarm"]
        when = "-" if first is None else f"{first - meta.get('start', 0):.0f}"
        lines.append(f"| {signal} | {s['alarms']} | {when} | {'yes' if s['drifting'] else 'no'} |")
    if meta.get("timeline"):
        lines += ["", f"![throughput, per-arm gAUC and drift alarms over the run]({meta['timeline']})", ""]
    return lines


def _progress_line(stats: dict, total: int, rate: float) -> str:
    arms = stats["window"]["arms"]
    gaucs = " ".join(f"{arm}={_fmt(arms[arm]['gauc'])}" for arm in ARMS)
    done = stats["applied"] + stats["dead_letters"]
    return (
        f"{done:>7}/{total} events  {rate:7.0f} ev/s  lag {max(total - done, 0):>6}  "
        f"model v{stats['model_version']}  window gAUC {gaucs}"
    )


class _Producer(threading.Thread):
    """Replays the events in the background; the demo's main loop watches the worker meanwhile."""

    def __init__(self, events, settings: Settings, rate: float, malformed_every: int):
        super().__init__(daemon=True, name="demo-replay")
        self.events, self.settings, self.rate, self.malformed_every = events, settings, rate, malformed_every
        self.sent = self.bad = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.sent, self.bad = replay(
                self.events,
                self.settings,
                topics.events(self.settings).name,
                self.rate,
                self.malformed_every,
            )
        except BaseException as exc:  # reported by the main loop
            self.error = exc


def _watch(stack: Stack, producer: _Producer, total: int, logs: Path, timeline: Timeline) -> None:
    """Print progress until every record is applied or dead-lettered, keeping each reading on the ``timeline``;
    fail fast if a process or the replay dies."""
    tty = sys.stdout.isatty()
    last_done, last_t, last_print = 0, time.monotonic(), 0.0
    while True:
        time.sleep(1.0)
        stats = stack.stats()
        done = stats["applied"] + stats["dead_letters"]
        now = time.monotonic()
        rate = (done - last_done) / (now - last_t)
        last_done, last_t = done, now
        timeline.read(stats, time.time(), rate)
        if tty:
            print("\r" + _progress_line(stats, total, rate), end="", flush=True)
        elif now - last_print >= 10:
            print(_progress_line(stats, total, rate), flush=True)
            last_print = now
        for role, proc in stack.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{role} died (exit {proc.returncode}); see {logs}/{role}.log")
        if producer.error is not None:
            raise RuntimeError(f"replay failed: {producer.error!r}")
        if not producer.is_alive() and done >= total:
            print()
            return


#: The closed-loop phase's service: its own topics and processes on the same broker, and the synthetic world's
#: features.
CLOSED_LOOP = {"features": SYNTHETIC_FEATURES}


def _closed_loop(settings: Settings, args, logs: Path) -> str:
    """Phase 2: simulated users request rankings from a fresh stack and click; the A/B report of what they saw."""
    from stream_ctr.data.synthetic import SyntheticConfig
    from stream_ctr.experiments.assignment import Experiment
    from stream_ctr.experiments.report import read_results, render_markdown
    from stream_ctr.experiments.simulate import SimConfig
    from stream_ctr.service.closed_loop import render_closed_loop, run_closed_loop

    sim_settings = settings.replace(
        topic_prefix=f"{settings.topic_prefix}sim.",
        app_id=f"{settings.app_id}-sim",
        web_port=free_port(settings.web_bind),
        trainer_web_port=free_port(settings.web_bind),
        **CLOSED_LOOP,
    )
    sim = SimConfig(requests=args.sim_requests, start_ts=time.time())
    print(
        f"closed loop: {sim.requests} scoring requests from {SyntheticConfig().users} simulated users "
        f"({sim.candidates} candidates, top {sim.k} shown)",
        flush=True,
    )
    with Stack(sim_settings, logs / "closed-loop") as stack:
        t0 = time.monotonic()
        loop = run_closed_loop(stack.settings, sim, SyntheticConfig(seed=args.sim_seed))
        seconds = time.monotonic() - t0
        impressions = sim.requests * sim.k
        deadline = time.monotonic() + 120
        while _attributed(stack) < impressions and time.monotonic() < deadline:
            time.sleep(0.5)
        experiment = Experiment.configured(stack.settings.experiment_file)
        ab = read_results(stack.settings, experiment)
    return "\n".join(
        [
            "# Online A/B experiment (closed loop)",
            "",
            f"{sim.requests} scoring requests in {seconds:.0f} s ({sim.requests / seconds:.0f} requests/s through "
            f"HTTP, ranking and exposure logging); experiment {experiment.name!r}, arms "
            f"{', '.join(f'{a.name} ({w:.0%})' for a, w in zip(experiment.arms, experiment.weights.values()))}.",
            "",
            render_closed_loop(loop),
            render_markdown(ab, "Per-arm results from ctr.exposures and ctr.events"),
        ]
    )


def _attributed(stack: Stack) -> int:
    from stream_ctr.service.stack import get_json

    results = get_json(f"{stack.worker_url}/v1/experiments")[1]["experiments"][0]["results_on_this_worker"]
    return sum(arm["impressions"] for arm in results["arms"].values())


def replay_live(stack: Stack, events, rate: float, malformed_every: int = 0) -> tuple[dict, dict, Timeline]:
    """Replay ``events`` into ``stack`` at ``rate`` events/s (0: as fast as the producer goes) with live progress,
    until every record is applied or dead-lettered: the worker's final ``/v1/stats``, the run's facts (sent,
    malformed, seconds, start, rate) and its timeline."""
    producer = _Producer(events, stack.settings, rate, malformed_every)
    total = len(events) + (len(events) // malformed_every if malformed_every else 0)
    t0, timeline = time.monotonic(), Timeline(start=time.time())
    producer.start()
    _watch(stack, producer, total, stack.log_dir, timeline)
    meta = {
        "sent": producer.sent,
        "malformed": producer.bad,
        "seconds": time.monotonic() - t0,
        "start": timeline.start,
        "rate": rate,
    }
    return stack.stats(fresh=True), meta, timeline


def run_demo(settings: Settings, args) -> int:
    from stream_ctr.bench.quality import in_process_quality

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    events = load_dataset("ml-100k", args.limit)
    malformed = len(events) // args.malformed_every if args.malformed_every else 0
    print(
        f"stream-ctr demo: {len(events)} MovieLens-100K events (+{malformed} malformed), logs in {out}/logs", flush=True
    )
    with Stack(settings, out / "logs") as stack:
        s = stack.settings
        print(
            f"Kafka {s.kafka_bootstrap}; worker {stack.worker_url}/metrics; trainer {s.trainer_url}/metrics", flush=True
        )
        final, meta, timeline = replay_live(stack, events, args.rate, args.malformed_every)
        png = plot_timeline(timeline, out / "demo-timeline.png")
        closed_loop = _closed_loop(s, args, out / "logs") if args.sim_requests else ""
    print("the same events in-process, for comparison ...", flush=True)
    meta |= {
        "dataset": "ml-100k",
        "timeline": png.name,
        "in_process": in_process_quality(
            settings.replace(delta_every=IN_PROCESS_EVERY, batch_size=IN_PROCESS_EVERY), events
        )["global"],
    }
    report = render_report(final, meta) + ("\n" + closed_loop if closed_loop else "")
    (out / "demo-report.md").write_text(report)
    print(report)
    print(f"report saved to {out / 'demo-report.md'}")
    return 0
