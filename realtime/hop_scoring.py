"""Scoring per hop: the batcher's path when the engine runs its network alone on features.

Consecutive windows of a live stream share all but one hop of their samples. With an engine loaded
with ``split`` (engines.load), each stream opened on the batcher owns an
:class:`engines.hop_frontend.StreamFrames`, and a batch is scored as the streaming front end's
features (each window computes only the frames its new hop completes) through the engine's network
graph (``feature_logits``): the same logits as the whole window's graph, for a fraction of the front
end's cost. The batcher's one worker takes batches in queue order, and a batch's windows are fed
to the front end in the order they were submitted (its rows may not be: a shed window's row is
taken by the batch's last), so each stream's frames advance in stream order whatever ``parallel``
is. Only pure computation is split over the batcher's ``parallel`` engine calls: the front end's
spectral transform of the frames to compute and the network on parts of the batch; each stream's
state is updated in the worker, in order.

numpy's BLAS must run on one thread (the CLI sets ``OPENBLAS_NUM_THREADS=1``): else it fans the front
end's small filterbank product out over every core with threads that spin between calls.

A window starting k whole hops after its stream's last scored window (k - 1 windows shed or skipped
by the speech gate in between) catches up from its own samples: only its last k hops' frames are
computed while the stream's frames still share some (``engines.hop_frontend.follow_plan``), so a
shed window does not make its stream's next window cost a whole one. Any other window (the first,
a final flush window off the hop grid, one too far on) is computed whole and restarts the stream's
frames. Starts are absolute sample offsets in the stream's own samples, which never skip audio
(realtime.windowing, realtime.ringbuffer): no cache mixes audio across a gap.

A streaming network (``specrnet_stream``, on the ``onnx`` engine) goes further: each stream also owns an
:class:`engines.stream_network.StreamTrunk`, the worker runs the trunk graph on each window's new
frames only (in stream order, like the front end; the graph's rows split over the engine calls),
and the network step is the readout graph on the windows' trunk frames. Same rule for skipped
windows and gaps; same logits as the whole window's graph.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from engines.hop_frontend import HopFrontEnd, HopLayout, Split, StreamFrames, whole
from engines.stream_network import HopNetwork, StreamGeometry, StreamTrunk

from .windowing import WindowOptions

if TYPE_CHECKING:  # pragma: no cover
    from engines.checkpoint import ModelConfig

    from .batch_stream import BatchStream, QueuedItem
    from .options import DetectorOptions

__all__ = ["HOP_FRONTEND_MODES", "HopScoring", "hop_scoring", "split_request"]

#: ``auto``: per hop where the engine and hop allow it, else whole windows; ``on``: per hop or a
#: refusal saying why; ``off``: whole windows.
HOP_FRONTEND_MODES = ("auto", "on", "off")
Mode = Literal["auto", "on", "off"]


class SplitEngine(Protocol):
    """What the per-hop path needs of :class:`engines.Engine` loaded with ``split``."""

    config: ModelConfig
    split: bool

    def feature_logits(self, features: np.ndarray) -> np.ndarray: ...

    def warm_up(self, concurrency: int, network_only: bool) -> None: ...


def _trunk(engine: SplitEngine, layout: HopLayout) -> HopNetwork | str:
    """The network once per hop for ``engine``'s streaming network at ``layout``, or why not."""
    record = getattr(engine, "stream", None)
    if record is None:
        return "no trunk graph"
    try:
        geometry = StreamGeometry.from_record(record, layout)
    except ValueError as e:
        return str(e)
    return HopNetwork(geometry, engine.trunk_frames)  # type: ignore[attr-defined]


class HopScoring:
    """The streaming front end of one engine and window geometry, and its network: the network
    graph on the features or, for a streaming network, the trunk per hop and the readout."""

    def __init__(self, engine: SplitEngine, layout: HopLayout) -> None:
        self.frontend = HopFrontEnd(layout)
        trunk = _trunk(engine, layout)
        self.trunk = trunk if isinstance(trunk, HopNetwork) else None
        self.trunk_reason = "" if self.trunk is not None else trunk  # a streaming network that cannot apply: why
        self.network = engine.readout_logits if self.trunk is not None else engine.feature_logits  # type: ignore[attr-defined]
        self._engine = engine

    def warm_up(self, concurrency: int) -> None:
        """The network graph's warm-up alone: the whole window's graph never runs here, so its
        arena stays empty."""
        self._engine.warm_up(concurrency, network_only=True)

    def stream(self) -> StreamFrames:
        """A new stream's frames (freed with the stream: ``nbytes`` each)."""
        return self.frontend.stream()

    def _frames(self, stream: BatchStream) -> StreamFrames:
        """``stream``'s frames, made at its first scored window: an idle stream holds none (glibc
        keeps these 127-KB blocks on its heap, below the server's mmap threshold, once touched)."""
        if stream.frames is None:
            stream.frames = self.stream()
        return stream.frames

    def _trunk_frames(self, stream: BatchStream) -> StreamTrunk:
        """``stream``'s trunk frames, made at its first scored window like its frames."""
        assert self.trunk is not None
        if stream.trunk is None:
            stream.trunk = self.trunk.stream()
        return stream.trunk

    def features(self, batch: Sequence[QueuedItem], data: np.ndarray, split: Split = whole) -> np.ndarray:
        """The network step's input for the ``n`` windows in ``data``'s rows, row order: features
        [n, 1, n_features, frames] or, for a streaming network, trunk frames [n, channels, frames].
        ``batch`` is the batch's items in queue order (tombstones and unscored windows too);
        ``split`` runs the pure computation (spectral transform, trunk graph) in parts."""
        items = [it for it in batch if it.score and not it.dropped]
        order = [it.row for it in items]
        rate = self.frontend.layout.config.sample_rate
        # start_s is start / rate for a whole sample count: rounding recovers it exactly.
        starts = [round(it.window.start_s * rate) for it in items]
        frames = [self._frames(it.stream) for it in items]
        in_order = order == list(range(len(order)))
        x = self.frontend.features(frames, starts, data if in_order else data[order], split)  # else: after a shed
        if self.trunk is not None:  # in submit order too: each stream's trunk frames advance in order
            x = self.trunk.frames([self._trunk_frames(it.stream) for it in items], starts, x, split)
        if in_order:
            return x
        out = np.empty_like(x)
        out[order] = x
        return out


def _layout(config: ModelConfig, window: WindowOptions) -> HopLayout | str:
    """The front end's layout for ``window``, or why consecutive windows share no frames."""
    if window.sample_rate != config.sample_rate or window.window != config.window_samples:
        return f"the windows ({window.window} samples at {window.sample_rate} Hz) are not the checkpoint's"
    try:
        return HopLayout.for_model(config, window.hop)
    except ValueError as e:
        return str(e)


def split_request(options: DetectorOptions, config: ModelConfig) -> bool | Literal["auto"]:
    """``engines.load``'s ``split`` for a run: the network graph is loaded only when it will be
    used. ValueError (one line) when ``--hop-frontend on`` cannot apply to the run's hop."""
    mode = options.engine.hop_frontend
    if mode == "off":
        return False
    hop_s = options.windowing.hop_s if options.windowing.hop_s is not None else config.hop_s
    window = WindowOptions(config.sample_rate, config.window_samples / config.sample_rate, hop_s)
    layout = _layout(config, window)
    if isinstance(layout, str):
        if mode == "on":
            raise ValueError(f"--hop-frontend on cannot apply: {layout}")
        return False
    return True if mode == "on" else "auto"


def hop_scoring(engine: object, window: WindowOptions, mode: Mode) -> tuple[HopScoring | None, str]:
    """The batcher's per-hop path for ``engine`` at ``window``'s geometry, or None (whole windows),
    and which, in a few words (a server says it at start). ValueError when ``mode`` is ``on`` and
    it cannot apply."""
    if mode == "off":
        return None, "whole windows (--hop-frontend off)"
    if not getattr(engine, "split", False):
        reason = f"engine {getattr(engine, 'name', type(engine).__name__)!r} runs no network graph alone " \
                 "(onnx and onnx-int8 do, with the checkpoint's network view)"
    elif isinstance(layout := _layout(engine.config, window), str):  # type: ignore[attr-defined]
        reason = layout
    else:
        hop = HopScoring(engine, layout)  # type: ignore[arg-type]
        if hop.trunk is not None:
            return hop, (f"front end and network trunk once per hop ({hop.stream().nbytes / 1000:.0f} KB + "
                         f"{hop.trunk.stream().nbytes / 1000:.0f} KB per stream)")
        why = f"; network whole: {hop.trunk_reason}" if getattr(engine, "stream", None) is not None else ""
        return hop, f"front end once per hop ({hop.stream().nbytes / 1000:.0f} KB per stream){why}"
    if mode == "on":
        raise ValueError(f"--hop-frontend on cannot apply: {reason}")
    return None, f"whole windows: {reason}"
