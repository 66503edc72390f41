"""BufferPool and BatchRows: a buffer is reused only once nothing refers to it; rows stay packed."""

from __future__ import annotations

import numpy as np

from realtime.batch_rows import BatchRows, BufferPool


def test_an_array_is_reused_only_when_nobody_holds_it_or_a_view_of_it() -> None:
    pool = BufferPool((2, 8))
    a = pool.take()
    b = pool.take()
    assert a is not b and a.shape == (2, 8) and a.dtype == np.float32
    view = b[1]  # a view keeps its base (a result's row keeps its batch's buffer): no reuse
    del a, b
    c = pool.take()
    d = pool.take()
    assert not np.shares_memory(c, view) and not np.shares_memory(d, view)
    assert len(pool) == 3  # one reused, one new
    del view
    assert len({id(pool.take()) for _ in range(5)}) == 1  # nothing held: the same array every time


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_arrays_idle_for_a_whole_period_are_released_and_demand_within_it_reuses_them() -> None:
    clock = Clock()
    pool = BufferPool((8,), keep_s=10.0, clock=clock)
    burst = [pool.take() for _ in range(6)]  # a backlog: six batches in flight at once
    del burst
    for _ in range(20):  # one at a time for 9 s: the five others are idle, but kept
        clock.t += 0.45
        pool.take()
    burst = [pool.take() for _ in range(6)]  # the backlog is back: nothing to allocate
    assert len(pool) == 6
    del burst
    for _ in range(50):  # one at a time through a whole period (10..20 s), then past its end
        clock.t += 0.5
        pool.take()
    assert len(pool) == 1


def test_an_idle_pool_gives_its_memory_back_on_trim() -> None:
    clock = Clock()
    pool = BufferPool((8,), keep_s=10.0, clock=clock)
    burst = [pool.take() for _ in range(4)]
    del burst  # the streams ended: no more takes, only the batcher's idle trims
    for _ in range(3):
        clock.t += 10.0
        pool.trim()
    assert len(pool) == 1
    pool.clear()
    assert len(pool) == 0


class Item:
    row = -1


def test_rows_are_copies_and_stay_packed_when_a_window_is_removed() -> None:
    rows = BatchRows(np.empty((4, 3), np.float32))
    items = [Item() for _ in range(4)]
    sources = [np.full(3, i, np.float32) for i in range(4)]
    for it, x in zip(items, sources):
        rows.add(it, x)
    for x in sources:
        x[:] = -1  # the ring writes over the window: its row keeps the samples
    assert rows.full and [it.row for it in items] == [0, 1, 2, 3]
    rows.remove(items[1])  # the last row moves into the hole
    assert len(rows) == 3 and not rows.full and items[3].row == 1
    rows.remove(items[3])  # the last window's row, now row 1: row 2 moves again
    rows.remove(items[2])  # now the last row: nothing moves
    assert rows.items == [items[0]] and items[0].row == 0
    np.testing.assert_array_equal(rows.data[:1], [[0, 0, 0]])
    rows.add(items[1], np.full(3, 7, np.float32))
    assert items[1].row == 1
    np.testing.assert_array_equal(rows.data[:2], [[0, 0, 0], [7, 7, 7]])


def test_each_remaining_window_keeps_its_samples_through_removals() -> None:
    rng = np.random.default_rng(0)
    rows = BatchRows(np.empty((16, 5), np.float32))
    items = [Item() for _ in range(16)]
    want = {id(it): rng.standard_normal(5).astype(np.float32) for it in items}
    for it in items:
        rows.add(it, want[id(it)])
    for k in rng.permutation(16)[:11]:
        rows.remove(items[k])
    assert len(rows) == 5 and sorted(it.row for it in rows.items) == list(range(5))
    for it in rows.items:
        np.testing.assert_array_equal(rows.data[it.row], want[id(it)])
