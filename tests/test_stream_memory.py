"""tools/stream_memory.py's measurement on real engine objects: what an idle and an active stream
hold, and that closing the streams frees their per-hop state."""
from __future__ import annotations

import asyncio

from tools.stream_memory import measure

FRAMES = "session._handle.frames._ring"  # where the walk finds a stream's per-hop frames


def test_an_active_stream_holds_more_than_an_idle_one_and_closing_frees_it() -> None:
    r = asyncio.run(measure("specrnet", "onnx", streams=3))
    assert r["scoring"].startswith("front end once per hop")
    idle, active = r["computed_buffers"]["idle"], r["computed_buffers"]["active"]
    assert FRAMES not in idle and active[FRAMES] > 0  # frames come with the first scored window
    assert active["session.windower._ring._buf"] == idle["session.windower._ring._buf"]  # the ring is fixed
    assert r["computed_bytes"]["active"] == r["computed_bytes"]["idle"] + active[FRAMES]
    assert r["windows_scored_when_active"] == 2 * 3  # one window whole, one per hop, per stream
    traced = r["traced_bytes_per_stream"]
    assert traced["active"] > traced["idle"] >= r["computed_bytes"]["idle"]
    assert r["alive_after_close"] == {"StreamSession": 0, "RingBuffer": 0, "StreamFrames": 0}
    assert traced["left_after_close_total"] < active[FRAMES]  # less than one stream's frames stays, in all
