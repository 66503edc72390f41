"""Front end once per hop: each stream's windows reuse the spectrogram frames they share.

Consecutive windows of a stream (4 s every 0.5 s) share 7/8 of their samples. When the window hop
is a whole number of frame hops they share frames too: frame t of a window is frame t + hop/frame_hop
of the window before it, computed from the same samples. A stream's :class:`StreamFrames` keeps
the log features of its last window's interior frames in a ring; the next window computes only
the frames its new hop completes, plus the few frames at each edge that reach into the window's
zero padding (centred STFT): those differ from the stream's frames at the same place, so they are
recomputed from each window. Each frame is computed exactly as the full-window front end
(``engines.features``) computes it, so a window's features are the full-window ones, not an
approximation.

The batcher passes whole windows with their start sample. A window starting k whole hops after
the stream's last one (k >= 1: the next window, or one after k - 1 shed or unscored windows) with
``k * step < interior`` catches up: it computes its last ``k * step`` interior frames from its own
samples, keeps the other ``interior - k * step`` from the ring and moves the ring on by ``k * step``
frames. Any other window (the first, one whose start is not a whole number of hops on, one that far
on that it shares no interior frame, or one after :meth:`StreamFrames.reset`) is computed whole and
restarts the ring. The shared frames are those of the same absolute samples, and a stream's sample
numbering never skips audio (a window's start is its offset in the stream's own samples, see
realtime.ringbuffer), so a lost hop never shows up as wrong features. Only the new frames' samples
and the edges are read. :func:`follow_plan` is the rule, for every per-hop cache.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from engines.checkpoint import ModelConfig
from engines.engine import check_windows
from engines.features import SpectralFrames, frames
from engines.frontend_config import FrontEndConfig

__all__ = ["HopFrontEnd", "HopLayout", "HopRing", "Split", "StreamFrames", "follow_plan", "whole"]

#: How a pure computation runs on the rows of a batch: ``split(fn, x)`` returns ``fn(x)``, possibly
#: computed as parts of ``x`` (axis 0) concatenated (the batcher runs them on its engine pool).
Split = Callable[[Callable[[np.ndarray], np.ndarray], np.ndarray], np.ndarray]


def whole(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    """The :data:`Split` that runs ``fn`` on all of ``x`` at once, in this thread."""
    return fn(x)


@dataclass(frozen=True)
class HopLayout:
    """Which frames of a window are shared with the previous window, validated once.

    A window's frames are ``left`` edge frames, ``interior`` frames that lie wholly inside it (the
    ones a stream shares from window to window) and ``right`` edge frames; a hop adds ``step``.
    """

    config: FrontEndConfig
    window: int  # samples per window
    hop: int  # samples from one window's start to the next one's
    frames: int = field(init=False)
    left: int = field(init=False)
    right: int = field(init=False)
    step: int = field(init=False)

    def __post_init__(self) -> None:
        for name in ("window", "hop"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive number of samples, got {value!r}")
        cfg, frame_hop = self.config, self.config.hop_length
        if self.hop % frame_hop:
            ms = 1000.0 * frame_hop / cfg.sample_rate
            raise ValueError(f"the window hop ({self.hop} samples) is not a multiple of the front end's frame hop"
                             f" ({frame_hop} samples, {ms:g} ms), so consecutive windows share no frames; use a hop"
                             f" of a whole number of frame hops or score whole windows")
        n = cfg.n_frames(self.window)
        offset = cfg.frame_offset
        left = min(n, -(offset // frame_hop)) if offset < 0 else 0  # frames starting before sample 0
        inside = (self.window - offset - cfg.win_length) // frame_hop + 1  # frames ending by the window's end
        right = n - max(0, min(n, inside))
        if n - left - right < 1:
            raise ValueError(f"a window of {self.window} samples holds no frame without padding")
        for name, value in (("frames", n), ("left", left), ("right", right), ("step", self.hop // frame_hop)):
            object.__setattr__(self, name, value)

    @property
    def interior(self) -> int:
        return self.frames - self.left - self.right

    @classmethod
    def for_model(cls, model: ModelConfig, hop: int | None = None) -> HopLayout:
        """The layout of a checkpoint's windows; ``hop`` in samples, default the checkpoint's."""
        if hop is None:
            hop = round(model.hop_s * model.sample_rate)
        return cls(FrontEndConfig.from_dict(model.frontend), model.window_samples, hop)


class HopRing:
    """One stream's per-hop cache: the columns its last window shares with the next ones, in a ring
    [rows, span] float32 that moves on ``shift`` columns per ``hop`` samples; its size is fixed
    (``nbytes``). :func:`follow_plan` decides per window whether it catches up or restarts."""

    __slots__ = ("_head", "_ring", "_start", "hop", "shift")

    def __init__(self, rows: int, span: int, hop: int, shift: int) -> None:
        self._ring = np.zeros((rows, span), dtype=np.float32)
        self._head = 0  # ring column holding the window's first column
        self._start: int | None = None  # start sample of the window the ring holds; None: nothing held
        self.hop, self.shift = hop, shift

    @property
    def span(self) -> int:
        return self._ring.shape[1]

    @property
    def nbytes(self) -> int:
        return self._ring.nbytes

    def reset(self) -> None:
        """Forget the stream's columns (a gap in the stream): its next window is computed whole."""
        self._start = None

    def _restart(self, start: int, columns: np.ndarray) -> None:
        """A window computed whole: its shared ``columns`` [rows, span] fill the ring."""
        self._ring[:] = columns
        self._head, self._start = 0, start

    def _catch_up(self, start: int, new: np.ndarray, out: np.ndarray) -> None:
        """The window k hops on: its last columns ``new`` [rows, k * shift] take the places of the
        ring's oldest, which it no longer holds; ``out`` [rows, span] gets the ring in window order."""
        ring, span, n = self._ring, self.span, new.shape[1]
        first = min(n, span - self._head)
        ring[:, self._head : self._head + first] = new[:, :first]
        ring[:, : n - first] = new[:, first:]
        head = (self._head + n) % span
        out[:, : span - head] = ring[:, head:]
        out[:, span - head :] = ring[:, :head]
        self._head, self._start = head, start


class StreamFrames(HopRing):
    """One stream's state: the log features of its last window's interior frames, a ring of
    columns [n_features, interior], so the features of a whole window are assembled by copying rows."""

    __slots__ = ("layout",)

    def __init__(self, layout: HopLayout) -> None:
        super().__init__(layout.config.n_features, layout.interior, layout.hop, layout.step)
        self.layout = layout

    def _store(self, start: int, feats: np.ndarray, out: np.ndarray) -> None:
        """A window computed whole: ``feats`` [frames, n_features] -> ``out`` [n_features, frames]."""
        lay = self.layout
        out[:] = feats.T
        self._restart(start, out[:, lay.left : lay.left + lay.interior])

    def _advance(self, start: int, left: np.ndarray, new: np.ndarray, out: np.ndarray) -> None:
        """The window k hops on: ``left`` its leading edge frames, ``new`` its last ``k * step``
        interior frames then its trailing edge frames (rows of features)."""
        lay = self.layout
        shift = len(new) - lay.right
        self._catch_up(start, new[:shift].T, out[:, lay.left : lay.left + lay.interior])
        out[:, : lay.left] = left.T
        out[:, lay.left + lay.interior :] = new[shift:].T


def follow_plan(streams: Sequence[HopRing], starts: Sequence[int]) -> list[int]:
    """Per window of a batch, the number of hops k >= 1 it starts after its stream's previous window
    (the last one the stream's state holds, or an earlier window of the same stream in this batch),
    if its ring can catch up: it then computes only its last ``k * shift`` columns, the rest are
    the previous window's. 0: the window is computed whole and restarts the ring (no previous
    window, a start not a whole number of hops on, or ``k * shift >= span``: nothing shared).
    The rule by which every per-hop cache catches up or restarts."""
    last = {id(s): s._start for s in streams}
    plan = []
    for s, start in zip(streams, starts):
        plan.append(_hops(s, last[id(s)], int(start)))
        last[id(s)] = int(start)
    return plan


def _hops(state: HopRing, prev: int | None, start: int) -> int:
    """The hops from window start ``prev`` to ``start`` if ``state``'s ring can catch up over them, else 0."""
    if prev is None or start <= prev or (start - prev) % state.hop:
        return 0
    k = (start - prev) // state.hop
    return k if k * state.shift < state.span else 0


class HopFrontEnd:
    """Log features of a batch of windows from many streams, each computing only new frames.

    Thread-safe: calls are serialised, since they advance the streams' states (the front end
    is a small share of a window's cost). Feed each stream's windows in order; a window out of
    order is still right, only computed whole.
    """

    def __init__(self, layout: HopLayout) -> None:
        self.layout = layout
        self._spectral = SpectralFrames(layout.config)
        self._lock = threading.Lock()

    def stream(self) -> StreamFrames:
        """A new stream's (empty) state."""
        return StreamFrames(self.layout)

    def features(self, streams: Sequence[StreamFrames], starts: Sequence[int], windows: np.ndarray,
                 split: Split = whole) -> np.ndarray:
        """Features float32 [B, 1, n_features, frames] of ``windows`` [B, window], window b
        being the one of stream ``streams[b]`` that starts at its sample ``starts[b]``.
        A stream may appear more than once; its windows are taken in batch order. ``split`` runs
        the spectral transform of the frames to compute (the streams' states stay in this call)."""
        lay = self.layout
        x = check_windows(windows, lay.window)
        if not len(streams) == len(starts) == len(x):
            raise ValueError(f"{len(streams)} streams, {len(starts)} starts and {len(x)} windows: one each per window")
        if any(not isinstance(s, StreamFrames) or s.layout != lay for s in streams):
            raise ValueError("every stream state must come from this front end's stream()")
        if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in starts):
            raise ValueError("starts must be integer sample offsets")
        out = np.empty((len(x), 1, lay.config.n_features, lay.frames), dtype=np.float32)
        with self._lock:
            plan = follow_plan(streams, starts)  # per window: hops on from its stream's previous one, 0: whole
            feats = split(self._spectral, np.concatenate(
                [rows for b, hops in enumerate(plan) for rows in self._rows(x[b], hops)]))
            r = 0
            for b, hops in enumerate(plan):
                if hops:
                    tail = hops * lay.step + lay.right
                    streams[b]._advance(int(starts[b]), feats[r : r + lay.left],
                                        feats[r + lay.left : r + lay.left + tail], out[b, 0])
                    r += lay.left + tail
                else:
                    streams[b]._store(int(starts[b]), feats[r : r + lay.frames], out[b, 0])
                    r += lay.frames
        return out

    def _rows(self, window: np.ndarray, hops: int) -> list[np.ndarray]:
        """The frames to compute of one window: all (``hops`` 0), or its edges and the frames of
        its last ``hops`` hops."""
        lay, cfg = self.layout, self.layout.config
        if not hops:
            return [frames(window, cfg, 0, lay.frames)]
        new = hops * lay.step
        blocks = [frames(window, cfg, lay.frames - lay.right - new, new + lay.right)]
        return [frames(window, cfg, 0, lay.left)] + blocks if lay.left else blocks
