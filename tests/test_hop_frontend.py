"""Streaming front end (engines.hop_frontend) on real speech: each window's features equal the
full-window front end's while only the frames of the new hop (and the padded edges) are computed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engines.errors import EngineError
from engines.features import log_features
from engines.frontend_config import RESMAX_FRONTEND, SPECRNET_FRONTEND, FrontEndConfig
from engines.hop_frontend import HopFrontEnd, HopLayout, StreamFrames
from tests.conftest import speech_files

WINDOW = 64000
LINEAR = FrontEndConfig(kind="loglinear", n_fft=512, win_length=400, hop_length=160, n_mels=80)
# Uncentred (no padded edges), an odd number of zero taps, another frame hop.
UNCENTRED = FrontEndConfig(kind="logpower", n_fft=512, win_length=401, hop_length=100, center=False)
# Odd n_fft: one zero fewer of centre padding on the right than on the left.
ODD = FrontEndConfig(kind="logmel", n_fft=511, win_length=400, hop_length=160, n_mels=64)
CASES = {  # front end, hop in samples
    "specrnet": (SPECRNET_FRONTEND, 8000),
    "linear": (LINEAR, 8000),
    "resmax": (RESMAX_FRONTEND, 8192),  # 0.512 s: 0.5 s is not a whole number of its 16-ms frames
    "uncentred": (UNCENTRED, 4000),
    "odd": (ODD, 1600),
}


def _stream_audio() -> np.ndarray:
    """Three bona fide recordings back to back (~36 s of real speech)."""
    return np.concatenate([sf.read(f, dtype="float32")[0] for f in speech_files(3)])


class RowCounter:
    """Wraps a front end's frame transform to count the frames it computes per call."""

    def __init__(self, fe: HopFrontEnd) -> None:
        self.inner, self.calls = fe._spectral, []
        fe._spectral = self

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        self.calls.append(len(rows))
        return self.inner(rows)


def _counted(cfg: FrontEndConfig, hop: int) -> tuple[HopLayout, HopFrontEnd, RowCounter, StreamFrames]:
    """A front end for ``cfg`` at ``hop`` with its spectral rows counted, and a new stream."""
    layout = HopLayout(cfg, WINDOW, hop)
    fe = HopFrontEnd(layout)
    return layout, fe, RowCounter(fe), fe.stream()


@pytest.mark.parametrize("case", list(CASES))
def test_each_hop_computes_only_new_frames_and_equals_the_full_window(case: str) -> None:
    cfg, hop = CASES[case]
    layout, fe, counter, stream = _counted(cfg, hop)
    audio = _stream_audio()
    starts = range(0, len(audio) - WINDOW + 1, hop)
    size = stream.nbytes
    worst = 0.0
    for start in starts:
        window = audio[start : start + WINDOW]
        got = fe.features([stream], [start], window[None])
        assert got.shape == (1, 1, cfg.n_features, cfg.n_frames(WINDOW)) and got.dtype == np.float32
        worst = max(worst, float(np.abs(got[0, 0] - log_features(window, cfg)).max()))
    assert len(starts) > 40
    assert worst <= 1e-5  # the same arithmetic per frame: measured 0.0 for every case
    # The first window is computed whole; every later one only its edges and its new hop's frames.
    per_hop = layout.left + layout.step + layout.right
    assert counter.calls == [layout.frames] + [per_hop] * (len(starts) - 1)
    assert per_hop < layout.frames / 4
    assert stream.nbytes == size == cfg.n_features * layout.interior * 4  # bounded: one window's frames


def test_gap_or_reset_computes_the_next_window_whole() -> None:
    layout, fe, counter, stream = _counted(SPECRNET_FRONTEND, 8000)
    audio = _stream_audio()
    # Hops, then a gap of 3.3 s, hops, an explicit reset (the caller knows of a gap its positions
    # do not show), hops, then a window out of order.
    starts = [0, 8000, 16000, 68800, 76800, 84800, 92800, 100800, 84800]
    whole = {0, 3, 5, 8}
    for i, start in enumerate(starts):
        if i == 5:
            stream.reset()
        window = audio[start : start + WINDOW]
        got = fe.features([stream], [start], window[None])
        np.testing.assert_allclose(got[0, 0], log_features(window, SPECRNET_FRONTEND), rtol=0, atol=1e-5)
        assert counter.calls[-1] == (layout.frames if i in whole else layout.left + layout.step + layout.right), i


@pytest.mark.parametrize("case", list(CASES))
def test_a_window_hops_on_catches_up_while_frames_are_shared(case: str) -> None:
    """A window k hops after the stream's last one computes its edges and its last k hops' frames
    while k * step < interior (the largest such k too), else it is computed whole."""
    cfg, hop = CASES[case]
    layout, fe, counter, stream = _counted(cfg, hop)
    audio = _stream_audio()
    most = (layout.interior - 1) // layout.step  # the most hops that still share a frame
    hops = [1, 2, 3, most, most + 1, 2]
    starts = np.cumsum([0, *hops]) * hop
    assert starts[-1] + WINDOW <= len(audio)
    for start in starts:
        window = audio[start : start + WINDOW]
        got = fe.features([stream], [start], window[None])
        np.testing.assert_allclose(got[0, 0], log_features(window, cfg), rtol=0, atol=1e-5)
    edges = layout.left + layout.right
    assert counter.calls == [layout.frames] + [edges + k * layout.step if k <= most else layout.frames for k in hops]


def test_a_batch_mixes_streams_and_holds_consecutive_windows_of_one() -> None:
    cfg, hop = CASES["resmax"]
    fe = HopFrontEnd(HopLayout(cfg, WINDOW, hop))
    audio = _stream_audio()
    a, b = fe.stream(), fe.stream()
    offset = 5 * 16000  # stream b is the same recording 5 s later, as its own stream
    fe.features([a, b], [0, 0], np.stack([audio[:WINDOW], audio[offset : offset + WINDOW]]))
    counter = RowCounter(fe)
    # Stream a twice in one batch (windows 1 and 2), b once; then both again.
    for starts, owners in (([hop, hop, 2 * hop], [a, b, a]), ([3 * hop, 2 * hop], [a, b])):
        base = [0 if s is a else offset for s in owners]
        windows = np.stack([audio[o + t : o + t + WINDOW] for o, t in zip(base, starts)])
        got = fe.features(owners, starts, windows)
        for k, w in enumerate(windows):
            np.testing.assert_allclose(got[k, 0], log_features(w, cfg), rtol=0, atol=1e-5)
    per_hop = fe.layout.left + fe.layout.step + fe.layout.right
    assert counter.calls == [3 * per_hop, 2 * per_hop]  # one transform per batch, new frames only


@pytest.mark.parametrize("case", ["specrnet", "resmax"])
def test_stream_features_match_the_models_torch_front_end(case: str) -> None:
    """Against FrontEnd itself (float32 DFT as a convolution): the differences are its float32
    rounding, largest in ResMax's quietest single bins (measured 2e-5 SpecRNet, 5e-4 ResMax)."""
    torch = pytest.importorskip("torch")
    from engines.frontend import FrontEnd

    cfg, hop = CASES[case]
    fe = HopFrontEnd(HopLayout(cfg, WINDOW, hop))
    stream = fe.stream()
    audio = _stream_audio()[: 12 * 16000]
    starts = list(range(0, len(audio) - WINDOW + 1, hop))
    windows = np.stack([audio[s : s + WINDOW] for s in starts])
    got = np.concatenate([fe.features([stream], [s], windows[k : k + 1]) for k, s in enumerate(starts)])
    ref = FrontEnd(cfg)(torch.from_numpy(windows)).numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 if case == "specrnet" else 2e-3)


def test_layout_refuses_hops_that_share_no_frames() -> None:
    with pytest.raises(ValueError, match=r"hop \(8000 samples\) is not a multiple of the front end's frame hop \(256 samples, 16 ms\)"):
        HopLayout(RESMAX_FRONTEND, WINDOW, 8000)
    with pytest.raises(ValueError, match="holds no frame"):
        HopLayout(SPECRNET_FRONTEND, 400, 160)
    with pytest.raises(ValueError, match="positive"):
        HopLayout(SPECRNET_FRONTEND, WINDOW, 0)
    layout = HopLayout(SPECRNET_FRONTEND, WINDOW, 8000)
    assert (layout.frames, layout.left, layout.interior, layout.right, layout.step) == (401, 2, 397, 2, 50)


def test_layout_of_a_checkpoint(checkpoints: dict[str, Path]) -> None:
    import engines
    from engines.checkpoint import read_config

    cfg = read_config(engines.resolve_model("specrnet"))
    layout = HopLayout.for_model(cfg)
    assert (layout.window, layout.hop, layout.config.n_mels) == (64000, 8000, 80)
    resmax = read_config(checkpoints["resmax"])  # 16-ms frames: 0.5 s is 31.25 of them
    with pytest.raises(ValueError, match="not a multiple"):
        HopLayout.for_model(resmax)
    assert HopLayout.for_model(resmax, hop=8192).step == 32


def test_bad_input_is_refused_before_any_state_changes() -> None:
    fe = HopFrontEnd(HopLayout(SPECRNET_FRONTEND, WINDOW, 8000))
    other = HopFrontEnd(HopLayout(LINEAR, WINDOW, 8000))
    stream = fe.stream()
    audio = _stream_audio()[:WINDOW][None]
    with pytest.raises(EngineError, match=r"shape \[B, 64000\]"):
        fe.features([stream], [0], audio[:, :-1])
    with pytest.raises(EngineError, match="NaN or Inf"):
        fe.features([stream], [0], np.where(np.arange(WINDOW) == 9, np.nan, audio).astype(np.float32))
    with pytest.raises(ValueError, match="one each per window"):
        fe.features([stream, stream], [0], audio)
    with pytest.raises(ValueError, match="this front end's stream"):
        fe.features([other.stream()], [0], audio)
    with pytest.raises(ValueError, match="integer sample offsets"):
        fe.features([stream], [0.5], audio)
    # None of that touched the stream: its first window is still computed whole.
    counter = RowCounter(fe)
    fe.features([stream], [0], audio)
    assert counter.calls == [401]

