"""The ``Pipeline`` dashboard: throughput, consumer lag, latency and the trainer, serving, the model in use,
the processes.
"""

from __future__ import annotations

from stream_ctr.monitoring.dashboards.panels import (
    ANY_JOB,
    EVENTS,
    SERVING,
    TRAINER,
    UP_DOWN,
    WORKER,
    Row,
    dashboard,
    q,
    quantile,
    rate,
    row,
    sel,
    stat,
    steps,
    timeseries,
)


def _pipeline_throughput() -> Row:
    return row(
        "Throughput",
        timeseries(
            "Event throughput by outcome",
            "How many events per second the workers consume, and what happens to them: applied "
            "(learned), duplicate (redelivered, skipped by per-user offsets), dead_letter (failed "
            "validation).",
            [q(f"sum by (outcome) ({rate(EVENTS)})", "{{outcome}}")],
            "ops",
        ),
        timeseries(
            "Dead letters by reason",
            "Why events go to ctr.events.dlq: events per second by validation failure (a closed set of "
            "reasons; the raw bytes and the reason are in the record's headers).",
            [q(f"sum by (reason) ({rate(sel('stream_ctr_dead_letter_total'))})", "{{reason}}")],
            "ops",
        ),
    )


def _pipeline_consumer_lag() -> Row:
    return row(
        "Consumer lag",
        timeseries(
            "Consumer lag per topic and group",
            "Are the consumers keeping up? Events on each topic not yet committed by the group (end "
            "offset - committed offset), summed over the partitions each job owns.",
            [
                q(
                    f"sum by (job, topic, group) ({sel('stream_ctr_consumer_lag_events', ANY_JOB)})",
                    "{{job}} {{topic}} ({{group}})",
                )
            ],
            "short",
            min=0,
        ),
        stat(
            "Stalled partitions",
            "Partitions with events waiting and no committed progress for STREAM_CTR_STALL_AFTER_S: their "
            "users get no updates (alert StreamCtrPartitionStalled).",
            [q(f"sum by (job) ({sel('stream_ctr_partitions_stalled', ANY_JOB)})", "{{job}}")],
            "short",
            thresholds=steps(("green", None), ("red", 1)),
            decimals=0,
        ),
        stat(
            "Users with state",
            "How many users the workers hold a rolling CTR and heads for (active within STREAM_CTR_USER_IDLE_S).",
            [q(f"sum({sel('stream_ctr_users')})", "users")],
            "short",
            graph=True,
            decimals=0,
        ),
    )


def _pipeline_latency_and_trainer() -> Row:
    return row(
        "Latency and trainer",
        *_worker_latency_panels(),
        *_trainer_panels(),
    )


def _worker_latency_panels() -> tuple[dict, ...]:
    """The worker's test-then-train batch latency, and Faust's offset commits and rebalances."""
    return (
        timeseries(
            "Test-then-train batch latency",
            "How long one personalize batch takes to score with every arm and then learn.",
            [
                q(quantile(p, sel("stream_ctr_batch_seconds_bucket"), rated=True), f"p{round(p * 100)}")
                for p in (0.5, 0.99)
            ],
            "s",
            w=6,
        ),
        timeseries(
            "Offset commits and rebalances (Faust)",
            "How long Faust takes to commit offsets (p50, p99), and the mean duration of this worker's "
            "rebalances including table recovery.",
            [
                *(
                    q(quantile(p, sel("stream_ctr_commit_seconds_bucket"), rated=True), f"commit p{round(p * 100)}")
                    for p in (0.5, 0.99)
                ),
                q(
                    f"sum({sel('stream_ctr_rebalance_seconds_sum')}) / "
                    f"sum({sel('stream_ctr_rebalance_seconds_count')})",
                    "rebalance (mean)",
                ),
            ],
            "s",
            w=6,
        ),
    )


def _trainer_panels() -> tuple[dict, ...]:
    """The trainer's throughput, batch latency and loss."""
    return (
        timeseries(
            "Trainer samples / s",
            "How fast the global model trains: samples per second, and invalid events it skipped.",
            [
                q(f"sum({rate(sel('stream_ctr_trainer_samples_total', TRAINER))})", "trained"),
                q(f"sum({rate(sel('stream_ctr_trainer_skipped_total', TRAINER))})", "skipped (invalid)"),
            ],
            "ops",
            w=6,
        ),
        timeseries(
            "Trainer batch latency",
            "How long the trainer takes to train on one consumed batch.",
            [
                q(
                    quantile(p, sel("stream_ctr_trainer_batch_seconds_bucket", TRAINER), rated=True),
                    f"p{round(p * 100)}",
                )
                for p in (0.5, 0.99)
            ],
            "s",
            w=6,
        ),
        timeseries(
            "Trainer loss",
            "Is the global model still learning? Training logloss of the last mini-batch.",
            [q(f"avg({sel('stream_ctr_trainer_loss', TRAINER)})", "last mini-batch logloss")],
            "none",
            w=6,
            decimals=3,
        ),
    )


def _pipeline_serving() -> Row:
    served = rate(sel("stream_ctr_serving_batch_requests_sum", SERVING))
    return row(
        "Serving: /v1/score",
        timeseries(
            "Scoring requests / s",
            "Requests ranked by the workers and scorer processes, and requests shed (alert "
            "StreamCtrScoringShed): over_capacity = refused 429 at the door (more than "
            "STREAM_CTR_SERVING_MAX_IN_FLIGHT held), deadline = dropped 503 after waiting past X-Deadline-Ms.",
            [
                q(f"sum({served})", "ranked"),
                q(f"sum by (reason) ({rate(sel('stream_ctr_serving_shed_total', SERVING))})", "shed {{reason}}"),
            ],
            "reqps",
            w=8,
            min=0,
        ),
        timeseries(
            "Scoring queue time and event-loop lag",
            "Time from a request's body being read to its ranking starting (p50, p99), and how late each "
            "worker's or scorer's event loop runs (requests are refused while it is past "
            "STREAM_CTR_SERVING_MAX_LAG_MS).",
            [
                *(
                    q(
                        quantile(p, sel("stream_ctr_serving_queue_seconds_bucket", SERVING), rated=True),
                        f"queued p{round(p * 100)}",
                    )
                    for p in (0.5, 0.99)
                ),
                q(f"max({sel('stream_ctr_serving_loop_lag_seconds', SERVING)})", "loop lag (worst process)"),
            ],
            "s",
            w=8,
            min=0,
        ),
        timeseries(
            "Requests per forward pass",
            "How many scoring requests share one encoding and forward pass (micro-batching): 1 when "
            "traffic is light, more as it grows.",
            [q(f"sum({served}) / sum({rate(sel('stream_ctr_serving_batch_requests_count', SERVING))})", "mean")],
            "none",
            w=8,
            min=0,
            decimals=1,
        ),
    )


def _pipeline_model() -> Row:
    return row(
        "Model: trainer -> workers",
        stat(
            "Model version",
            "Do the workers score with the newest model? The oldest version in use on a worker, the newest "
            "the trainer published, and the full snapshots swapped in over the last hour.",
            [
                q(f"min({sel('stream_ctr_model_version')})", "in use (oldest worker)"),
                q(f"max({sel('stream_ctr_model_version', TRAINER)})", "published (trainer)"),
                q(f"sum(increase({sel('stream_ctr_model_swaps_total')}[1h]))", "swaps in 1h"),
            ],
            "none",
            w=6,
            decimals=0,
        ),
        _model_staleness_panel(),
        timeseries(
            "Model age",
            "How stale is the model in use? Seconds since the trainer published the version each "
            "worker scores with (alert StreamCtrModelStale).",
            [q(f"max by (instance) ({sel('stream_ctr_model_age_seconds')})", "{{instance}}")],
            "s",
            w=6,
            min=0,
        ),
        timeseries(
            "Model bytes published by kind",
            "What the model updates cost the broker: bytes per second the trainer writes to the model "
            "topics, deltas (every few samples) and full snapshots (every N deltas and when quiet).",
            [q(f"sum by (kind) ({rate(sel('stream_ctr_model_published_bytes_total', TRAINER), '1m')})", "{{kind}}")],
            "Bps",
            w=6,
            min=0,
        ),
    )


def _model_staleness_panel() -> dict:
    """Events the model in use had not learned when it scored an event, and when it scored a request (workers and
    scorer processes: a scorer serves the trainer's model without a worker's catch-up)."""
    return timeseries(
        "Model staleness (events behind)",
        "How many events the model in use had not learned when it scored an event, p50 and p99 over "
        "the last minutes, and the p99 for scoring requests, workers and scorers (alert StreamCtrModelStaleness). "
        "It grows when the trainer falls behind the stream.",
        [
            *(
                q(
                    quantile(p, sel("stream_ctr_model_staleness_samples_bucket", WORKER, scored="event"), rated=True),
                    f"events p{round(p * 100)}",
                )
                for p in (0.5, 0.99)
            ),
            q(
                quantile(0.99, sel("stream_ctr_model_staleness_samples_bucket", SERVING, scored="request"), rated=True),
                "requests p99",
            ),
        ],
        "none",
        w=6,
        min=0,
    )


def _pipeline_processes() -> Row:
    return row(
        "Processes",
        timeseries(
            "CPU",
            "CPU time per second of each job (1 = one core busy).",
            [q(f"sum by (job) ({rate(sel('process_cpu_seconds_total', ANY_JOB))})", "{{job}}")],
            "percentunit",
            w=6,
            min=0,
        ),
        timeseries(
            "Resident memory",
            "Resident set size of each job's processes.",
            [q(f"sum by (job) ({sel('process_resident_memory_bytes', ANY_JOB)})", "{{job}}")],
            "bytes",
            w=6,
            min=0,
        ),
        timeseries(
            "Open file descriptors",
            "Open fds of each job's processes (sockets to the broker, RocksDB files).",
            [q(f"sum by (job) ({sel('process_open_fds', ANY_JOB)})", "{{job}}")],
            "short",
            w=6,
            min=0,
        ),
        stat(
            "Scrape health",
            "Can Prometheus scrape every worker and trainer? 1 = the last scrape succeeded.",
            [q(f"up{{{ANY_JOB}}}", "{{job}} {{instance}}")],
            "none",
            mappings=UP_DOWN,
            thresholds=steps(("red", None), ("green", 1)),
        ),
    )


def pipeline() -> dict:
    return dashboard(
        "pipeline.json",
        "Is the stream flowing? Throughput, dead letters, consumer lag, latency, the "
        "model's version and age on its way from the trainer to the workers, and the processes.",
        [
            _pipeline_throughput(),
            _pipeline_consumer_lag(),
            _pipeline_latency_and_trainer(),
            _pipeline_serving(),
            _pipeline_model(),
            _pipeline_processes(),
        ],
    )
