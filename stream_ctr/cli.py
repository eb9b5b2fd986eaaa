"""``stream-ctr``: run the service (up, worker, trainer), feed it (replay), show it (demo), study it (evaluate)."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import signal
import sys
import tempfile
import time
from pathlib import Path

from stream_ctr.broker.kafka import BrokerUnreachable
from stream_ctr.config import ConfigError, Settings
from stream_ctr.evaluate.cli import add_parser as add_evaluate
from stream_ctr.experiments.assignment import ExperimentError

__all__ = ["main"]


def _settings() -> Settings:
    return Settings.from_env()


def cmd_config(args) -> int:
    print(Settings.markdown() if args.markdown else _settings().describe())
    return 0


def _broker_settings(why: str, group: str = "", **overrides) -> Settings:
    """The settings of a command that talks to an existing broker (with ``overrides`` from its flags, checked
    first): KAFKA_BOOTSTRAP set and answering, this process's credentials accepted, and the declared topics (and
    the consumer group ``<app id>-<group>``) allowed to it."""
    from stream_ctr import topics
    from stream_ctr.broker.kafka import require_broker

    s = _settings().replace(**overrides)
    if not s.kafka_bootstrap:
        raise ConfigError(f"KAFKA_BOOTSTRAP: {why} (stream-ctr up prints it)")
    groups = (f"{s.app_id}-{group}",) if group else ()
    require_broker(s, topics=tuple(t.name for t in topics.declared(s)), groups=groups)
    return s


def _run_faust(app) -> int:
    """Run ``app`` until it stops; :data:`~stream_ctr.process.net.EXIT_PORT_TAKEN` when its HTTP port was taken (Faust
    logs the bind error and exits with 1, like for any other failure)."""
    from faust import Worker

    from stream_ctr.process.net import EXIT_PORT_TAKEN, port_taken

    try:
        Worker(app, loglevel="info").execute_from_commandline()
    except SystemExit as done:
        if done.code and port_taken(done):
            return EXIT_PORT_TAKEN
        raise
    return 0


def cmd_acls(args) -> int:
    from stream_ctr.broker.acls import apply_acls, describe_acl, service_acls

    s = _settings()
    principal = args.principal or (f"User:{s.kafka_sasl_username}" if s.kafka_sasl_username else "")
    if not principal.startswith("User:") or principal == "User:":
        raise ConfigError("--principal: expected User:<name> (or set STREAM_CTR_KAFKA_SASL_USERNAME)")
    acls = service_acls(s, principal)
    if args.apply:
        from stream_ctr.broker.kafka import require_broker

        if not s.kafka_bootstrap:
            raise ConfigError("KAFKA_BOOTSTRAP: --apply creates the ACLs on a broker")
        require_broker(s)
        apply_acls(s, acls)
    print("\n".join(("created: " if args.apply else "") + describe_acl(acl) for acl in acls))
    return 0


def cmd_worker(args) -> int:
    import torch

    from stream_ctr import topics
    from stream_ctr.agents.personalize import PersonalizeWorker
    from stream_ctr.experiments.registry import registered

    settings = _broker_settings("the worker consumes ctr.events", group="personalize")
    torch.set_num_threads(settings.worker_threads)
    worker = PersonalizeWorker.build(settings)
    # A restart does not undo a guardrail's stop, nor go back to an earlier epoch of a bandit.
    worker.use(registered(settings, topics.experiments(settings).name, worker.experiment))
    # The ~350,000 objects of the imported libraries, out of every full collection: scanning them stalled the
    # event loop, and every scoring request waiting on it, for 150-350 ms every few seconds under load.
    gc.collect()
    gc.freeze()
    return _run_faust(worker.app)


def cmd_scorer(args) -> int:
    import torch

    from stream_ctr.agents.scorer import Scorer

    settings = _broker_settings("a scorer follows the model and the users' heads")
    torch.set_num_threads(settings.worker_threads)
    scorer = Scorer.build(settings)
    gc.collect()
    gc.freeze()  # as the worker: the libraries' objects out of every full collection
    return _run_faust(scorer.app)


def cmd_trainer(args) -> int:
    """The trainer; with ``--world-size N`` (or STREAM_CTR_TRAINER_WORLD_SIZE) > 1 the elastic agent of N ranks,
    each of them this command again in the group the agent made (:mod:`stream_ctr.trainer.distributed`)."""
    import torch

    from stream_ctr.agents.trainer import TrainerWorker
    from stream_ctr.process.children import die_with_parent
    from stream_ctr.trainer.distributed import Group, launch

    flags = {} if args.world_size is None else {"trainer_world_size": args.world_size}
    settings = _broker_settings("the trainer consumes ctr.events", **flags)
    group = Group.from_env()
    if group is None and settings.trainer_world_size > 1:
        return launch(settings.trainer_world_size, ["-m", "stream_ctr.cli", "trainer"], settings.trainer_restarts)
    if group is not None:
        die_with_parent()  # the agent: a rank never outlives it
    torch.set_num_threads(settings.trainer_threads)
    return _run_faust(TrainerWorker.build(settings, settings.trainer_port, group).app)


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def _wait_for_ctrl_c() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def cmd_kafka(args) -> int:
    from stream_ctr.broker.kafka import LocalKafka

    with LocalKafka() as kafka:
        print(f"KAFKA_BOOTSTRAP={kafka.bootstrap}  (Ctrl-C stops it)", flush=True)
        _wait_for_ctrl_c()
    return 0


def cmd_up(args) -> int:
    """Run the stack until Ctrl-C or SIGTERM (exit 0, everything stopped within seconds) or until one of its
    processes exits (exit 1, after saying which, how and its log's last lines, and stopping the rest). Its
    processes die with it even when it is SIGKILLed (:mod:`stream_ctr.process.children`)."""
    from stream_ctr.service.stack import Stack

    logs = Path(args.logs or tempfile.mkdtemp(prefix="stream-ctr-logs-"))
    with Stack(_settings(), logs, scorers=args.scorers) as stack:
        s = stack.settings
        scorers = "".join(
            f"{name:<11}{stack.url(name)}  (/v1/score /metrics /healthz)\n" for name in stack.scorer_names
        )
        print(
            f"Kafka      {s.kafka_bootstrap}\nworker     {stack.worker_url}  (/metrics /healthz /v1/stats "
            f"/v1/users/<id>)\n{scorers}trainer    {s.trainer_url}  (/metrics /healthz)\nlogs       {logs}\n"
            f"replay:    KAFKA_BOOTSTRAP={s.kafka_bootstrap} stream-ctr replay --dataset ml-100k\n"
            "Ctrl-C stops everything.",
            flush=True,
        )
        try:
            gone = stack.watch()
        except KeyboardInterrupt:
            return 0
        print(
            f"stream-ctr: {stack.describe_exit(gone)}\nstream-ctr: {gone} is gone; stopping the rest",
            file=sys.stderr,
            flush=True,
        )
    return 1


def cmd_replay(args) -> int:
    from stream_ctr import topics
    from stream_ctr.broker.replay import replay
    from stream_ctr.data import load_dataset

    s = _broker_settings("replay needs a broker")
    events = load_dataset(args.dataset, args.limit, args.seed)
    t0 = time.monotonic()
    sent, bad = replay(events, s, topics.events(s).name, args.rate, args.malformed_every)
    dt = time.monotonic() - t0
    print(f"replayed {sent} {args.dataset} events (+{bad} malformed) in {dt:.1f}s ({sent / dt:.0f}/s)")
    return 0


def cmd_simulate(args) -> int:
    from stream_ctr.data.synthetic import SyntheticConfig
    from stream_ctr.experiments.simulate import SimConfig
    from stream_ctr.service.closed_loop import render_closed_loop, run_closed_loop

    s = _broker_settings("simulate sends its users' events to ctr.events")
    sim = SimConfig(requests=args.requests, candidates=args.candidates, k=args.k, seed=args.seed, start_ts=time.time())
    world = SyntheticConfig(users=args.users, items=args.items, drift=args.drift, seed=args.seed)
    t0 = time.monotonic()
    loop = run_closed_loop(s, sim, world, args.url)
    print(render_closed_loop(loop))
    print(f"{args.requests} requests in {time.monotonic() - t0:.1f}s")
    return 0


def cmd_ab_report(args) -> int:
    from stream_ctr.experiments.report import read_results, render_markdown

    s = _broker_settings("the report reads ctr.exposures and ctr.events")
    from stream_ctr.experiments.assignment import Experiment

    experiment = Experiment.configured(args.experiment or s.experiment_file)
    if experiment.bandit is not None:  # its weights change per epoch: no fixed split to test against
        raise ExperimentError(
            f"experiment.bandit: {experiment.name!r} is a bandit; ab report's fixed-split tests do not apply "
            "(use stream-ctr ab ope, which weighs each exposure by the propensity it was served with)"
        )
    result = read_results(s, experiment, args.planned_users)
    print(render_markdown(result, f"A/B experiment {experiment.name!r}"))
    return 0


def cmd_ab_change(args) -> int:
    """``ab stop ARM`` / ``ab resume ARM``: publish the running experiment with one arm's weight set to 0, or back
    to its weight before the stop, with an audit record; every worker applies it within
    STREAM_CTR_EXPERIMENT_POLL_S. ``ab history``: the audit records."""
    import getpass
    import socket

    from stream_ctr import topics
    from stream_ctr.experiments import registry
    from stream_ctr.experiments.assignment import Experiment

    s = _broker_settings("ab stop/resume/history use ctr.experiments")
    name = Experiment.configured(args.experiment or s.experiment_file).name
    topic = topics.experiments(s).name
    if args.ab_command == "history":
        for record in registry.history(s, topic, name):
            print(json.dumps(record))
        return 0
    by = f"{getpass.getuser()}@{socket.gethostname()} (stream-ctr ab {args.ab_command})"
    change = registry.stop_arm if args.ab_command == "stop" else registry.resume_arm
    definition = change(s, topic, name, args.arm, reason=args.reason, by=by)
    print(json.dumps(definition.to_dict()))
    return 0


def cmd_ab_bandit(args) -> int:
    """``ab bandit``: publish the epochs of the configured bandit experiment on ctr.experiments, each at its
    boundary, until Ctrl-C or SIGTERM (``--once``: the epoch due now, if any, then exit)."""
    import threading

    from stream_ctr import topics
    from stream_ctr.experiments.allocator import run
    from stream_ctr.experiments.assignment import Experiment

    s = _broker_settings("ab bandit reads ctr.exposures and ctr.events and publishes on ctr.experiments")
    experiment = Experiment.configured(args.experiment or s.experiment_file)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    published = run(s, topics.experiments(s).name, experiment, once=args.once, stop=stop)
    if args.once:
        print(json.dumps(published.to_dict() if published is not None else None))
    return 0


def cmd_users_delete(args) -> int:
    """Erase a user on the running service (``DELETE /v1/users/{id}``, routed to the owner)."""
    from stream_ctr.serving.client import ScoringError, erase_user

    key = Path(args.api_key_file).read_text().strip() if args.api_key_file else None
    try:
        answer = erase_user(args.url, args.user_id, key)
    except (ScoringError, OSError) as exc:
        print(f"stream-ctr: erasing {args.user_id!r} at {args.url} failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer))
    return 0


def cmd_ab_aa(args) -> int:
    import json

    from stream_ctr.experiments.aa import AAConfig, render_markdown, run_aa

    try:
        cfg = AAConfig(
            runs=args.runs,
            users=args.users,
            requests=args.requests,
            peek_every=args.peek_every,
            lift=args.lift,
            seed=args.seed,
        )
    except ValueError as exc:
        print(f"stream-ctr ab aa: {exc}", file=sys.stderr)
        return 2
    out = run_aa(cfg)
    text = render_markdown(out)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    if args.out:
        Path(args.out).write_text(text)
    return 0


def cmd_ab_ope(args) -> int:
    from stream_ctr.experiments import ope

    try:
        if args.simulate:
            from stream_ctr.experiments.ope_sim import OPESimConfig, run_simulation

            cfg = OPESimConfig(
                requests=args.requests, users=args.users, truth_requests=args.truth_requests, seed=args.seed
            )
            result, title = run_simulation(cfg, args.arm), "Off-policy estimate on the simulator"
        else:
            from stream_ctr.experiments.assignment import Experiment
            from stream_ctr.experiments.exposures import logged_units, read_logs

            s = _broker_settings("ab ope reads ctr.exposures and ctr.events")
            experiment = Experiment.configured(args.experiment or s.experiment_file)
            log = logged_units(*read_logs(s, experiment.name), s.attribution_window_s)
            result, title = ope.report(log, args.arm), f"Off-policy estimate from experiment {experiment.name!r}"
    except (ConfigError, ExperimentError):
        raise  # main() says what is wrong with the settings or the experiment file
    except ValueError as exc:  # no usable exposure yet, or a policy serving an arm never logged
        print(f"stream-ctr ab ope: {exc}", file=sys.stderr)
        return 2
    print(ope.render_markdown(result, title))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=_jsonable) + "\n")
    return 0


def _jsonable(value):
    """JSON for the dataclasses of a result (estimates)."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def cmd_demo(args) -> int:
    from stream_ctr.service.demo import run_demo

    return run_demo(_settings(), args)


def cmd_bench(args) -> int:
    from stream_ctr.bench import (
        headline,
        run_bench,
        run_pipeline_bench,
        run_quality_bench,
        run_serving_bench,
        run_state_bench,
    )

    settings = _settings()
    every = args.json is not None  # --json: every part but --quality, one run, one broker
    lines, numbers = (
        ([], {}) if args.no_inprocess and not every else run_bench(settings, args.families.split(","), args.limit)
    )
    parts = {}
    for flag, part, run in (
        ("serving", "serving", lambda: run_serving_bench(settings, args.serving_requests)),
        ("state", "state", lambda: run_state_bench(settings, args.users, args.stores)),
        ("pipeline", "pipeline", lambda: run_pipeline_bench(settings, args.limit)),
    ):
        if getattr(args, flag) or every:
            more, parts[part] = run()
            lines += more
    if every:
        summary = headline(numbers, parts["serving"], parts["state"], parts["pipeline"])
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
        lines += ["", "## Headline (" + args.json + ")", "", "```json", json.dumps(summary, indent=2), "```"]
    if args.serving_load:
        from stream_ctr.bench.load import run_load_bench

        lines += run_load_bench(
            settings,
            args.load_rates,
            args.load_seconds,
            stream_rates=(0.0, args.load_stream_rate) if args.load_stream_rate > 0 else (0.0,),
            scorers=args.load_scorers,
        )[0]
    if args.quality:
        for dataset in args.datasets:
            lines += run_quality_bench(
                settings,
                dataset,
                args.limit,
                args.cadences,
                args.quality_families,
                args.corrections,
                None if args.live_rate < 0 else args.live_rate,
            )[0]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stream-ctr", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    config = sub.add_parser("config", help="list every setting with its env name and default, by section")
    config.add_argument("--markdown", action="store_true", help="the defaults as the tables of docs/CONFIGURATION.md")
    config.set_defaults(func=cmd_config)
    _add_service_parsers(sub)
    _add_feed_parsers(sub)
    _add_users_parser(sub)
    _add_bench_parser(sub)
    _add_study_parsers(sub)
    add_evaluate(sub)
    return p


def _add_service_parsers(sub) -> None:
    """The commands that run the service: worker, trainer, a local Kafka, all of it (``up``)."""
    sub.add_parser("worker", help="run the personalize worker (Faust)").set_defaults(func=cmd_worker)
    sub.add_parser(
        "scorer", help="serve POST /v1/score beside the workers from the model and the users' heads (no learning)"
    ).set_defaults(func=cmd_scorer)
    tr = sub.add_parser("trainer", help="run the global trainer (Faust)")
    tr.add_argument(
        "--world-size",
        type=int,
        metavar="N",
        help="run N data-parallel ranks on this machine (default: STREAM_CTR_TRAINER_WORLD_SIZE, 1)",
    )
    tr.set_defaults(func=cmd_trainer)
    sub.add_parser("kafka", help="run a local Kafka until Ctrl-C").set_defaults(func=cmd_kafka)
    acls = sub.add_parser("acls", help="the Kafka ACLs the service's principal needs (its topics and groups only)")
    acls.add_argument(
        "--principal",
        help="who gets them, e.g. User:stream-ctr (default: User:<STREAM_CTR_KAFKA_SASL_USERNAME>)",
    )
    acls.add_argument(
        "--apply",
        action="store_true",
        help="create them on KAFKA_BOOTSTRAP, connecting with the security settings of a principal allowed to "
        "alter ACLs (an admin), instead of printing them",
    )
    acls.set_defaults(func=cmd_acls)
    up = sub.add_parser("up", help="start (or connect to) Kafka, create topics, run worker + trainer")
    up.add_argument("--logs", help="directory for process logs (default: a temp dir)")
    up.add_argument(
        "--scorers",
        type=_non_negative_int,
        default=0,
        help="also run this many scorer processes: /v1/score beside the worker, learning nothing (stream-ctr scorer)",
    )
    up.set_defaults(func=cmd_up)


def _add_users_parser(sub) -> None:
    """``users delete``: a user's erasure on the running service."""
    users = sub.add_parser("users", help="a user's data on the running service").add_subparsers(
        dest="users_command", required=True
    )
    delete = users.add_parser("delete", help="erase a user: state, metrics rows, pending exposures (admin key)")
    delete.add_argument("user_id")
    delete.add_argument("--url", default="http://127.0.0.1:6066", help="any worker (default %(default)s)")
    delete.add_argument("--api-key-file", help="a file holding an admin API key (when the API has keys)")
    delete.set_defaults(func=cmd_users_delete)


def _add_feed_parsers(sub) -> None:
    """The commands that feed it real clicks: ``replay`` and the whole ``demo``."""
    rp = sub.add_parser("replay", help="produce a dataset's clicks to ctr.events")
    rp.add_argument("--dataset", choices=["ml-100k", "synthetic"], default="ml-100k")
    rp.add_argument("--rate", type=_non_negative, default=0.0, help="events per second (0 = as fast as possible)")
    rp.add_argument("--limit", type=_positive_int, default=None, help="replay only the first N events")
    rp.add_argument("--seed", type=int, default=0, help="seed of the synthetic generator")
    rp.add_argument(
        "--malformed-every",
        type=_non_negative_int,
        default=0,
        help="inject a malformed record every N events (0 = none)",
    )
    rp.set_defaults(func=cmd_replay)
    dm = sub.add_parser("demo", help="Kafka + worker + trainer, replay ML-100K, print the per-arm report")
    dm.add_argument("--limit", type=_positive_int, default=None)
    dm.add_argument(
        "--rate",
        type=_non_negative,
        default=3000.0,
        help="events/s replayed (0 = as fast as the producer goes); the default keeps the stream at a "
        "rate the global trainer follows on 2 cores, as a live stream would arrive",
    )
    dm.add_argument("--malformed-every", type=_non_negative_int, default=5000)
    dm.add_argument("--out", default="reports", help="where demo-report.md and logs go")
    dm.add_argument(
        "--sim-requests",
        type=_non_negative_int,
        default=10000,
        help="scoring requests of the closed-loop A/B phase (0 skips it)",
    )
    dm.add_argument("--sim-seed", type=int, default=0, help="seed of the simulated users' world")
    dm.set_defaults(func=cmd_demo)


def _add_study_parsers(sub) -> None:
    """The commands that study a running service: the closed-loop simulation and the A/B report."""
    sm = sub.add_parser("simulate", help="closed loop: synthetic users request rankings and click on what they see")
    sm.add_argument("--url", help="a worker's base URL (default: STREAM_CTR_WEB_HOST/PORT)")
    sm.add_argument("--requests", type=_positive_int, default=5000)
    sm.add_argument("--users", type=_positive_int, default=300)
    sm.add_argument("--items", type=_positive_int, default=400)
    sm.add_argument("--candidates", type=_positive_int, default=50, help="candidates ranked per request")
    sm.add_argument("--k", type=_positive_int, default=5, help="top k shown to the user")
    sm.add_argument("--drift", type=float, default=2.0, help="spread of the users' click priors (logit std)")
    sm.add_argument("--seed", type=int, default=0)
    sm.set_defaults(func=cmd_simulate)
    ab = sub.add_parser("ab", help="online experiment tools").add_subparsers(dest="ab_command", required=True)
    rep = ab.add_parser("report", help="per-arm results with CIs and the sample-ratio check, from the topics")
    rep.add_argument("--experiment", help="experiment file (default: STREAM_CTR_EXPERIMENT or the default one)")
    rep.add_argument(
        "--planned-users",
        type=_positive_int,
        default=1000,
        help="users the experiment plans to reach: where its always-valid intervals are tightest (set it before "
        "the experiment starts, not after reading it)",
    )
    rep.set_defaults(func=cmd_ab_report)
    aa = ab.add_parser("aa", help="simulated A/A and planted-lift runs read continuously: false positives and power")
    aa.add_argument("--runs", type=_positive_int, default=200, help="A/A runs, and as many planted runs")
    aa.add_argument("--users", type=_positive_int, default=2000)
    aa.add_argument("--requests", type=_positive_int, default=40_000, help="requests per run")
    aa.add_argument("--peek-every", type=_positive_int, default=1000, help="requests between readings")
    aa.add_argument("--lift", type=_non_negative, default=0.15, help="relative CTR lift planted in arm b")
    aa.add_argument("--seed", type=int, default=0)
    aa.add_argument("--json", metavar="FILE", help="write the figures here")
    aa.add_argument("--out", metavar="FILE", help="write the markdown table here")
    aa.set_defaults(func=cmd_ab_aa)
    _add_ope_parser(ab)
    _add_change_parsers(ab)
    bandit = ab.add_parser(
        "bandit", help="allocate a bandit experiment: publish each epoch's Thompson-sampling weights (audited)"
    )
    bandit.add_argument("--experiment", help="experiment file (default: STREAM_CTR_EXPERIMENT)")
    bandit.add_argument("--once", action="store_true", help="publish the epoch due now, if any, print it and exit")
    bandit.set_defaults(func=cmd_ab_bandit)


def _add_change_parsers(ab) -> None:
    for command, help in (
        ("stop", "stop an arm of the running experiment: weight 0, its users served the control (audited)"),
        ("resume", "serve a stopped arm again at its weight before the stop (audited)"),
        ("history", "the audit records of the experiment's stops, resumes and epochs, oldest first (JSON lines)"),
    ):
        p = ab.add_parser(command, help=help)
        p.add_argument("--experiment", help="experiment file (default: STREAM_CTR_EXPERIMENT or the default one)")
        if command != "history":
            p.add_argument("arm", help="the arm")
            p.add_argument("--reason", required=True, help="why (recorded in the definition and the audit record)")
        p.set_defaults(func=cmd_ab_change)


def _add_ope_parser(ab) -> None:
    ope = ab.add_parser("ope", help="off-policy estimates (IPS, SNIPS, doubly robust) of a policy's CTR from the log")
    ope.add_argument(
        "--arm",
        required=True,
        type=_policy,
        help="the policy to evaluate: one arm served to everyone (ft_lc), or a mix of arms (ft=1,ft_lc=1)",
    )
    ope.add_argument("--experiment", help="experiment file (default: STREAM_CTR_EXPERIMENT or the default one)")
    ope.add_argument("--json", metavar="FILE", help="also write the figures here")
    sim = ope.add_argument_group("--simulate: no Kafka; the closed-loop simulator's log, against the true CTR")
    sim.add_argument("--simulate", action="store_true", help="estimate from a simulated log and compare with the truth")
    sim.add_argument("--requests", type=_positive_int, default=8000, help="logged requests")
    sim.add_argument("--users", type=_positive_int, default=500)
    sim.add_argument("--truth-requests", type=_positive_int, default=20_000, help="on-policy requests per arm")
    sim.add_argument("--seed", type=int, default=0)
    ope.set_defaults(func=cmd_ab_ope)


def _policy(text: str) -> str | dict[str, float]:
    """``ARM`` or ``ARM=WEIGHT,ARM=WEIGHT``."""
    if "=" not in text:
        return text
    try:
        return {arm.strip(): float(w) for arm, w in (part.split("=") for part in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ARM or ARM=WEIGHT,ARM=WEIGHT, got {text!r}") from None


def _number(kind, lowest, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not value >= lowest:  # also refuses nan
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    return parse


_positive_int = _number(int, 1, "a positive integer")
_non_negative_int = _number(int, 0, "an integer >= 0")
_non_negative = _number(float, 0.0, "a number >= 0")
_positive_float = _number(float, 1e-9, "a number > 0")


def _add_bench_parser(sub) -> None:
    bn = sub.add_parser("bench", help="measure trainer, test-then-train, state and snapshot costs in-process")
    bn.add_argument("--families", default="deepfm,lr,fm,wd,dcn")
    bn.add_argument("--limit", type=_positive_int, default=None, help="use the first N MovieLens events")
    bn.add_argument("--out", help="also write the markdown here")
    _add_bench_serving_args(bn.add_argument_group("serving (--serving, --serving-load)"))
    _add_bench_state_args(bn.add_argument_group("state (--state)"))
    _add_bench_quality_args(bn.add_argument_group("quality (--quality)"))
    bn.add_argument(
        "--pipeline",
        action="store_true",
        help="also measure the worker draining a pre-filled ctr.events (1 and 2 workers) against a raw "
        "aiokafka consumer of the same topic",
    )
    bn.add_argument(
        "--json", metavar="FILE", help="run every part but --quality and write the headline numbers to FILE"
    )
    bn.add_argument("--no-inprocess", action="store_true", help="skip the in-process measurements")
    bn.set_defaults(func=cmd_bench)


def _add_bench_serving_args(group) -> None:
    group.add_argument("--serving", action="store_true", help="also measure the scoring API on a real worker")
    group.add_argument("--serving-requests", type=_positive_int, default=2000)
    group.add_argument(
        "--serving-load",
        action="store_true",
        help="also drive /v1/score open-loop at stepped rates (vegeta: `make vegeta`), without and with "
        "events flowing, and report latency quantiles, goodput, shed requests and the capacity; "
        "then the cost of a request forwarded to another worker",
    )
    group.add_argument(
        "--load-rates",
        type=_rates,
        default="250,500,1000,2000,3000",
        help="requests/s of --serving-load's steps, comma separated",
    )
    group.add_argument("--load-seconds", type=_positive_float, default=15.0, help="seconds of each --serving-load step")
    group.add_argument(
        "--load-scorers",
        type=_non_negative_int,
        default=1,
        help="then start this many scorer processes (stream-ctr scorer) beside the worker and send the same steps "
        "to them in turn (0: the worker only)",
    )
    group.add_argument(
        "--load-stream-rate",
        type=_non_negative,
        default=3000.0,
        help="events/s flowing during --serving-load's second pass (0: only the pass without events)",
    )


def _add_bench_state_args(group) -> None:
    group.add_argument(
        "--state", action="store_true", help="also measure state and memory per user and recovery time on a real worker"
    )
    group.add_argument("--users", type=_positive_int, default=100_000, help="distinct users of --state")
    group.add_argument("--stores", type=_stores, default="memory,rocksdb", help="table stores of --state")


def _add_bench_quality_args(group) -> None:
    group.add_argument(
        "--quality",
        action="store_true",
        help="also measure progressive prediction quality per arm against River baselines",
    )
    group.add_argument("--datasets", type=_datasets, default="ml-100k,synthetic", help="datasets of --quality")
    group.add_argument(
        "--cadences",
        type=_cadences,
        default="1000,200,8",
        help="model delta cadences (samples) of --quality, comma separated",
    )
    group.add_argument(
        "--corrections",
        type=_corrections,
        default=(),
        help="label-correction methods of --quality's ft_lc arm to compare, comma separated "
        "(e.g. lc,lc_evidence,lc_significant,lc_bias)",
    )
    group.add_argument(
        "--live-rate",
        type=float,
        default=3000.0,
        metavar="N",
        help="--quality's live rows: replay the events through Kafka, the worker and the trainer at N "
        "events/s (0: as fast as the producer goes; negative: no live rows)",
    )
    group.add_argument(
        "--quality-families",
        type=_quality_families,
        default=None,
        help="model families of --quality, comma separated (default: STREAM_CTR_MODEL_FAMILY)",
    )


def _choices(*allowed: str):
    """A comma-separated list of ``allowed`` values, as a list."""

    def parse(text: str) -> list[str]:
        values = text.split(",")
        if not set(values) <= set(allowed):
            raise argparse.ArgumentTypeError(f"expected some of {', '.join(allowed)} (comma separated), got {text!r}")
        return values

    return parse


def _cadences(text: str) -> list[int]:
    return [_positive_int(part) for part in text.split(",")]


_rates = _cadences


_datasets = _choices("ml-100k", "synthetic")
_stores = _choices("memory", "rocksdb")


def _corrections(text: str) -> list[str]:
    from stream_ctr.learning.correction import LC_VARIANTS

    return _choices(*LC_VARIANTS)(text)


def _quality_families(text: str) -> list[str]:
    from stream_ctr.models import FAMILIES

    return _choices(*FAMILIES)(text)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)  # kafka-python logs every connection at INFO
    args = build_parser().parse_args(argv)
    if args.command in ("up", "demo", "kafka"):
        # SIGTERM unwinds like Ctrl-C, so every process these commands started is stopped on the way out.
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"stream-ctr: configuration error: {err}", file=sys.stderr)
        return 2
    except ExperimentError as err:
        print(f"stream-ctr: experiment error: {err}", file=sys.stderr)
        return 2
    except BrokerUnreachable as err:
        print(f"stream-ctr: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # interrupted while starting: everything started so far was stopped on the way out
        print("stream-ctr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
