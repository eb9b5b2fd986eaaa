"""Every work-around stream-ctr needs in faust-streaming 0.15, in one place, put in place once by :func:`install`.

Per-user state is exact under at-least-once delivery only if a consumer offset is committed after the changelog
writes of the events before it are acknowledged, and no event at or below a committed offset is skipped.
faust-streaming 0.15 breaks both: a worker killed with SIGKILL while events arrived lost events (up to a third of
a user's history in our fault runs, tests/agents/test_faults.py) and could stop committing a partition for good.
The work-arounds, each a subclass method below that names the Faust behaviour it replaces:

1. :class:`Producer` -- a commit's flush waits for every changelog write (``ProducerBuffer.flush_atmost`` gives up
   after 0.1 s), and sends are idempotent outside transactions too.
2. :class:`Recovery` -- after table recovery the stream partitions are sought while still paused, then resumed
   (Faust resumes them before the seek).
3. :class:`Consumer` -- a fetch is made for a copy of the active partitions, and none for an empty set (aiokafka
   reads an empty set as "every partition"); and the fetch loop of an app that consumes a topic in batches
   (:mod:`.batched`) is the drain registered with :func:`set_drain`.
4. :class:`RocksDBStore` -- a write of a table with ``use_partitioner`` goes to the key's partition, outside any
   event (Faust's RocksDB store asserts an event and files the write under its partition).

No Faust function is replaced. Each subclass is put in place through the override point Faust offers for it:

- the transport (:class:`Transport`, whose ``Consumer`` and ``Producer`` class attributes are the documented
  "Consumer/Producer subclass used for this transport") and the store (:class:`RocksDBStore`) are registered by
  URL scheme in Faust's own registries (``faust.transport.drivers.TRANSPORTS``, ``faust.stores.STORES``, the
  mappings the ``faust.transports`` / ``faust.stores`` entry points fill), so that ``broker=`` and ``store=``
  select them;
- :class:`TableManager` is given as the ``TableManager`` app setting; it builds :class:`Recovery`.

:func:`app_settings` returns those three settings; :func:`~.app.create_app` passes them to every app.

:func:`install` (idempotent, called when :mod:`.app` is imported) first checks the installed faust-streaming: its
version, and that each Faust method a work-around overrides, calls or mirrors still has the signature and the
statements the work-around was written against. If not, it raises :class:`FaustIncompatible` naming the method:
a newer Faust must be checked (is the bug fixed? did the code move?), not silently half-fixed.

Private Faust attributes still touched (no public equivalent in 0.15), 18 names:

- overridden here (methods Faust calls on the subclasses): ``Producer._settings_extra``,
  ``ThreadDelegateConsumer._getmany``, ``Consumer._drain_messages``, ``rocksdb.Store._set`` (the stores' write
  hook);
- used here: ``rocksdb.Store._key_index`` and ``._db_for_partition`` (what a store write does),
  ``TableManager._recovery`` (where the manager keeps its recovery), ``Recovery._set_recovery_ended`` and
  ``App._fetcher`` (steps of Faust's ``on_recovery_completed``, reproduced), ``Consumer._acked`` (read by
  :func:`acked_not_committed`);
- used in :mod:`.batched`, whose fetch loop keeps the consumer's own bookkeeping (checked by :func:`check_drain`):
  ``Consumer._wait_next_records``, ``._buffered_partitions``, ``._read_offset``, ``._add_gap``, ``._to_message``,
  ``._committed_offset``, ``._acked_index``, ``._acked``, ``._n_acked``.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import textwrap
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import faust
from faust.stores import STORES
from faust.stores import rocksdb as faust_rocksdb
from faust.tables import manager as faust_manager
from faust.tables import recovery as faust_recovery
from faust.transport import consumer as faust_consumer
from faust.transport import producer as faust_producer
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka

from stream_ctr.contracts.events import partition_of

__all__ = [
    "GUARDS",
    "Consumer",
    "FaustIncompatible",
    "Producer",
    "Recovery",
    "RocksDBStore",
    "TableManager",
    "Transport",
    "acked_not_committed",
    "app_settings",
    "drain_of",
    "install",
    "set_drain",
]

#: The versions of faust-streaming these work-arounds were written against and tested with.
SUPPORTED = ((0, 15, 3), (0, 16, 0))
TRANSPORT_SCHEME = "stream-ctr-kafka"
ROCKSDB_SCHEME = "stream-ctr-rocksdb"

#: A fetch loop run instead of Faust's: called with the app's consumer and Faust's fetcher service.
Drain = Callable[[Any, Any], Awaitable[None]]

_drains: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # app -> Drain
_installed = False


class FaustIncompatible(RuntimeError):
    """The installed faust-streaming is not the one a work-around of this module was written against."""


# -- 1. producer -----------------------------------------------------------------------------------------------


class Producer(faust_aiokafka.Producer):
    """aiokafka producer whose flush waits for every record handed to it, and that is always idempotent."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unacknowledged: set[asyncio.Future] = set()

    def send_soon(self, fut: Any) -> None:
        """Faust's ``send_soon`` (the buffered path of table changelog writes), tracking ``fut`` until done."""
        self.unacknowledged.add(fut)
        fut.add_done_callback(self.unacknowledged.discard)
        super().send_soon(fut)

    async def flush(self) -> None:
        """Wait for every buffered record to be acknowledged, then Faust's flush; raise a failed write's error.

        Faust flushes the producer before committing offsets (upstream PR #273), but ``ProducerBuffer.flush_atmost``
        gives up after 0.1 s in which no buffered record left, and misses the record the buffer has taken off its
        queue but not yet handed to aiokafka: commits went out with 30-70 changelog writes unacknowledged. An
        unacknowledged write that failed raises here, so the commit that waits for this flush does not happen.
        """
        pending = [f for f in list(self.unacknowledged) if not f.done()]
        if pending:
            await asyncio.wait(pending)
            for f in pending:
                if (error := f.exception()) is not None:
                    raise error
        await super().flush()

    def _settings_extra(self) -> Mapping[str, Any]:
        """Faust asks aiokafka for ``acks=all`` and idempotence only inside transactions; every app here sends
        with them (changelogs, dead letters, exposures, snapshots): a send retried after a lost acknowledgement
        is written once, not twice. Kafka brokers support it since 0.11."""
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


# -- 3. consumer -----------------------------------------------------------------------------------------------


class Consumer(faust_aiokafka.Consumer):
    """aiokafka consumer that fetches for a copy of its active partitions and runs a registered fetch loop."""

    async def _getmany(self, active_partitions: set | None, timeout: float) -> Mapping:
        """Fetch for a copy of ``active_partitions`` taken now, and nothing when it is empty.

        Faust hands the consumer thread its live set of active partitions. Recovery empties that set (changelogs
        done, stream partitions not resumed yet) while the fetch waits for the thread; aiokafka reads an empty set
        as "every partition" and returns the stream partitions' records, which Faust drops as not active with the
        position already past them. A restarted worker skipped from its committed offset to the end of the topic
        (about 200 events a partition, on one restart in three in our fault runs).
        """
        if active_partitions is not None:
            active_partitions = set(active_partitions)
            if not active_partitions:
                return {}
        return await super()._getmany(active_partitions, timeout)

    async def _drain_messages(self, fetcher: Any) -> None:
        """The fetch loop: the drain registered for this consumer's app (:func:`set_drain`), else Faust's."""
        drain = _drains.get(self.app)
        if drain is None:
            return await super()._drain_messages(fetcher)
        return await drain(self, fetcher)


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with this module's consumer and producer (``broker="stream-ctr-kafka://..."``)."""

    Consumer = Consumer
    Producer = Producer


def set_drain(app: faust.App, drain: Drain) -> None:
    """Have ``app``'s consumer run ``drain(consumer, fetcher)`` as its fetch loop instead of Faust's
    ``Consumer._drain_messages``. ``app`` must have been created with :func:`app_settings`."""
    if not isinstance(app.transport, Transport):
        raise ValueError(f"app {app.conf.id!r} does not use {TRANSPORT_SCHEME}:// (see faust_compat.app_settings)")
    _drains[app] = drain


def drain_of(app: faust.App) -> Drain | None:
    """The fetch loop registered for ``app``, if any."""
    return _drains.get(app)


def acked_not_committed(consumer: Any) -> bool:
    """Whether ``consumer`` holds acknowledged offsets its next commit will write (``Consumer._acked``)."""
    return any(getattr(consumer, "_acked", {}).values())


# -- 4. store --------------------------------------------------------------------------------------------------


class RocksDBStore(faust_rocksdb.Store):
    """Faust's RocksDB store, whose writes of a table with ``use_partitioner`` need no current event."""

    def _set(self, key: bytes, value: bytes | None) -> None:
        """File the write under the partition Kafka's default partitioner gives ``key``.

        Faust's store files a write under the partition of the event being processed, and asserts there is one.
        The worker writes each user's state once per batch (:mod:`.batched`), outside any single event, and its
        table uses the partitioner: a user's state belongs to the user's partition, where its changelog record
        goes, not to the last event's.
        """
        if not self.table.use_partitioner:
            return super()._set(key, value)
        partition = partition_of(key, self.table.partitions)
        self._key_index[key] = partition
        self._db_for_partition(partition).put(key, value)


# -- 2. recovery -----------------------------------------------------------------------------------------------


class Recovery(faust_recovery.Recovery):
    """Faust's table recovery, with the stream partitions sought to their committed offsets before they resume."""

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        """Faust's ``Recovery.on_recovery_completed`` with the seek before the resume.

        Faust resumes the stream partitions, then seeks them to their committed offsets, then resumes flow
        control. Records fetched before the seek arrive after the read offset is reset, look like a gap, and the
        skipped range is committed as processed (upstream issues #216, #606: the same order was fixed in
        ``_resume_streams`` only); records fetched between the seek and the flow-control resume are cleared from
        the queues while the read offset has moved past them, and commits of that partition stop (#596). Here:
        seek while the stream partitions are paused, resume flow control, then resume the partitions.
        """
        app, consumer = self.app, self.app.consumer
        self.log.info("Restore complete!")
        await app.on_rebalance_complete.send()
        self._set_recovery_ended()
        await _tables_recovered(self)
        assignment = consumer.assignment()
        if app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again app id %s param %s", app.consumer_generation_id, generation_id)
            return
        if assignment:
            self.log.info("Seek stream partitions to committed offsets.")
            await _unless_rebalanced(self, consumer.perform_seek(), app.conf.broker_request_timeout)
        self.completed.set()
        self.log.dev("Resume stream partitions")
        app.flow_control.resume()
        consumer.resume_flow()
        changelogs = self.tables.changelog_topics
        consumer.resume_partitions({tp for tp in assignment if tp.topic not in changelogs})
        await app._fetcher.maybe_start()
        self.tables.on_actives_ready()
        if not app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        app.on_rebalance_end()
        self.log.info("Worker ready")


async def _tables_recovered(recovery: Recovery) -> None:
    """Tell every table its recovery completed (what Faust's method does first), concurrently."""
    callbacks = [
        asyncio.ensure_future(
            table.on_recovery_completed(recovery.actives_for_table[table], recovery.standbys_for_table[table])
        )
        for table in recovery.tables.values()
    ]
    if callbacks:
        await asyncio.wait(callbacks)


async def _unless_rebalanced(recovery: Recovery, coro: Awaitable, timeout: float) -> None:
    """Await ``coro`` unless the recovery stops or another rebalance starts first (what Faust's ``Recovery._wait``
    does, with its public parts)."""
    result = await recovery.wait_first(coro, recovery.signal_recovery_start, timeout=timeout)
    if result.stopped:
        raise faust_recovery.ServiceStopped()
    if recovery.signal_recovery_start in result.done:
        raise faust_recovery.RebalanceAgain()


class TableManager(faust_manager.TableManager):
    """Faust's table manager, whose recovery is :class:`Recovery` (the ``TableManager`` app setting)."""

    _recovery: Recovery | None

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = Recovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


# -- installing ------------------------------------------------------------------------------------------------


def install() -> None:
    """Check the installed faust-streaming against every work-around, then register :class:`Transport` and
    :class:`RocksDBStore` under their URL schemes. Idempotent; raises :class:`FaustIncompatible`."""
    global _installed
    if _installed:
        return
    for guard in GUARDS:
        guard()
    TRANSPORTS[TRANSPORT_SCHEME] = f"{__name__}:Transport"
    STORES[ROCKSDB_SCHEME] = f"{__name__}:RocksDBStore"
    _installed = True


def app_settings(kafka_bootstrap: str, store: str) -> dict[str, Any]:
    """The ``faust.App`` settings that put the work-arounds in place: the broker at ``kafka_bootstrap`` through
    :class:`Transport`, the table store ``store`` ("memory" or "rocksdb", the latter as :class:`RocksDBStore`)
    and :class:`TableManager`."""
    if not _installed:
        raise RuntimeError("faust_compat.install() must run before an app is created")
    scheme = ROCKSDB_SCHEME if store == "rocksdb" else store
    return {"broker": f"{TRANSPORT_SCHEME}://{kafka_bootstrap}", "store": f"{scheme}://", "TableManager": TableManager}


def _require(ok: bool, method: str, expected: str) -> None:
    if not ok:
        raise FaustIncompatible(
            f"faust-streaming {faust.__version__}: {method} is not the code agents/faust_compat.py was written "
            f"against ({expected}); check its work-around against this Faust before running stream-ctr"
        )


def _require_code(fn: Callable, method: str, params: list[str], statements: Iterable[str]) -> None:
    """``fn`` takes ``params`` and contains ``statements``, in this order."""
    _require(list(inspect.signature(fn).parameters) == params, method, f"parameters {params}")
    source, at = textwrap.dedent(inspect.getsource(fn)), 0
    for statement in statements:
        found = source.find(statement, at)
        _require(found >= 0, method, f"{statement!r}, in this order")
        at = found + len(statement)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def check_version() -> None:
    low, high = SUPPORTED
    _require(low <= _version(faust.__version__) < high, "the faust-streaming package", f"a version in {SUPPORTED}")


def check_producer() -> None:
    _require_code(faust_producer.Producer.send_soon, "Producer.send_soon", ["self", "fut"], ["self.buffer.put(fut)"])
    _require_code(
        faust_producer.ProducerBuffer.flush_atmost,
        "ProducerBuffer.flush_atmost",
        ["self", "max_messages"],
        ["self.message_sent.wait(), timeout=0.1", "return flushed_messages"],
    )
    _require_code(faust_aiokafka.Producer.flush, "aiokafka Producer.flush", ["self"], ["await self.buffer.flush()"])
    _require_code(
        faust_aiokafka.Producer._settings_extra,
        "aiokafka Producer._settings_extra",
        ["self"],
        ["self.app.in_transaction", '"enable_idempotence": True', "return {}"],
    )


def check_consumer() -> None:
    _require_code(
        faust_consumer.ThreadDelegateConsumer._getmany,
        "ThreadDelegateConsumer._getmany",
        ["self", "active_partitions", "timeout"],
        ["self._thread.getmany(active_partitions, timeout)"],
    )
    _require_code(
        faust_aiokafka.AIOKafkaConsumerThread.getmany,
        "AIOKafkaConsumerThread.getmany",
        ["self", "active_partitions", "timeout"],
        ["self.call_thread(", "active_partitions,"],
    )


def check_drain() -> None:
    """What :mod:`.batched`'s fetch loop reproduces: Faust's loop, and the bookkeeping of ``Consumer.ack``."""
    consumer = faust_consumer.Consumer
    _require_code(
        consumer._drain_messages,
        "Consumer._drain_messages",
        ["self", "fetcher"],
        [
            "getmany(timeout=1.0)",
            "await self._add_gap(tp, r_offset + 1, offset)",
            "callback(message)",
            "set_read_offset(tp, offset)",
        ],
    )
    _require_code(
        consumer.ack,
        "Consumer.ack",
        ["self", "message"],
        ["self._committed_offset[tp]", "self._acked_index[tp]", "acked_for_tp.append(offset)", "self._n_acked += 1"],
    )
    _require_code(consumer._wait_next_records, "Consumer._wait_next_records", ["self", "timeout"], ["return records"])
    _require_code(consumer._add_gap, "Consumer._add_gap", ["self", "tp", "offset_from", "offset_to"], [])
    _require_code(faust_aiokafka.Consumer._to_message, "aiokafka Consumer._to_message", ["self", "tp", "record"], [])


def check_store() -> None:
    _require_code(
        faust_rocksdb.Store._set,
        "rocksdb Store._set",
        ["self", "key", "value"],
        ["current_event()", "self._db_for_partition(partition)", "self._key_index[key] = partition"],
    )


def check_recovery() -> None:
    """Faust's method still resumes before it seeks, and does what :meth:`Recovery.on_recovery_completed` does."""
    _require_code(
        faust_manager.TableManager.recovery.fget,
        "TableManager.recovery",
        ["self"],
        ["self._recovery = Recovery(", "return self._recovery"],
    )
    _require_code(
        faust_recovery.Recovery.on_recovery_completed,
        "Recovery.on_recovery_completed",
        ["self", "generation_id"],
        [
            "await self.app.on_rebalance_complete.send()",
            "self._set_recovery_ended()",
            "table.on_recovery_completed(",
            "if self.app.consumer_generation_id != generation_id:",
            "consumer.resume_partitions(",
            "not self._is_changelog_tp(tp)",
            "consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout",
            "self.completed.set()",
            "self.app.flow_control.resume()",
            "consumer.resume_flow()",
            "_fetcher.maybe_start()",
            "self.tables.on_actives_ready()",
            "self.tables.on_standbys_ready()",
            "self.app.on_rebalance_end()",
        ],
    )


#: Every check :func:`install` runs, in order.
GUARDS: tuple[Callable[[], None], ...] = (
    check_version,
    check_producer,
    check_consumer,
    check_drain,
    check_store,
    check_recovery,
)
