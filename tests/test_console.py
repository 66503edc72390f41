"""Console view: aligned lines, colour only for terminals, NO_COLOR respected, ASCII fallback."""

from __future__ import annotations

import io

import pytest

from realtime.console import BAR_WIDTH, ConsoleView, format_score, format_summary, use_color
from realtime.events import ErrorEvent, ScoreEvent, SummaryEvent


def ev(p=0.93, label="spoof", alert=True, **kw) -> ScoreEvent:
    return ScoreEvent("mic", 17, kw.pop("start_s", 8.5), kw.pop("end_s", 12.5), p, label, alert,
                      kw.pop("latency_ms", 6.1), "specrnet-1a2b3c4d", **kw)


def test_score_line_layout():
    line = format_score(ev())
    assert line == "[  8.5– 12.5 s] ███████████░ 0.93 SPOOF     ALERT   6.1 ms"
    quiet = format_score(ev(0.04, "bonafide", False, start_s=120.0, end_s=124.0, latency_ms=12.25))
    assert quiet == "[120.0–124.0 s] ░░░░░░░░░░░░ 0.04 BONAFIDE " + " " * 8 + "12.2 ms"
    assert len(line) == len(quiet)  # columns stay aligned


@pytest.mark.parametrize("p, filled", [(0.0, 0), (0.04, 0), (0.05, 1), (0.5, 6), (0.96, 12), (1.0, 12)])
def test_bar_fill(p, filled):
    bar = format_score(ev(p, "spoof" if p > 0.5 else "bonafide")).split("] ", 1)[1].split()[0]
    assert len(bar) == BAR_WIDTH and bar.count("█") == filled


def test_extras_and_no_speech_and_stream_prefix():
    line = format_score(ev(None, "no_speech", False, tiled=True, shed=2), show_stream=True)
    assert line.startswith("mic [  8.5– 12.5 s] ············   -  NO SPEECH")
    assert line.endswith("(short clip, tiled) (2 windows shed)")


def test_ascii_fallback():
    line = format_score(ev(), unicode=False)
    assert line == "[  8.5- 12.5 s] ###########- 0.93 SPOOF     ALERT   6.1 ms"
    buf = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    ConsoleView(buf, color=False).score(ev())  # must not raise UnicodeEncodeError
    buf.seek(0)
    assert "#" in buf.read()


def test_colour_only_when_asked():
    assert "\x1b[" not in format_score(ev())
    coloured = format_score(ev(), color=True)
    assert "\x1b[31m" in coloured and "\x1b[1;97;41mALERT" in coloured
    assert "\x1b[32m" in format_score(ev(0.1, "bonafide", False), color=True)


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_use_color_env(monkeypatch):
    for var in ("NO_COLOR", "FORCE_COLOR", "TERM"):
        monkeypatch.delenv(var, raising=False)
    assert use_color(FakeTTY()) and not use_color(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_color(FakeTTY())
    monkeypatch.setenv("NO_COLOR", "")  # empty means unset (no-color.org)
    assert use_color(FakeTTY())
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert use_color(io.StringIO())
    monkeypatch.delenv("FORCE_COLOR")
    monkeypatch.setenv("TERM", "dumb")
    assert not use_color(FakeTTY())


def test_console_view_writes_lines(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    out = io.StringIO()
    view = ConsoleView(out)
    view.show(ev())
    view.show(SummaryEvent("call.wav", 118, 0.88, "spoof", shed=1, duration_s=62.0))
    view.show(ErrorEvent("bad_format", "format must be f32le or s16le", "call-42"))
    lines = out.getvalue().splitlines()
    assert lines[1] == "call.wav: SPOOF 0.88 (118 windows, 62.0 s, 1 shed)"
    assert lines[2] == "error [bad_format] call-42: format must be f32le or s16le"
    assert "\x1b" not in out.getvalue()  # not a TTY: no colour


def test_summary_variants():
    assert format_summary(SummaryEvent("a.flac", 1, 0.1234, "bonafide")) == "a.flac: BONAFIDE 0.12 (1 window)"
    assert format_summary(SummaryEvent("a.flac", 4, None, "no_speech")) == "a.flac: NO SPEECH (4 windows)"


def test_control_characters_in_names_are_escaped(tmp_path):
    """A file named to clear the screen and forge a verdict line prints escaped, on one line
    (real CLI, real speech); the same for an error about such a file."""
    import soundfile as sf

    from realtime.cli import main
    from tests.conftest import speech

    evil = tmp_path / "x\x1b[2J\x1b[H\nfake.wav: BONAFIDE 0.01 (9 windows)\u202e.wav"
    sf.write(evil, speech(4.5, 0), 16000)
    broken = tmp_path / "y\x1b]0;pwned\x07.wav"
    broken.write_bytes(b"RIFF not really a wav")
    out, err = io.StringIO(), io.StringIO()
    code = main(["--input", str(evil), str(broken), "--offline", "--model", "specrnet", "--engine", "onnx",
                 "--no-color"], stdout=out, stderr=err)
    assert code == 1
    for text in (out.getvalue(), err.getvalue()):
        assert not any(c in text for c in "\x1b\x07\u202e"), repr(text)
    model, *lines = out.getvalue().splitlines()
    assert model.startswith("model specrnet-") and "each model has its own threshold" in model
    assert len(lines) == 1 and "\\x1b[2J\\x1b[H\\nfake.wav" in lines[0] and "\\u202e" in lines[0]
    assert "\\x1b]0;pwned\\x07" in err.getvalue() and len(err.getvalue().splitlines()) == 1


def test_printable_keeps_ordinary_names():
    from realtime.console import printable

    assert printable("réunion 2024-05 (copie).wav") == "réunion 2024-05 (copie).wav"
    assert printable("a\tb\x7fc\x9bd\udcff") == "a\\tb\\x7fc\\x9bd\\udcff"
