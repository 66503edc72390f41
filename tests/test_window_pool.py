"""WindowPool: a window's array is reused only once nothing refers to it; idle ones are released."""

from __future__ import annotations

import numpy as np

from realtime.window_pool import WindowPool


def test_an_array_is_reused_only_when_nobody_holds_it_or_a_view_of_it() -> None:
    pool = WindowPool(8)
    a = pool.take()
    b = pool.take()
    assert a is not b and a.shape == (8,) and a.dtype == np.float32
    view = b[2:]  # a view keeps its base: b must not be handed out again
    del a, b
    c = pool.take()
    d = pool.take()
    assert not np.shares_memory(c, view) and not np.shares_memory(d, view)
    assert len(pool) == 3  # one reused, one new
    del view
    assert len({id(pool.take()) for _ in range(5)}) == 1  # nothing held: the same array every time


def test_arrays_idle_for_a_whole_period_are_released() -> None:
    pool = WindowPool(8, period=4)
    burst = [pool.take() for _ in range(6)]  # a backlog: six windows in flight at once
    assert len(pool) == 6
    del burst
    for _ in range(8):  # the backlog has cleared (a whole period passes): one window at a time
        pool.take()
    assert len(pool) == 1
