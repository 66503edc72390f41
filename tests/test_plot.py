"""--plot: the static timeline image of a scored file (matplotlib Agg)."""
from __future__ import annotations

import io
import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("matplotlib", reason="plot extra not installed (matplotlib)")

from engines import MissingExtraError  # noqa: E402
from realtime.cli import main  # noqa: E402
from realtime.events import ScoreEvent, SummaryEvent  # noqa: E402
from realtime.inputs import open_files  # noqa: E402
from realtime.options import DetectorOptions, EngineOptions, InputOptions  # noqa: E402
from realtime.plot import (  # noqa: E402
    DPI,
    FIGSIZE,
    plot_targets,
    require_matplotlib,
    timeline_figure,
    waveform_envelope,
)
from realtime.run import run_inputs  # noqa: E402
from tests.conftest import speech  # noqa: E402


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("plot")
    a = d / "a.wav"
    sf.write(a, np.concatenate([speech(5.0, 0), speech(5.0, 1)]), 16000)
    b = d / "sub" / "b.flac"
    b.parent.mkdir()
    sf.write(b, speech(6.0, 2), 16000)
    return [a, b]


def run(args: list[str]) -> tuple[int, list[dict], str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(args, stdout=out, stderr=err)
    return code, [json.loads(x) for x in out.getvalue().splitlines()], err.getvalue()


def test_cli_writes_the_timeline_png(checkpoints: dict[str, Path], clips: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "timeline.png"
    code, events, err = run(["--input", str(clips[0]), "--offline", "--json", "--plot", str(out),
                             "--model", str(checkpoints["specrnet"])])
    assert code == 0, err
    assert out.is_file() and png_size(out) == (FIGSIZE[0] * DPI, FIGSIZE[1] * DPI)
    assert f"timeline written to {out}" in err
    assert [e["type"] for e in events] == ["summary"], "--plot does not add window events to the output"


def test_figure_draws_the_events(checkpoints: dict[str, Path], clips: list[Path]) -> None:
    """The drawn data equal the run's events: probability at window centres, threshold, waveform."""
    import asyncio

    class Collect(list):
        """The CLI's Output as far as run_inputs uses it: events, the model line, a stdout never closed."""

        stdout_closed = asyncio.Event()

        def __call__(self, ev) -> None:
            self.append(ev)

        def model_line(self, model: str, threshold: float) -> None:
            pass

    events = Collect()
    options = DetectorOptions(engine=EngineOptions(str(checkpoints["specrnet"]), "onnx"),
                              input=InputOptions(offline=True))
    assert asyncio.run(run_inputs(open_files([str(clips[0])], options), options, events)) == 0
    scores = [e for e in events if isinstance(e, ScoreEvent)]
    summary = events[-1]
    assert isinstance(summary, SummaryEvent) and len(scores) == 13
    env = waveform_envelope(clips[0])
    fig = timeline_figure(scores, threshold=0.42, envelope=env, title="a.wav")
    ax_p, ax_w = fig.axes
    lines = {ln.get_gid(): ln for ln in ax_p.lines}
    np.testing.assert_allclose(lines["probability"].get_xdata(), [(e.start_s + e.end_s) / 2 for e in scores])
    np.testing.assert_allclose(lines["probability"].get_ydata(), [e.spoof_probability for e in scores])
    np.testing.assert_allclose(lines["threshold"].get_ydata(), [0.42, 0.42])
    assert ax_w.get_shared_x_axes().joined(ax_p, ax_w)
    assert ax_w.get_xlim() == (0.0, 10.0)
    assert fig._suptitle.get_text() == "a.wav"
    assert not [p for p in ax_p.patches if p.get_gid() == "alert"], "no alert, no shading"


def test_alert_spans_are_shaded() -> None:
    alerts = [False, True, True, False, False, True]
    scores = [ScoreEvent(stream="s", seq=i, start_s=i / 2, end_s=i / 2 + 4, spoof_probability=0.9 if a else 0.1,
                         label="spoof" if a else "bonafide", alert=a, latency_ms=1.0, model="m")
              for i, a in enumerate(alerts)]
    fig = timeline_figure(scores, threshold=0.5)
    patches = [p for p in fig.axes[0].patches if p.get_gid() == "alert"]
    spans = sorted((round(float(p.get_x()), 6), round(float(p.get_x() + p.get_width()), 6)) for p in patches)
    # centres 2.0 ... 4.5 every 0.5 s; each point owns +-0.25 s
    assert spans == [(2.25, 3.25), (4.25, 4.75)]


def test_waveform_envelope_is_exact_and_bounded(clips: list[Path]) -> None:
    audio, rate = sf.read(clips[0], dtype="float32")
    env = waveform_envelope(clips[0], buckets=500)
    assert len(env.t) <= 500 and env.duration_s == pytest.approx(10.0)
    assert env.lo.min() == audio.min() and env.hi.max() == audio.max()
    per = int(np.ceil(len(audio) / 500))
    np.testing.assert_array_equal(env.hi[:3], audio[: 3 * per].reshape(3, per).max(axis=1))


def test_several_files_one_png_each(checkpoints: dict[str, Path], clips: list[Path], tmp_path: Path) -> None:
    target = tmp_path / "tl.png"
    code, events, err = run(["--input", *map(str, clips), "--offline", "--json", "--plot", str(target),
                             "--model", str(checkpoints["resmax"])])
    assert code == 0, err
    for stem in ("a", "b"):
        assert png_size(tmp_path / f"tl-{stem}.png") == (1200, 500)
    folder = tmp_path / "plots"
    folder.mkdir()
    code, _, err = run(["--input", str(clips[1]), "--offline", "--plot", str(folder), "--quiet",
                        "--model", str(checkpoints["resmax"])])
    assert code == 0 and (folder / "b.png").is_file() and err == ""


def test_plot_targets_naming(tmp_path: Path) -> None:
    files = [Path("x/a.wav"), Path("y/a.flac"), Path("b.mp3")]
    assert plot_targets(Path("t.png"), files[:1]) == [Path("t.png")]
    assert plot_targets(Path("out/t.svg"), files) == [Path("out/t-a.svg"), Path("out/t-a-2.svg"), Path("out/t-b.svg")]
    assert plot_targets(tmp_path, files) == [tmp_path / "a.png", tmp_path / "a-2.png", tmp_path / "b.png"]


def test_bad_plot_arguments(clips: list[Path], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--input", str(clips[0]), "--plot", str(tmp_path / "t.txt")], stdout=io.StringIO(), stderr=io.StringIO())
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["--input", "mic", "--plot", str(tmp_path / "t.png")], stdout=io.StringIO(), stderr=io.StringIO())
    assert e.value.code == 2


def test_missing_matplotlib_is_named(monkeypatch: pytest.MonkeyPatch, clips: list[Path], tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now raises ImportError
    with pytest.raises(MissingExtraError, match=r"realtime-detect\[plot\]"):
        require_matplotlib()
    code, events, err = run(["--input", str(clips[0]), "--offline", "--plot", str(tmp_path / "t.png")])
    assert code == 1 and "'matplotlib'" in err and "pip install 'realtime-detect[plot]'" in err
