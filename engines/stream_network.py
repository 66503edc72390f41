"""Network once per hop, for streaming networks (``specrnet_stream``): each stream caches its trunk frames.

A streaming network is a trunk, whose output frame j reads only feature frames ``first + stride * j
.. first + stride * j + context - 1`` of a window and computes the same function of them for every
j, and a readout over a window's trunk frames (engines/models/specrnet_stream.py says why that holds
and how the numbers come about). When the window hop is a multiple of ``stride`` frames, window k + 1's
trunk frame j is window k's frame j + hop / stride, computed from the same feature frames. So a
stream's :class:`StreamTrunk` keeps its last window's trunk frames in a ring, and the next window runs
the trunk graph only on the feature frames of its ``hop / stride`` new trunk frames (the hop's new
frames plus ``context - stride`` before them), then the readout graph on all its trunk frames: the
same numbers as the whole window's graph.

The rule is :func:`engines.hop_frontend.follow_plan`'s, the front end's: a window starting k whole
hops after its stream's last one (after k - 1 shed or unscored windows) with ``k * step < frames``
(``step`` = hop / stride trunk frames) catches up: the trunk graph runs on its last k tiles of
``step`` trunk frames (from its own features), the ring moves on by ``k * step``. Any other window
(the first, one whose start is not a whole number of hops on, one too far on to share a trunk
frame, the final flush window unless it happens to start on the grid) computes all its trunk frames
and restarts the ring: the same fixed-size trunk graph, run on overlapping tiles of the window (the
last tile aligned to its end). The trunk graph's rows are pure computation: the caller's ``split``
may run them in parts concurrently (the batcher does, on its engine pool); the rings are updated
here, in batch order.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engines.hop_frontend import HopLayout, HopRing, Split, follow_plan, whole

__all__ = ["HopNetwork", "StreamGeometry", "StreamTrunk"]


@dataclass(frozen=True)
class StreamGeometry:
    """Where a streaming network's trunk frames lie in a window of ``layout``, validated once.

    From the checkpoint's record (model.json ``stream.geometry``): trunk ``frames`` per window, the
    window frame the first one starts at (``first``), ``stride`` and ``context`` in feature frames,
    ``channels`` per trunk frame and ``window_frames`` it was made for.
    """

    layout: HopLayout
    frames: int
    first: int
    stride: int
    context: int
    channels: int
    window_frames: int
    step: int = field(init=False)  # trunk frames a hop adds
    tile: int = field(init=False)  # feature frames per trunk graph row: ``step`` trunk frames
    tiles: tuple[int, ...] = field(init=False)  # first trunk frame of each row of a whole window

    def __post_init__(self) -> None:
        lay = self.layout
        if self.window_frames != lay.frames:
            raise ValueError(f"the network's trunk was made for windows of {self.window_frames} frames, "
                             f"these have {lay.frames}")
        if lay.step % self.stride:
            raise ValueError(f"the window hop ({lay.step} frames) is not a multiple of the network trunk's stride "
                             f"({self.stride} frames), so consecutive windows share no trunk frames")
        last = self.first + self.stride * (self.frames - 1) + self.context
        if self.first < lay.left or last > lay.left + lay.interior:
            raise ValueError(f"the trunk reads window frames {self.first}..{last - 1}, beyond the unpadded frames "
                             f"{lay.left}..{lay.left + lay.interior - 1}")
        step = min(lay.step // self.stride, self.frames)
        starts = list(range(0, self.frames - step, step)) + [self.frames - step]
        for name, value in (("step", step), ("tile", self.stride * (step - 1) + self.context),
                            ("tiles", tuple(starts))):
            object.__setattr__(self, name, value)

    @classmethod
    def from_record(cls, record: dict[str, Any], layout: HopLayout) -> StreamGeometry:
        g = record["geometry"]
        return cls(layout, *(int(g[k]) for k in ("frames", "first", "stride", "context", "channels",
                                                   "window_frames")))

    def rows(self, features: np.ndarray, trunk_frame: int) -> np.ndarray:
        """The trunk graph's input [1, n_features, tile] for trunk frames ``trunk_frame`` .. + step - 1
        of a window's features [1, n_features, frames]."""
        lo = self.first + self.stride * trunk_frame
        return features[:, :, lo : lo + self.tile]


class StreamTrunk(HopRing):
    """One stream's state: the trunk frames of its last window, a ring [channels, frames]."""

    __slots__ = ("geometry",)

    def __init__(self, geometry: StreamGeometry) -> None:
        super().__init__(geometry.channels, geometry.frames, geometry.layout.hop, geometry.step)
        self.geometry = geometry

    def _store(self, start: int, tiles: np.ndarray, out: np.ndarray) -> None:
        """A window computed whole: ``tiles`` [n_tiles, channels, step] -> ``out`` [channels, frames]."""
        g = self.geometry
        for j, block in zip(g.tiles, tiles):
            out[:, j : j + g.step] = block
        self._restart(start, out)

    def _advance(self, start: int, new: np.ndarray, out: np.ndarray) -> None:
        """The window k hops on: ``new`` [k, channels, step] its last k tiles of trunk frames."""
        self._catch_up(start, np.concatenate(new, axis=1), out)


class HopNetwork:
    """Trunk frames of a batch of windows from many streams, each running the trunk on new frames only.

    ``trunk`` is the trunk graph: rows [n, 1, n_features, tile] -> [n, channels, step]. Thread-safe:
    calls are serialised, since they advance the streams' states. Feed each stream's windows in order.
    """

    def __init__(self, geometry: StreamGeometry, trunk: Callable[[np.ndarray], np.ndarray]) -> None:
        self.geometry = geometry
        self._trunk = trunk
        self._lock = threading.Lock()

    def stream(self) -> StreamTrunk:
        """A new stream's (empty) state."""
        return StreamTrunk(self.geometry)

    def frames(self, streams: Sequence[StreamTrunk], starts: Sequence[int], features: np.ndarray,
               split: Split = whole) -> np.ndarray:
        """Trunk frames float32 [B, channels, frames] of windows whose features are ``features``
        [B, 1, n_features, window frames], window b being stream ``streams[b]``'s starting at its
        sample ``starts[b]``. A stream may appear more than once; its windows are taken in batch order.
        ``split`` runs the trunk graph on the rows to compute (the streams' states stay in this call)."""
        g = self.geometry
        if not len(streams) == len(starts) == len(features):
            raise ValueError(f"{len(streams)} streams, {len(starts)} starts and {len(features)} windows: one each")
        if any(not isinstance(s, StreamTrunk) or s.geometry != g for s in streams):
            raise ValueError("every stream state must come from this network's stream()")
        if features.ndim != 4 or features.shape[3] != g.window_frames:
            raise ValueError(f"features must be [B, 1, n_features, {g.window_frames}], got {list(features.shape)}")
        out = np.empty((len(features), g.channels, g.frames), dtype=np.float32)
        with self._lock:
            plan = follow_plan(streams, starts)  # per window: hops on from its stream's previous one, 0: whole
            rows = [g.rows(features[b], j) for b, hops in enumerate(plan) for j in self._tiles(hops)]
            trunk = split(self._trunk, np.stack(rows))
            r = 0
            for b, hops in enumerate(plan):
                if hops:
                    streams[b]._advance(int(starts[b]), trunk[r : r + hops], out[b])
                    r += hops
                else:
                    streams[b]._store(int(starts[b]), trunk[r : r + len(g.tiles)], out[b])
                    r += len(g.tiles)
        return out

    def _tiles(self, hops: int) -> Sequence[int]:
        """First trunk frame of each trunk graph row of a window: its last ``hops`` tiles, or all
        of a whole window's (``hops`` 0)."""
        g = self.geometry
        return range(g.frames - hops * g.step, g.frames, g.step) if hops else g.tiles
