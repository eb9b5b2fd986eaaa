"""Typed, frozen settings: every knob has a type, a default, an environment name and a line of doc.

The knobs come in sections, one frozen dataclass each: :class:`KafkaSettings`, :class:`LearningSettings` (the
personalize worker), :class:`ServingSettings`, :class:`ExperimentSettings`, :class:`MonitoringSettings` and
:class:`TrainerSettings` (the global model). :class:`Settings` is all of them at once, so ``settings.batch_size``
reads as before, and a component that needs one section can say so in its signature.

Settings are read once at start. A value that does not parse, or is out of range, raises
:class:`ConfigError` naming the environment variable, so a bad deployment fails before it consumes anything.

>>> s = Settings.from_env({"STREAM_CTR_BATCH_SIZE": "64"})
>>> s.batch_size
64
>>> Settings.from_env({"STREAM_CTR_BATCH_SIZE": "many"})
Traceback (most recent call last):
...
stream_ctr.config.ConfigError: STREAM_CTR_BATCH_SIZE: expected int, got 'many'
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream_ctr.learning.correction import LC_VARIANTS
from stream_ctr.learning.drift import DriftParams
from stream_ctr.learning.heads import HeadParams

__all__ = [
    "CONFIG_FILE",
    "SECTIONS",
    "ConfigError",
    "ExperimentSettings",
    "KafkaSecuritySettings",
    "KafkaSettings",
    "LearningSettings",
    "MonitoringSettings",
    "ServingSettings",
    "Settings",
    "TrainerSettings",
    "read_config_file",
]

_HEAD = HeadParams()
_DRIFT = DriftParams()


#: The environment variable naming a file of settings (:func:`read_config_file`), read under the environment.
CONFIG_FILE = "STREAM_CTR_CONFIG_FILE"


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range; the message starts with its environment name."""


def _knob(default: Any, env: str, doc: str, check=None, formerly: str = ""):
    """A setting: its default, environment name, one line of doc, a range check, and the environment name it had
    before it was renamed (still read, listed in CHANGELOG.md)."""
    return field(default=default, metadata={"env": env, "doc": doc, "check": check, "formerly": formerly})


def _positive(v) -> bool:
    return v > 0


def _family(v) -> bool:
    from stream_ctr.models import FAMILIES  # the registry of model families is their one owner

    return v in FAMILIES


@dataclass(frozen=True)
class KafkaSettings:
    """Where the broker is and how stream-ctr uses it: topics, partitions, replication, group liveness."""

    kafka_bootstrap: str = _knob("", "KAFKA_BOOTSTRAP", "host:port of an existing broker; empty = start a local one")
    topic_prefix: str = _knob("", "STREAM_CTR_TOPIC_PREFIX", "prefix for every topic name (tests isolate by it)")
    app_id: str = _knob("stream-ctr", "STREAM_CTR_APP_ID", "Faust app id; consumer groups derive from it")
    events_partitions: int = _knob(
        8,
        "STREAM_CTR_EVENTS_PARTITIONS",
        "partitions of ctr.events: the most personalize workers that can share the "
        "stream (one more partition costs a worker nothing measurable)",
        _positive,
    )
    events_retention_hours: float = _knob(
        168.0,
        "STREAM_CTR_EVENTS_RETENTION_HOURS",
        "hours ctr.events, its dead letters and ctr.exposures keep users' raw records (Kafka retention.ms, set when "
        "the topics are created): an erasure removes a user's state, and this bounds how long the user's clicks "
        "stay in the logs",
        _positive,
    )
    replication_factor: int = _knob(
        1,
        "STREAM_CTR_REPLICATION_FACTOR",
        "replicas of every topic stream-ctr creates, Faust's changelogs included "
        "(1 on a single local broker; 3 in production)",
        _positive,
    )
    min_insync_replicas: int = _knob(
        1,
        "STREAM_CTR_MIN_INSYNC_REPLICAS",
        "replicas that must have a write before acks=all succeeds (2 of 3 in "
        "production: one broker may fail without losing an acknowledged write)",
        _positive,
    )
    session_timeout_s: float = _knob(
        6.0,
        "STREAM_CTR_SESSION_TIMEOUT_S",
        "consumer group session timeout: how soon a killed worker's partitions move (the broker's minimum is 6)",
        lambda v: v >= 6,
    )
    heartbeat_s: float = _knob(1.0, "STREAM_CTR_HEARTBEAT_S", "consumer group heartbeat interval", _positive)


@dataclass(frozen=True)
class KafkaSecuritySettings:
    """How every Kafka client of stream-ctr authenticates and encrypts (docs/SECURITY.md): the Faust apps, the
    trainer, replay, simulate, reports and admin all connect with these (stream_ctr/broker/connection.py)."""

    kafka_security_protocol: str = _knob(
        "PLAINTEXT",
        "STREAM_CTR_KAFKA_SECURITY_PROTOCOL",
        "PLAINTEXT, SSL (TLS; with a client certificate: mutual TLS), SASL_PLAINTEXT or SASL_SSL",
        lambda v: v in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
    )
    kafka_sasl_mechanism: str = _knob(
        "SCRAM-SHA-512",
        "STREAM_CTR_KAFKA_SASL_MECHANISM",
        "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
        lambda v: v in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
    )
    kafka_sasl_username: str = _knob("", "STREAM_CTR_KAFKA_SASL_USERNAME", "SASL user name")
    kafka_sasl_password_file: str = _knob(
        "",
        "STREAM_CTR_KAFKA_SASL_PASSWORD_FILE",
        "file whose first line is the SASL password (a file, so the secret never shows in ps or the environment)",
    )
    kafka_ssl_cafile: str = _knob(
        "", "STREAM_CTR_KAFKA_SSL_CAFILE", "PEM file of the CAs that sign the brokers' certificates (empty = system)"
    )
    kafka_ssl_certfile: str = _knob(
        "", "STREAM_CTR_KAFKA_SSL_CERTFILE", "client certificate chain (PEM) for mutual TLS"
    )
    kafka_ssl_keyfile: str = _knob("", "STREAM_CTR_KAFKA_SSL_KEYFILE", "private key (PEM) of that certificate")
    kafka_ssl_check_hostname: int = _knob(
        1,
        "STREAM_CTR_KAFKA_SSL_CHECK_HOSTNAME",
        "1: the broker's certificate must name the host connected to; 0: any certificate the CA signed",
        lambda v: v in (0, 1),
    )


@dataclass(frozen=True)
class LearningSettings:
    """The personalize worker: batches, each user's rolling CTR, label correction, head fine-tuning, its users."""

    batch_size: int = _knob(
        1024,
        "STREAM_CTR_BATCH_SIZE",
        "max events per personalize step (a fetch is cut into steps of this size)",
        _positive,
    )
    step_events: int = _knob(
        24,
        "STREAM_CTR_STEP_EVENTS",
        "events per personalize step while the worker keeps up: a fetch is cut into steps of this many, each "
        "scored after the one before was learned; a fetch of more than 8 such steps (a backlog) is cut into 8, "
        "of at most STREAM_CTR_BATCH_SIZE events",
        _positive,
    )
    ctr_window: int = _knob(
        _HEAD.window, "STREAM_CTR_CTR_WINDOW", "events in each user's rolling CTR window", _positive
    )
    shrinkage: float = _knob(
        _HEAD.shrinkage, "STREAM_CTR_SHRINKAGE", "pseudo-events pulling p_u toward p_g", lambda v: v >= 0
    )
    head_lr: float = _knob(_HEAD.lr, "STREAM_CTR_HEAD_LR", "SGD step size of user heads", _positive)
    head_steps: int = _knob(_HEAD.steps, "STREAM_CTR_HEAD_STEPS", "SGD steps per user per batch", _positive)
    correction: str = _knob(
        _HEAD.correction,
        "STREAM_CTR_CORRECTION",
        "label correction of the ft_lc arm: lc (the paper's), lc_evidence, lc_significant or "
        "lc_bias (stream_ctr/learning/correction.py)",
        lambda v: v in LC_VARIANTS,
    )
    head_l2: float = _knob(
        _HEAD.l2, "STREAM_CTR_HEAD_L2", "L2 pull of head weights toward 0 (= the global model)", lambda v: v >= 0
    )
    user_idle_s: float = _knob(
        3600.0,
        "STREAM_CTR_USER_IDLE_S",
        "seconds without an event after which a user leaves the worker's in-memory working "
        "set (drift histogram, user count); the user's state stays in the table",
        _positive,
    )
    active_users_max: int = _knob(
        250_000,
        "STREAM_CTR_ACTIVE_USERS_MAX",
        "most users in that working set (least recently active leave first)",
        _positive,
    )
    worker_threads: int = _knob(
        1,
        "STREAM_CTR_WORKER_THREADS",
        "torch threads of a personalize worker (its batches and scoring requests are small: "
        "one thread avoids contention with the trainer and the broker)",
        _positive,
    )
    catch_up_events: int = _knob(
        65536,
        "STREAM_CTR_CATCH_UP_EVENTS",
        "the worker's copy of the global model takes the trainer's step on the events it scores until "
        "a trainer update covers them, for at most this many events (0 = off: score with the trainer's "
        "model as it arrives; stream_ctr/learning/catch_up.py)",
        lambda v: v >= 0,
    )
    store: str = _knob(
        "memory",
        "STREAM_CTR_STORE",
        "where the users table lives: memory (all users in RAM, rebuilt from the changelog at start) "
        "or rocksdb (on disk under STREAM_CTR_DATA_DIR; a restart replays only the changelog's tail)",
        lambda v: v in ("memory", "rocksdb"),
    )
    data_dir: str = _knob(
        "",
        "STREAM_CTR_DATA_DIR",
        "Faust data dir (the RocksDB files); empty = a temp dir per "
        "process, so a restart recovers everything from the changelog",
    )


@dataclass(frozen=True)
class ServingSettings:
    """The HTTP side of worker and trainer: ports and addresses, and ``POST /v1/score`` under load."""

    web_port: int = _knob(
        6066, "STREAM_CTR_WEB_PORT", "HTTP port of /metrics, /healthz, /v1/*", lambda v: 0 < v <= 65535
    )
    trainer_web_port: int = _knob(
        0,
        "STREAM_CTR_TRAINER_WEB_PORT",
        "HTTP port of the trainer's /metrics and /healthz; 0 = STREAM_CTR_WEB_PORT + 1",
        lambda v: 0 <= v <= 65535,
    )
    web_bind: str = _knob("127.0.0.1", "STREAM_CTR_WEB_BIND", "address the HTTP server binds (0.0.0.0 = all)")
    web_host: str = _knob(
        "", "STREAM_CTR_WEB_HOST", "host other workers and clients reach this worker at; empty = the bind address"
    )
    serving_max_in_flight: int = _knob(
        32,
        "STREAM_CTR_SERVING_MAX_IN_FLIGHT",
        "scoring requests a worker holds at once; one more is answered 429 with Retry-After at once (load shedding)",
        _positive,
    )
    serving_deadline_ms: float = _knob(
        100.0,
        "STREAM_CTR_SERVING_DEADLINE_MS",
        "default deadline of a scoring request (header X-Deadline-Ms overrides it): "
        "one still queued after it is dropped with 503, not computed",
        _positive,
    )
    serving_max_lag_ms: float = _knob(
        20.0,
        "STREAM_CTR_SERVING_MAX_LAG_MS",
        "while the serving event loop runs this late (it probes every 5 ms) with scoring requests held, new "
        "ones are answered 429 at once: overload sheds instead of queueing",
        _positive,
    )
    serving_max_batch: int = _knob(
        16, "STREAM_CTR_SERVING_MAX_BATCH", "scoring requests ranked together in one forward pass", _positive
    )
    scorer_users: int = _knob(
        250_000,
        "STREAM_CTR_SCORER_USERS",
        "users whose heads a scorer process (stream-ctr scorer) holds from the users changelog; past it the least "
        "recently used goes, and is scored as a new user until its next change",
        _positive,
    )
    api_keys_file: str = _knob(
        "",
        "STREAM_CTR_API_KEYS_FILE",
        "file of API keys, a line each: '<sha256 hex of the key> <scope>[,<scope>]' (score, read_users, admin); "
        "empty = no authentication, allowed only on a loopback bind",
    )
    api_key_rate: float = _knob(
        0.0, "STREAM_CTR_API_KEY_RATE", "requests/s each API key may make per worker (0 = no limit)", lambda v: v >= 0
    )


@dataclass(frozen=True)
class ExperimentSettings:
    """The online A/B experiment: its definition and how clicks are attributed to the exposures that showed them."""

    experiment_file: str = _knob(
        "", "STREAM_CTR_EXPERIMENT", "experiment definition (JSON: name, salt, arms, coverage); empty = the default"
    )
    attribution_window_s: float = _knob(
        1800.0,
        "STREAM_CTR_ATTRIBUTION_WINDOW_S",
        "seconds after a scoring request during which its events are attributed",
        _positive,
    )
    pending_exposures: int = _knob(
        100_000,
        "STREAM_CTR_PENDING_EXPOSURES",
        "scoring requests kept for attribution per worker (oldest dropped first)",
        _positive,
    )
    experiment_poll_s: float = _knob(
        5.0,
        "STREAM_CTR_EXPERIMENT_POLL_S",
        "seconds between a worker's readings of ctr.experiments: how soon it applies an arm stopped or resumed "
        "elsewhere (by a guardrail on another worker or by stream-ctr ab stop/resume) or a bandit's next epoch "
        "(published by stream-ctr ab bandit)",
        _positive,
    )


@dataclass(frozen=True)
class MonitoringSettings:
    """What the worker measures and alarms on: online metrics, stalls, drift detection."""

    metrics_window: int = _knob(
        20000, "STREAM_CTR_METRICS_WINDOW", "predictions in the windowed online metrics", _positive
    )
    metrics_refresh_s: float = _knob(
        5.0, "STREAM_CTR_METRICS_REFRESH_S", "seconds between gAUC/logloss refreshes", _positive
    )
    stall_after_s: float = _knob(
        60.0,
        "STREAM_CTR_STALL_AFTER_S",
        "seconds a partition with events waiting may go without committed progress "
        "before it is reported stalled (metric stream_ctr_partitions_stalled)",
        _positive,
    )
    drift_block: int = _knob(
        _DRIFT.block,
        "STREAM_CTR_DRIFT_BLOCK",
        "events averaged into one input of the Page-Hinkley detectors",
        _positive,
    )
    drift_adwin_delta: float = _knob(
        _DRIFT.adwin_delta,
        "STREAM_CTR_DRIFT_ADWIN_DELTA",
        "ADWIN confidence on the global click rate (smaller: fewer false alarms, later detection)",
        lambda v: 0 < v < 1,
    )
    drift_loss_threshold: float = _knob(
        _DRIFT.loss_threshold,
        "STREAM_CTR_DRIFT_LOSS_THRESHOLD",
        "Page-Hinkley threshold on block means of each arm's logloss (upward)",
        _positive,
    )
    drift_hold_s: float = _knob(
        _DRIFT.hold_s, "STREAM_CTR_DRIFT_HOLD_S", "seconds a signal stays drifting after its last alarm", _positive
    )
    user_drift_z: float = _knob(
        _DRIFT.user_z,
        "STREAM_CTR_USER_DRIFT_Z",
        "a user is drifting while the window CTR lies beyond this many of its own sampling stds from the global CTR",
        _positive,
    )


@dataclass(frozen=True)
class TrainerSettings:
    """The global model and its trainer: family, features, optimiser, batches, how often deltas and snapshots go out."""

    model_family: str = _knob(
        "deepfm", "STREAM_CTR_MODEL_FAMILY", "global model family, a key of stream_ctr.models.FAMILIES", _family
    )
    features: str = _knob(
        "age,gender,occupation,genres:multi:6",
        "STREAM_CTR_FEATURES",
        "event features the model reads: name[:cat|num|multi[:width]], comma separated",
    )
    hash_buckets: int = _knob(
        1 << 15,
        "STREAM_CTR_HASH_BUCKETS",
        "hashed feature space size (at least 2: id 0 is padding, real tokens take 1 and up)",
        lambda v: v >= 2,
    )
    embed_dim: int = _knob(8, "STREAM_CTR_EMBED_DIM", "embedding width", lambda v: 0 < v <= 1024)
    hidden: str = _knob("64,32", "STREAM_CTR_HIDDEN", "MLP widths, comma separated; the last is the head's input")
    trainer_optimizer: str = _knob(
        "adagrad",
        "STREAM_CTR_TRAINER_OPTIMIZER",
        "optimiser of the global model: adagrad (per-coordinate steps that shrink with "
        "each embedding row's own gradient history; sparse, so a step touches only the "
        "rows its batch used) or adam",
        lambda v: v in ("adam", "adagrad"),
    )
    trainer_lr: float = _knob(0.1, "STREAM_CTR_TRAINER_LR", "step size of the global model's optimiser", _positive)
    trainer_batch: int = _knob(
        8,
        "STREAM_CTR_TRAINER_BATCH",
        "global model mini-batch size when the trainer keeps up with the stream",
        _positive,
    )
    trainer_batch_max: int = _knob(
        256,
        "STREAM_CTR_TRAINER_BATCH_MAX",
        "largest mini-batch the trainer grows to while it has a backlog (see GlobalTrainer.batch_for)",
        _positive,
    )
    delta_every: int = _knob(
        64,
        "STREAM_CTR_DELTA_EVERY",
        "publish a model delta (the embedding rows that changed) every K samples",
        _positive,
        formerly="STREAM_CTR_SNAPSHOT_EVERY",
    )
    delta_interval_s: float = _knob(
        1.0,
        "STREAM_CTR_DELTA_INTERVAL_S",
        "publish a delta of pending samples at least this often, in seconds",
        _positive,
        formerly="STREAM_CTR_SNAPSHOT_INTERVAL_S",
    )
    dense_every: int = _knob(
        64,
        "STREAM_CTR_DENSE_EVERY",
        "deltas between two that carry the dense layers too (they change in every step but "
        "cost ~30 KB; sparse rows are what must be fresh)",
        _positive,
    )
    full_snapshot_every: int = _knob(
        1000,
        "STREAM_CTR_FULL_SNAPSHOT_EVERY",
        "deltas between full snapshots on ctr.model (where a starting scorer or trainer begins)",
        _positive,
    )
    seed: int = _knob(0, "STREAM_CTR_SEED", "seed of model initialisation and shuffles", lambda v: 0 <= v < 2**63)
    device: str = _knob(
        "cpu",
        "STREAM_CTR_DEVICE",
        "torch device of the global trainer (cpu, cuda, cuda:N)",
        lambda v: re.fullmatch(r"cpu|cuda(:\d+)?", v) is not None,
    )
    trainer_threads: int = _knob(
        1,
        "STREAM_CTR_TRAINER_THREADS",
        "torch threads of the trainer (a step on 8 samples is too small to split: a second "
        "thread fighting the worker and the broker for a core made it 5x slower)",
        _positive,
    )
    trainer_world_size: int = _knob(
        1,
        "STREAM_CTR_TRAINER_WORLD_SIZE",
        "ranks of the global trainer on this machine (stream_ctr.trainer.distributed: each takes "
        "a share of the partitions, gradients all-reduced every step)",
        _positive,
    )
    trainer_restarts: int = _knob(
        3,
        "STREAM_CTR_TRAINER_RESTARTS",
        "times a trainer group with a dead rank is started again (from the newest full "
        "snapshot) before the trainer exits",
        lambda v: v >= 0,
    )


#: The sections, in the order ``stream-ctr config`` and docs/CONFIGURATION.md list them.
SECTIONS = (
    KafkaSettings,
    KafkaSecuritySettings,
    LearningSettings,
    ServingSettings,
    ExperimentSettings,
    MonitoringSettings,
    TrainerSettings,
)


@dataclass(frozen=True)
class Settings(
    KafkaSettings,
    KafkaSecuritySettings,
    LearningSettings,
    ServingSettings,
    ExperimentSettings,
    MonitoringSettings,
    TrainerSettings,
):
    """Every knob of the service: the union of the sections. A component that reads one section may take it by
    that section's type (a :class:`Settings` is each of them)."""

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        return tuple(int(h) for h in self.hidden.split(","))

    @property
    def advertised_host(self) -> str:
        """The host in this worker's URL for other workers (Faust's routing) and for clients."""
        return self.web_host or ("127.0.0.1" if self.web_bind in ("0.0.0.0", "") else self.web_bind)

    @property
    def web_url(self) -> str:
        return f"http://{self.advertised_host}:{self.web_port}"

    @property
    def trainer_port(self) -> int:
        """The trainer's HTTP port: ``trainer_web_port``, or the worker's + 1 when that is 0."""
        return self.trainer_web_port or self.web_port + 1

    @property
    def trainer_url(self) -> str:
        return f"http://{self.advertised_host}:{self.trainer_port}"

    def topic(self, base: str) -> str:
        return f"{self.topic_prefix}{base}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every knob from ``env`` (default ``os.environ``), under it the file that
        ``STREAM_CTR_CONFIG_FILE`` names (:func:`read_config_file`); ``overrides`` win over all."""
        env = os.environ if env is None else env
        if env.get(CONFIG_FILE):
            env = {**read_config_file(env[CONFIG_FILE]), **env}
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f.metadata["env"]
            former = f.metadata["formerly"]
            if f.name in overrides:
                raw = overrides[f.name]
            elif name in env:
                raw = env[name]
            elif former and former in env:
                name, raw = former, env[former]
            else:
                continue
            assert isinstance(f.type, str), "field types are strings here (from __future__ import annotations)"
            values[f.name] = _parse(name, f.type, raw)
        settings = cls(**values)
        settings.validate()
        return settings

    @staticmethod
    def markdown() -> str:
        """Every knob as Markdown tables, one per section: docs/CONFIGURATION.md holds this text (a test checks)."""
        out = []
        for section in SECTIONS:
            out += [f"### {section.__name__}", "", section.__doc__ or "", ""]
            out += ["| variable | default | meaning |", "|---|---|---|"]
            for f in dataclasses.fields(section):
                default = f"`{f.default!r}`" if f.default != "" else "empty"
                former = f" (formerly `{f.metadata['formerly']}`)" if f.metadata["formerly"] else ""
                out.append(f"| `{f.metadata['env']}`{former} | {default} | {f.metadata['doc']} |")
            out.append("")
        return "\n".join(out)

    @staticmethod
    def section_of(name: str) -> type:
        """The section a knob belongs to.

        >>> Settings.section_of("serving_max_batch").__name__
        'ServingSettings'
        """
        return next(section for section in SECTIONS if name in {f.name for f in dataclasses.fields(section)})

    def to_env(self) -> dict[str, str]:
        """Every knob as its environment variable: what a child process needs to see these settings.

        >>> Settings(batch_size=64).to_env()["STREAM_CTR_BATCH_SIZE"]
        '64'
        """
        return {f.metadata["env"]: str(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> Settings:
        new = dataclasses.replace(self, **changes)
        new.validate()
        return new

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            check = f.metadata["check"]
            value = getattr(self, f.name)
            if check is not None and not check(value):
                raise ConfigError(f"{f.metadata['env']}: value {value!r} is out of range ({f.metadata['doc']})")
        try:
            sizes = self.hidden_sizes
        except ValueError:
            raise ConfigError(f"STREAM_CTR_HIDDEN: expected comma-separated ints, got {self.hidden!r}") from None
        if not sizes or min(sizes) <= 0:
            raise ConfigError(f"STREAM_CTR_HIDDEN: widths must be positive, got {self.hidden!r}")
        try:
            from stream_ctr.contracts.features import FeatureSpec

            FeatureSpec.parse(self.features, self.hash_buckets)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"STREAM_CTR_FEATURES: {exc}") from None
        if self.ctr_window > 65535:
            raise ConfigError(f"STREAM_CTR_CTR_WINDOW: at most 65535, got {self.ctr_window}")
        if self.heartbeat_s * 3 > self.session_timeout_s:
            raise ConfigError(
                f"STREAM_CTR_HEARTBEAT_S: {self.heartbeat_s} must be at most a third of "
                f"STREAM_CTR_SESSION_TIMEOUT_S ({self.session_timeout_s})"
            )
        if self.min_insync_replicas > self.replication_factor:
            raise ConfigError(
                f"STREAM_CTR_MIN_INSYNC_REPLICAS: {self.min_insync_replicas} exceeds "
                f"STREAM_CTR_REPLICATION_FACTOR ({self.replication_factor}): no write could succeed"
            )
        if self.trainer_batch_max < self.trainer_batch:
            raise ConfigError(
                f"STREAM_CTR_TRAINER_BATCH_MAX: {self.trainer_batch_max} is below "
                f"STREAM_CTR_TRAINER_BATCH ({self.trainer_batch})"
            )
        if self.trainer_world_size > self.events_partitions:
            raise ConfigError(
                f"STREAM_CTR_TRAINER_WORLD_SIZE: {self.trainer_world_size} ranks for "
                f"{self.events_partitions} partitions (STREAM_CTR_EVENTS_PARTITIONS): a rank would "
                "have none"
            )
        if self.trainer_port > 65535:
            raise ConfigError("STREAM_CTR_TRAINER_WEB_PORT: must be set when STREAM_CTR_WEB_PORT is 65535")
        if self.kafka_bootstrap and ":" not in self.kafka_bootstrap:
            raise ConfigError(f"KAFKA_BOOTSTRAP: expected host:port, got {self.kafka_bootstrap!r}")
        self._validate_kafka_security()
        if not self.api_keys_file and self.web_bind not in ("127.0.0.1", "::1", "localhost"):
            raise ConfigError(
                f"STREAM_CTR_WEB_BIND: {self.web_bind!r} would open /v1/score and /v1/users to the network with no "
                "authentication; set STREAM_CTR_API_KEYS_FILE (or bind 127.0.0.1)"
            )

    def _validate_kafka_security(self) -> None:
        """The security knobs agree with each other, and every file they name can be read (a missing CA or
        password file fails here, at start, not as a broker timeout a minute later)."""
        protocol = self.kafka_security_protocol
        for knob in ("kafka_sasl_password_file", "kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
            path = getattr(self, knob)
            if path and not (os.path.isfile(path) and os.access(path, os.R_OK)):
                raise ConfigError(f"{_env_of(knob)}: {path!r} is not a readable file")
        if protocol.startswith("SASL_"):
            for knob in ("kafka_sasl_username", "kafka_sasl_password_file"):
                if not getattr(self, knob):
                    raise ConfigError(f"{_env_of(knob)}: required with STREAM_CTR_KAFKA_SECURITY_PROTOCOL={protocol}")
        elif self.kafka_sasl_username or self.kafka_sasl_password_file:
            raise ConfigError(
                f"STREAM_CTR_KAFKA_SASL_USERNAME: SASL credentials are set but STREAM_CTR_KAFKA_SECURITY_PROTOCOL="
                f"{protocol} would not send them (SASL_SSL, or SASL_PLAINTEXT)"
            )
        tls_files = [k for k in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile") if getattr(self, k)]
        if tls_files and protocol not in ("SSL", "SASL_SSL"):
            raise ConfigError(
                f"{_env_of(tls_files[0])}: set, but STREAM_CTR_KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS "
                "(SSL or SASL_SSL)"
            )
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise ConfigError("STREAM_CTR_KAFKA_SSL_KEYFILE: set without STREAM_CTR_KAFKA_SSL_CERTFILE")

    def describe(self) -> str:
        """Section by section, one line per knob with its effective value (and the default where it differs),
        for ``stream-ctr config``."""
        lines = []
        for section in SECTIONS:
            lines.append(f"# {section.__name__}: {section.__doc__}")
            for f in dataclasses.fields(section):
                value = getattr(self, f.name)
                default = "" if value == f.default else f"  (default {f.default!r})"
                lines.append(f"{f.metadata['env']:32} = {value!r}{default}\n{'':35}{f.metadata['doc']}")
        return "\n".join(lines)


def read_config_file(path: str) -> dict[str, str]:
    """The settings of a file of ``NAME=value`` lines (``#`` comments and blank lines skipped; the environment's
    names, as ``stream-ctr config`` lists them), e.g. a deployment's Kafka security section. A name that is no
    setting fails with the file and line: a typo would otherwise be silently ignored. Secrets stay in their own
    files (``STREAM_CTR_KAFKA_SASL_PASSWORD_FILE``, ``STREAM_CTR_API_KEYS_FILE``), never in this one.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".env", delete=False) as f:
    ...     _ = f.write("# Kafka\\nSTREAM_CTR_KAFKA_SECURITY_PROTOCOL = SASL_SSL\\n\\n")
    ...     _ = f.write("STREAM_CTR_KAFKA_SASL_USERNAME=svc\\n")
    >>> read_config_file(f.name)
    {'STREAM_CTR_KAFKA_SECURITY_PROTOCOL': 'SASL_SSL', 'STREAM_CTR_KAFKA_SASL_USERNAME': 'svc'}
    """
    known = {f.metadata["env"] for f in dataclasses.fields(Settings)}
    known |= {f.metadata["formerly"] for f in dataclasses.fields(Settings) if f.metadata["formerly"]}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"{CONFIG_FILE}: cannot read {path!r} ({exc.strerror})") from None
    values = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = (part.strip() for part in line.partition("="))
        if not sep or name not in known:
            raise ConfigError(
                f"{CONFIG_FILE}: {path}:{number}: expected NAME=value with a setting's name, got {line!r}"
            )
        values[name] = value
    return values


def _env_of(knob: str) -> str:
    """The environment name of a knob."""
    return next(f.metadata["env"] for f in dataclasses.fields(Settings) if f.name == knob)


def _parse(name: str, type_name: str, raw: Any) -> Any:
    """``raw`` as the knob's type. A float knob must be finite: none means anything at infinity (an infinite
    STREAM_CTR_HEAD_LR or STREAM_CTR_TRAINER_LR made every score NaN), and NaN would pass no range check anyway."""
    kind = {"int": int, "float": float, "str": str}[type_name]
    if isinstance(raw, kind) and not isinstance(raw, bool):
        value = raw
    else:
        try:
            value = kind(raw)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{name}: expected {type_name}, got {raw!r}") from None
    if isinstance(value, float) and not math.isfinite(value):  # a float knob (an int or str one is not a float)
        raise ConfigError(f"{name}: expected a finite number, got {raw!r}")
    return value
