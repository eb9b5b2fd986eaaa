"""Fixes to faust-streaming's commit and recovery paths, without which per-user state is not exact after kill -9.

Per-user state is exact under at-least-once delivery only if two things hold: a consumer offset is committed
only after the changelog writes of the events before it are acknowledged, and no event at or below a committed
offset is skipped. faust-streaming 0.15 breaks both, and a worker killed with SIGKILL while events arrive lost
events (up to a third of a user's history in our fault runs) and could stop committing one partition for good:

1. **Flush before commit returns early** (``faust/transport/producer.py``, ``ProducerBuffer.flush_atmost``): the
   flush a commit waits for gives up after 0.1 s in which no buffered record leaves, and misses the record the
   buffer has already taken off its queue but not yet handed to aiokafka. Commits went out with 30-70 changelog
   writes unacknowledged. Fix: every buffered record is tracked until acknowledged, and the producer's
   ``flush`` waits for all of them (raising if one failed, so the commit does not happen).
2. **Resume before seek** (``faust/tables/recovery.py``, ``Recovery.on_recovery_completed``): after table
   recovery the stream partitions are resumed *before* the seek to their committed offsets. Records fetched in
   that window arrive after the read offset is reset, look like a gap, and the skipped range is committed as
   processed (upstream issues #216, #221, #606); records fetched between the seek and the flow-control resume
   are cleared from the queues while the read offset has moved past them, and commits of that partition stop.
   Fix: seek while the stream partitions are still paused, resume flow control, then resume the partitions.

3. **A fetch with no active partition drains them all** (``faust/transport/drivers/aiokafka.py``,
   ``AIOKafkaConsumerThread.getmany``): the fetcher hands aiokafka the live set of active partitions, which the
   recovery empties (changelogs done, stream partitions not resumed yet) while the fetch waits for the consumer
   thread; aiokafka reads an empty set as "every partition" and returns the stream partitions' records, which
   Faust then drops as not active, with the position already past them. A restarted worker skipped from its
   committed offset to the end of the topic (about 200 events a partition in our fault runs, on one restart in
   three). Fix: fetch for a copy of the set taken at call time, and nothing when it is empty.
4. **RocksDB writes need an event** (``faust/stores/rocksdb.py``, ``Store._set``): the RocksDB store files a write
   under the partition of the event being processed, and asserts there is one. The worker writes each user's
   state once per batch (:mod:`.batched`), outside any single event, and its table uses the partitioner (a user's
   state belongs to the user's partition, not to the last event's). Fix: for a table with ``use_partitioner``,
   the write goes to the partition Kafka's default partitioner gives the key, where its changelog record goes.

Each patch replaces one method at import time (patch 2 by rewriting the installed source) and refuses to start
(an ``AssertionError`` naming the method) if that method is not the one it was written against: a newer Faust
must be checked, not silently half-patched. :func:`apply` is idempotent.
"""

from __future__ import annotations

import asyncio
import inspect
import textwrap

__all__ = ["apply"]

_outstanding: set[asyncio.Future] = set()
_applied = False


def apply() -> None:
    global _applied
    if not _applied:
        _flush_waits_for_every_write()
        _seek_before_resume()
        _fetch_only_active_partitions()
        _rocksdb_writes_by_key_partition()
        _applied = True


def _flush_waits_for_every_write() -> None:
    from faust.transport import producer as buffer_module
    from faust.transport.drivers import aiokafka as driver

    put, flush = buffer_module.ProducerBuffer.put, driver.Producer.flush
    assert (list(inspect.signature(put).parameters), list(inspect.signature(flush).parameters)) == (
        ["self", "fut"],
        ["self"],
    ), "faust ProducerBuffer.put / Producer.flush are not the versions patched here"

    def tracked_put(self, fut) -> None:
        _outstanding.add(fut)
        fut.add_done_callback(_outstanding.discard)
        put(self, fut)

    async def complete_flush(self) -> None:
        pending = [f for f in list(_outstanding) if not f.done()]
        if pending:
            await asyncio.wait(pending)
            for f in pending:
                if f.exception() is not None:  # an unacknowledged changelog write must stop the commit
                    raise f.exception()
        await flush(self)

    buffer_module.ProducerBuffer.put = tracked_put
    driver.Producer.flush = complete_flush


def _seek_before_resume() -> None:
    from faust.tables import recovery

    resume = "consumer.resume_partitions(\n    {tp for tp in assignment if not self._is_changelog_tp(tp)}\n)\n"
    after = "consumer.resume_flow()\n"
    source = textwrap.dedent(inspect.getsource(recovery.Recovery.on_recovery_completed))
    body = textwrap.indent(resume, "    ")
    assert source.count(body) == 1 and source.count("    " + after) == 1, (
        "faust Recovery.on_recovery_completed is not the version agents/faust_fixes.py patches"
    )
    source = source.replace(body, "").replace("    " + after, "    " + after + body)
    namespace = dict(vars(recovery))
    exec(compile(source, f"{recovery.__file__} (stream-ctr: seek before resume)", "exec"), namespace)
    recovery.Recovery.on_recovery_completed = namespace["on_recovery_completed"]


def _fetch_only_active_partitions() -> None:
    from faust.transport.drivers import aiokafka as driver

    getmany = driver.AIOKafkaConsumerThread.getmany
    assert list(inspect.signature(getmany).parameters) == ["self", "active_partitions", "timeout"], (
        "faust AIOKafkaConsumerThread.getmany is not the version agents/faust_fixes.py patches"
    )

    async def getmany_of_active(self, active_partitions, timeout: float):
        if active_partitions is not None:
            active_partitions = set(active_partitions)  # the caller's set changes while the fetch is queued
            if not active_partitions:
                return {}
        return await getmany(self, active_partitions, timeout)

    driver.AIOKafkaConsumerThread.getmany = getmany_of_active


def _rocksdb_writes_by_key_partition() -> None:
    from faust.stores import rocksdb

    from stream_ctr.contracts.events import partition_of

    write = rocksdb.Store._set
    assert "current_event()" in inspect.getsource(write), (
        "faust rocksdb Store._set is not the version agents/faust_fixes.py patches"
    )

    def _set(self, key: bytes, value) -> None:
        if not self.table.use_partitioner:
            return write(self, key, value)
        partition = partition_of(key, self.table.partitions)
        self._key_index[key] = partition
        self._db_for_partition(partition).put(key, value)

    rocksdb.Store._set = _set
