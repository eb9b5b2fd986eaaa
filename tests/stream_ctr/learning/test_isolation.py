"""``stream_ctr.learning.isolation.isolate``: the records that raise alone are found, every other one processed once."""

import pytest

from stream_ctr.learning.isolation import isolate


def _processor(poison: set[int]):
    done: list[int] = []

    def fn(items):
        if poison & set(items):  # all or nothing: a call that raises processes none of its items
            raise ValueError(f"poison in {sorted(poison & set(items))}")
        done.extend(items)

    return fn, done


@pytest.mark.parametrize(
    "n, poison", [(1, set()), (1, {0}), (16, {3}), (17, {0, 16}), (100, set(range(0, 100, 7))), (64, set(range(64)))]
)
def test_isolate_returns_exactly_the_poison_and_processes_the_rest_once(n, poison):
    fn, done = _processor(poison)
    failed = isolate(list(range(n)), fn)
    assert sorted(item for item, _ in failed) == sorted(poison)
    assert all(isinstance(exc, ValueError) for _, exc in failed)
    assert sorted(done) == [i for i in range(n) if i not in poison]  # each once


def test_a_clean_batch_is_one_call():
    calls = []
    assert isolate([1, 2, 3], calls.append) == [] and calls == [[1, 2, 3]]


def test_faults_of_the_process_are_raised_not_blamed_on_a_record():
    def disk_full(items):
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        isolate([1, 2, 3], disk_full)
    with pytest.raises(KeyError):  # a caller's own fatal types
        isolate([1], lambda items: {}[items[0]], fatal=(KeyError,))
