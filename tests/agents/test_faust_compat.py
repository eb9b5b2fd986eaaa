"""agents/faust_compat.py against the installed faust-streaming, without a broker: install() is idempotent, its
guards accept this Faust and refuse other code, every override is what an app of create_app uses, and each
work-around does what it says (with fakes where Faust would need a broker)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import faust
import pytest
from aiokafka.structs import TopicPartition
from faust import stores, transport

from stream_ctr.agents import faust_compat
from stream_ctr.agents.app import create_app
from stream_ctr.config import Settings
from stream_ctr.contracts.events import partition_of

EVENTS, CHANGELOG = TopicPartition("events", 0), TopicPartition("users-changelog", 0)


@pytest.fixture
def settings(tmp_path):
    return Settings.from_env({}, kafka_bootstrap="127.0.0.1:9", store="rocksdb", data_dir=str(tmp_path))


def test_install_is_idempotent_and_registers_the_transport_and_store():
    faust_compat.install()
    faust_compat.install()
    assert transport.by_url("stream-ctr-kafka://127.0.0.1:9") is faust_compat.Transport
    assert stores.by_url("stream-ctr-rocksdb://") is faust_compat.RocksDBStore


@pytest.mark.parametrize("guard", faust_compat.GUARDS, ids=lambda guard: guard.__name__)
def test_the_guards_accept_the_installed_faust(guard):
    guard()


def test_a_guard_refuses_code_it_was_not_written_against(monkeypatch):
    def flush(self):
        return self.buffer.flush()

    faust_compat._require_code(flush, "flush", ["self"], ["self.buffer", "flush()"])
    with pytest.raises(faust_compat.FaustIncompatible, match="flush is not the code"):
        faust_compat._require_code(flush, "flush", ["self"], ["flush()", "self.buffer"])  # not in this order
    with pytest.raises(faust_compat.FaustIncompatible, match="parameters"):
        faust_compat._require_code(flush, "flush", ["self", "timeout"], [])
    monkeypatch.setattr(faust, "__version__", "0.16.0")
    with pytest.raises(faust_compat.FaustIncompatible, match="faust-streaming 0.16.0"):
        faust_compat.check_version()


def test_an_app_of_create_app_runs_every_override(settings):
    async def scenario():
        app = create_app(settings, "compat", None)
        table = app.Table("users", partitions=4, use_partitioner=True)
        assert type(app.transport) is faust_compat.Transport
        assert type(app.producer) is faust_compat.Producer and type(app.consumer) is faust_compat.Consumer
        assert type(app.tables) is faust_compat.TableManager
        assert type(app.tables.recovery) is faust_compat.Recovery
        assert type(table.data) is faust_compat.RocksDBStore

    asyncio.run(scenario())


def test_the_memory_store_stays_faust_s():
    assert faust_compat.app_settings("h:1", "memory")["store"] == "memory://"


class _Buffer:
    def __init__(self, calls: list):
        self.calls = calls

    def put(self, fut) -> None:
        pass

    async def flush(self) -> None:
        self.calls.append("buffer flushed")


def test_flush_waits_for_an_outstanding_write(settings):
    async def scenario():
        producer, calls = create_app(settings, "flush", None).producer, []
        producer.buffer = _Buffer(calls)
        write = asyncio.get_running_loop().create_future()
        producer.send_soon(write)
        flush = asyncio.ensure_future(producer.flush())
        await asyncio.sleep(0.05)
        assert not flush.done() and calls == []
        write.set_result(None)
        await flush
        assert calls == ["buffer flushed"] and not producer.unacknowledged

    asyncio.run(scenario())


def test_flush_raises_the_error_of_a_failed_write(settings):
    async def scenario():
        producer, calls = create_app(settings, "flush", None).producer, []
        producer.buffer = _Buffer(calls)
        write = asyncio.get_running_loop().create_future()
        producer.send_soon(write)
        asyncio.get_running_loop().call_later(0.01, write.set_exception, ConnectionError("not acknowledged"))
        with pytest.raises(ConnectionError, match="not acknowledged"):
            await producer.flush()  # the commit that waits for this flush does not happen
        assert calls == []

    asyncio.run(scenario())


def test_the_producer_is_idempotent_outside_transactions(settings):
    extra = create_app(settings, "extra", None).producer._settings_extra()
    assert extra["acks"] == "all" and extra["enable_idempotence"] is True


def test_a_fetch_is_for_a_copy_of_the_active_partitions_and_none_for_an_empty_set(settings):
    async def scenario():
        consumer, fetched = create_app(settings, "fetch", None).consumer, []

        class Thread:
            async def getmany(self, active_partitions, timeout):
                fetched.append(active_partitions)
                return {EVENTS: ["record"]}

        consumer._thread = Thread()
        assert await consumer._getmany(set(), 1.0) == {} and fetched == []  # aiokafka: empty = every partition
        live = {EVENTS}
        assert await consumer._getmany(live, 1.0) == {EVENTS: ["record"]}
        assert fetched == [live] and fetched[0] is not live
        await consumer._getmany(None, 1.0)  # a client-only app: every assigned partition, as Faust asks
        assert fetched[-1] is None

    asyncio.run(scenario())


def test_the_fetch_loop_is_the_registered_drain(settings):
    async def scenario():
        app, seen = create_app(settings, "drain", None), []

        async def drain(consumer, fetcher) -> None:
            seen.append((consumer, fetcher))

        faust_compat.set_drain(app, drain)
        assert faust_compat.drain_of(app) is drain
        await app.consumer._drain_messages("fetcher")
        assert seen == [(app.consumer, "fetcher")]
        plain = faust.App("plain", broker="kafka://127.0.0.1:9", autodiscover=False)
        with pytest.raises(ValueError, match="stream-ctr-kafka"):
            faust_compat.set_drain(plain, drain)

    asyncio.run(scenario())


def test_a_rocksdb_write_goes_to_the_key_s_partition_without_an_event(settings):
    app = create_app(settings, "store", None)
    store = app.Table("users", partitions=4, use_partitioner=True).data
    store._set(b"user-7", b"state")
    partition = partition_of(b"user-7", 4)
    assert store._key_index[b"user-7"] == partition
    assert store._db_for_partition(partition)[b"user-7"] == b"state"
    plain = app.Table("plain", partitions=4).data
    with pytest.raises(AssertionError):  # Faust's own write, which needs an event
        plain._set(b"user-7", b"state")


def _recovery_fakes(calls: list, generation: int) -> tuple:
    def record(name):
        return lambda *args: calls.append((name, *args))

    async def arecord(name):
        calls.append((name,))

    consumer = SimpleNamespace(
        assignment=lambda: {EVENTS, CHANGELOG},
        perform_seek=lambda: arecord("seek"),
        resume_flow=record("resume_flow"),
        resume_partitions=record("resume_partitions"),
    )
    app = SimpleNamespace(
        conf=SimpleNamespace(stream_recovery_delay=0.0, broker_request_timeout=5.0),
        consumer=consumer,
        consumer_generation_id=generation,
        on_rebalance_complete=SimpleNamespace(send=lambda: arecord("rebalance_complete")),
        flow_control=SimpleNamespace(resume=record("flow_control.resume")),
        _fetcher=SimpleNamespace(maybe_start=lambda: arecord("fetcher started")),
        assignor=SimpleNamespace(assigned_standbys=lambda: set()),
        on_rebalance_end=record("rebalance_end"),
        in_recovery=True,
    )
    tables = SimpleNamespace(
        values=lambda: [],
        changelog_topics={CHANGELOG.topic},
        on_actives_ready=record("actives_ready"),
        on_standbys_ready=record("standbys_ready"),
    )
    return app, tables


def _recover(recovery_class, generation: int = 3) -> list:
    async def scenario():
        calls = []
        app, tables = _recovery_fakes(calls, generation)
        await recovery_class(app, tables).on_recovery_completed(3)
        return calls

    return asyncio.run(scenario())


def test_recovery_seeks_the_paused_partitions_then_resumes_them():
    assert _recover(faust_compat.Recovery) == [
        ("rebalance_complete",),
        ("seek",),
        ("flow_control.resume",),
        ("resume_flow",),
        ("resume_partitions", {EVENTS}),  # the stream partitions, not the changelogs
        ("fetcher started",),
        ("actives_ready",),
        ("standbys_ready",),
        ("rebalance_end",),
    ]


def test_faust_s_own_recovery_still_resumes_before_it_seeks():
    """Why the override exists: when this fails, Faust fixed the order and the override can go."""
    calls = [c[0] for c in _recover(faust.tables.recovery.Recovery)]
    assert calls.index("resume_partitions") < calls.index("seek")


def test_recovery_of_a_stale_generation_resumes_nothing():
    assert _recover(faust_compat.Recovery, generation=4) == [("rebalance_complete",)]
