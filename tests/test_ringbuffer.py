"""RingBuffer: windows must equal slicing the whole signal at k * hop, whatever the chunking."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from realtime.errors import AudioFormatError, BufferOverrunError
from realtime.ringbuffer import RingBuffer


def expected_windows(sig: np.ndarray, window: int, hop: int) -> list[tuple[int, np.ndarray]]:
    return [(s, sig[s:s + window]) for s in range(0, len(sig) - window + 1, hop)]


def split(sig: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """Cut sig into chunks of the given sizes (cycled), zero-length chunks included."""
    chunks, i, k = [], 0, 0
    while i < len(sig):
        n = sizes[k % len(sizes)]
        chunks.append(sig[i:i + n])
        i += n
        k += 1
    return chunks


def fed(rb: RingBuffer, x: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Every window ``feed`` yields, each copied before the next is asked for (its view is then
    free to be overwritten)."""
    return [(s, w.copy()) for s, w in rb.feed(x)]


def assert_same(got: list[tuple[int, np.ndarray]], want: list[tuple[int, np.ndarray]]) -> None:
    assert [s for s, _ in got] == [s for s, _ in want]
    for (s, g), (_, w) in zip(got, want):
        assert g.dtype == np.float32 and g.shape == w.shape, s
        np.testing.assert_array_equal(g, w, err_msg=f"window at {s}")


geometry = st.integers(1, 40).flatmap(
    lambda w: st.tuples(
        st.just(w),
        st.integers(1, 3 * w),  # hop: smaller, equal and larger than the window
        st.integers(w, 3 * w + 5),  # capacity: from exactly one window up
    )
)


@settings(max_examples=300, deadline=None)
@given(
    geom=geometry,
    n=st.integers(0, 400),
    sizes=st.lists(st.integers(0, 150), min_size=1, max_size=20).filter(any),
    seed=st.integers(0, 2**32 - 1),
)
def test_feed_any_chunking_equals_slicing(geom, n, sizes, seed):
    window, hop, capacity = geom
    sig = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    rb = RingBuffer(window, hop, capacity)
    got = []
    for c in split(sig, sizes):
        for start, w in rb.feed(c):
            assert w.flags.c_contiguous and not w.flags.writeable and np.shares_memory(w, rb._buf)  # zero-copy
            got.append((start, w.copy()))
    assert_same(got, expected_windows(sig, window, hop))
    assert rb.written == n


@settings(max_examples=300, deadline=None)
@given(
    geom=geometry,
    n=st.integers(0, 400),
    sizes=st.lists(st.integers(0, 150), min_size=1, max_size=20).filter(any),
    seed=st.integers(0, 2**32 - 1),
)
def test_write_then_windows_zero_copy_path(geom, n, sizes, seed):
    """The write()/windows() path: chunks capped at `free`, yielded arrays copied by the caller."""
    window, hop, capacity = geom
    sig = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    rb = RingBuffer(window, hop, capacity)
    got = []
    for c in split(sig, sizes):
        i = 0
        while i < len(c) or i == 0:
            k = min(len(c) - i, rb.free)
            rb.write(c[i:i + k])
            i += k
            for start, w in rb.windows():
                assert w.flags.c_contiguous and not w.flags.writeable
                assert w.shape == (window,) and w.dtype == np.float32
                got.append((start, w.copy()))
            if i >= len(c):
                break
    assert_same(got, expected_windows(sig, window, hop))


class RingMachine(RuleBasedStateMachine):
    """Random interleavings of write/feed/read/latest against a plain-list model."""

    @initialize(geom=geometry, seed=st.integers(0, 2**32 - 1))
    def setup(self, geom, seed):
        self.window, self.hop, self.capacity = geom
        self.rb = RingBuffer(self.window, self.hop, self.capacity)
        self.rng = np.random.default_rng(seed)
        self.sig = np.zeros(0, np.float32)
        self.next = 0

    def _chunk(self, n):
        c = self.rng.standard_normal(n).astype(np.float32)
        self.sig = np.concatenate([self.sig, c])  # the model may grow; the buffer may not
        return c

    @rule(n=st.integers(0, 200))
    def write(self, n):
        free = self.rb.free
        if n > free:
            before = (self.rb.written, self.rb.next_start, self.rb._buf.copy())
            with pytest.raises(BufferOverrunError, match=f"write of {n} samples but only {free}"):
                self.rb.write(np.zeros(n, np.float32))
            assert (self.rb.written, self.rb.next_start) == before[:2]
            np.testing.assert_array_equal(self.rb._buf, before[2])  # nothing written
        else:
            self.rb.write(self._chunk(n))

    @rule(n=st.integers(0, 300))
    def feed(self, n):
        for start, w in self.rb.feed(self._chunk(n)):
            self._check_window(start, w)

    @rule()
    def read(self):
        item = self.rb.read_window()
        if self.next + self.window > len(self.sig):
            assert item is None
            return
        self._check_window(*item)

    @precondition(lambda self: len(self.sig) > 0)
    @rule(frac=st.floats(0, 1))
    def latest(self, frac):
        n = int(frac * min(len(self.sig), self.window))
        got = self.rb.latest(n)
        assert not got.flags.writeable and np.shares_memory(got, self.rb._buf) or n == 0
        np.testing.assert_array_equal(got, self.sig[len(self.sig) - n:])

    def _check_window(self, start, w):
        assert start == self.next
        assert w.flags.c_contiguous and w.shape == (self.window,) and np.shares_memory(w, self.rb._buf)
        np.testing.assert_array_equal(w, self.sig[start:start + self.window])
        self.next += self.hop

    @invariant()
    def counters(self):
        if hasattr(self, "rb"):
            assert self.rb.written == len(self.sig)
            assert self.rb.next_start == self.next
            assert self.rb.free >= 0
            assert self.rb.ready == len(range(self.next, len(self.sig) - self.window + 1, self.hop))


TestRingMachine = RingMachine.TestCase
TestRingMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None,
                                    suppress_health_check=[HealthCheck.too_slow])


def test_wrapping_windows_are_views_of_the_mirror_and_correct():
    # capacity 7, window 5, hop 2: windows straddle the end of the capacity regularly and read on
    # into the mirror of its start, so every window is one slice of the storage: nothing is copied.
    sig = np.arange(100, dtype=np.float32)
    rb = RingBuffer(5, 2, capacity=7)
    assert rb._buf.shape == (7 + 5 - 1,)
    got, wrapped = [], 0
    for x in np.split(sig, range(2, 100, 2)):
        rb.write(x)
        for start, w in rb.windows():
            assert np.shares_memory(w, rb._buf)
            wrapped += start % 7 + 5 > 7
            got.append((start, w.copy()))
    assert wrapped > 10  # the mirror really was read
    assert_same(got, expected_windows(sig, 5, 2))


def test_windows_are_read_only_views_that_a_later_write_overwrites():
    rb = RingBuffer(4, 4, capacity=4)
    rb.write(np.arange(4, dtype=np.float32))
    _, w = rb.read_window()
    with pytest.raises(ValueError, match="read-only"):
        w[0] = 1.0
    rb.write(np.arange(4, 8, dtype=np.float32))  # the window's samples are gone: copy to keep
    np.testing.assert_array_equal(w, [4, 5, 6, 7])


def test_chunk_much_larger_than_capacity():
    window, hop = 64000, 8000
    sig = np.random.default_rng(1).standard_normal(16000 * 30).astype(np.float32)
    rb = RingBuffer(window, hop)  # capacity 72000 < 480000
    assert rb.capacity == window + hop
    got = fed(rb, sig)
    assert_same(got, expected_windows(sig, window, hop))
    with pytest.raises(BufferOverrunError):
        rb.write(sig)  # the strict path refuses what feed() splits


def test_hop_larger_than_window_skips_gap_without_needing_space():
    window, hop = 4, 50
    sig = np.arange(500, dtype=np.float32)
    rb = RingBuffer(window, hop, capacity=4)
    # After the first window, the next needed sample is 50: a 40-sample write fits
    # although it is 10x the capacity, because none of it is needed.
    got = fed(rb, sig[:10])
    assert rb.free == 4 + 50 - 10
    rb.write(sig[10:50])
    got += list((s, w.copy()) for s, w in rb.windows())
    got += fed(rb, sig[50:])
    assert_same(got, expected_windows(sig, window, hop))


def test_zero_length_writes_change_nothing():
    rb = RingBuffer(3, 1)
    for _ in range(5):
        rb.write(np.zeros(0, np.float32))
        assert list(rb.feed(np.zeros(0, np.float32))) == []
    assert rb.written == 0 and rb.ready == 0 and list(rb.windows()) == []
    rb.write(np.ones(3, np.float32))
    rb.write(np.zeros(0, np.float32))
    assert rb.ready == 1


def test_absolute_offsets_keep_counting_past_capacity():
    rb = RingBuffer(10, 10, capacity=10)
    starts = []
    for _ in range(1000):
        starts += [s for s, _ in rb.feed(np.ones(7, np.float32))]
    assert starts == list(range(0, 7000 - 9, 10))
    assert rb.written == 7000 and rb._buf.shape == (10 + 9,)


def test_reset_restarts_offsets():
    rb = RingBuffer(2, 2)
    list(rb.feed(np.ones(5, np.float32)))
    rb.reset()
    assert rb.written == 0 and rb.next_start == 0
    assert [s for s, _ in rb.feed(np.ones(4, np.float32))] == [0, 2]


@pytest.mark.parametrize(
    "bad, exc, msg",
    [
        (np.zeros(4, np.float64), AudioFormatError, "dtype float64 not accepted; expected float32"),
        (np.zeros(4, np.int16), AudioFormatError, "dtype int16"),
        (np.zeros((4, 2), np.float32), AudioFormatError, r"shape \(4, 2\) not accepted; expected 1-D"),
        (np.zeros((), np.float32), AudioFormatError, r"shape \(\)"),
        ([0.0, 1.0], TypeError, "numpy.ndarray of float32, got list"),
    ],
)
def test_write_rejects_wrong_input(bad, exc, msg):
    rb = RingBuffer(4, 2)
    with pytest.raises(exc, match=msg):
        rb.write(bad)
    with pytest.raises(exc, match=msg):
        rb.feed(bad)
    assert rb.written == 0


def test_non_contiguous_input_is_accepted():
    sig = np.arange(40, dtype=np.float32)
    rb = RingBuffer(4, 4)
    got = fed(rb, sig[::2])
    assert_same(got, expected_windows(sig[::2].copy(), 4, 4))


@pytest.mark.parametrize(
    "kwargs, exc, msg",
    [
        (dict(window=0, hop=1), ValueError, "window must be >= 1, got 0"),
        (dict(window=4, hop=0), ValueError, "hop must be >= 1, got 0"),
        (dict(window=4, hop=1, capacity=3), ValueError, r"capacity must be >= window \(4 samples\), got 3"),
        (dict(window=4.0, hop=1), TypeError, "window must be an int"),
        (dict(window=True, hop=1), TypeError, "got bool"),
    ],
)
def test_constructor_validation(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        RingBuffer(**kwargs)


def test_feed_checks_its_input_before_the_first_window_and_writes_as_windows_are_taken():
    rb = RingBuffer(4, 4)
    with pytest.raises(AudioFormatError):
        rb.feed(np.zeros(4, np.float64))  # at the call, not at the first next()
    windows = rb.feed(np.arange(12, dtype=np.float32))
    assert rb.written == 0  # nothing yet: the chunk is written piece by piece as windows are taken
    assert [s for s, _ in windows] == [0, 4, 8] and rb.written == 12


def test_latest_bounds():
    rb = RingBuffer(4, 4, capacity=6)
    rb.write(np.arange(3, dtype=np.float32))
    with pytest.raises(ValueError, match=r"n must be in 0..3"):
        rb.latest(4)
    list(rb.feed(np.arange(3, 20, dtype=np.float32)))
    np.testing.assert_array_equal(rb.latest(4), np.arange(16, 20))  # wraps: read on into the mirror
    with pytest.raises(ValueError, match=r"0..4"):
        rb.latest(5)  # at most a window: only that much is contiguous
