"""Spoof-synthesis corpus builder: generators, channels, splits, determinism, resume, failures.

Real speech from ../shared/data, cut to 2.5 s so the whole file runs in well under a minute.
Generators whose program or library is absent are skipped with the reason.
"""

from __future__ import annotations

import csv
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training.synth.__main__ import main as synth_main
from training.synth.audio import (
    SAMPLE_RATE,
    active_level_db,
    frame_db,
    load_audio,
    round_trip,
    speech_bounds,
    trim_edges,
)
from training.synth.base import SynthInput, generator_names, make_generator
from training.synth.channel import CHANNELS, apply_channel, unavailable_reason
from training.synth.neural_vocoder import mel_distance
from training.synth.corpus import (
    BuildOptions,
    CorpusError,
    build,
    choose_prompt,
    load_prompts,
    plan,
    read_manifest,
    read_source,
    resolve_generators,
    split_for_speaker,
)

REPO = Path(__file__).resolve().parents[1]
from tests.conftest import DATA
MANIFEST = DATA / "bonafide" / "manifest.csv"
PROMPTS = DATA / "text" / "ljspeech_sentences.tsv"
CLIP_S = 2.5
PROMPT = "The prisoners were taken to the yard at noon."
FAST = ("world", "griffinlim")  # generators used for corpus-level tests (no external program)

pytestmark = pytest.mark.skipif(not MANIFEST.is_file(), reason=f"shared speech data not found at {DATA}")


def _manifest_rows() -> list[dict[str, str]]:
    with MANIFEST.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A manifest of five 2.5 s clips: two eval speakers, two train speakers, LJ Speech, one broken file."""
    folder = tmp_path_factory.mktemp("sources")
    picked: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in _manifest_rows():
        split = split_for_speaker(row["speaker"])
        if row["speaker"].startswith("librispeech") and len(picked[split]) < 2:
            if row["speaker"] not in {r["speaker"] for r in picked[split]}:
                picked[split].append(row)
        if row["speaker"].startswith("ljspeech") and not picked["lj"]:
            picked["lj"].append(row)
    rows = picked["eval"] + picked["train"] + picked["lj"]
    assert len(rows) == 5, "the shared manifest should have train and eval LibriSpeech speakers"
    with (folder / "manifest.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "speaker", "source"])
        for row in rows:
            x, sr = sf.read(DATA / row["path"], dtype="float32")
            name = Path(row["path"]).name
            sf.write(folder / name, x[int(0.5 * sr) : int((0.5 + CLIP_S) * sr)], sr)
            writer.writerow([name, row["speaker"], row["source"]])
    return folder / "manifest.csv"


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(DATA / _manifest_rows()[0]["path"], max_seconds=CLIP_S)


def _options(sources: Path, out: Path, **kw: object) -> BuildOptions:
    defaults: dict[str, object] = dict(generators=FAST, heldout=("griffinlim",), progress=False, shares={"*": 1.0},
                                       prompts=PROMPTS)
    defaults.update(kw)
    return BuildOptions(source=sources, out=out, **defaults)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def corpus(sources: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("corpus")
    return out, build(_options(sources, out))


def _high_band_ratio_db(x: np.ndarray, cutoff: float = 4000.0) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / SAMPLE_RATE)
    return float(10 * np.log10(spec[freqs > cutoff].sum() / spec.sum() + 1e-30))


def _longest_zero_run(q: np.ndarray) -> int:
    steps = np.diff(np.concatenate([[0], (q == 0).astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(steps == 1), np.flatnonzero(steps == -1)
    return int((ends - starts).max()) if starts.size else 0


# ---------------------------------------------------------------- generators


@pytest.mark.parametrize("name", generator_names())
def test_generator_makes_plausible_16k_audio(name: str, speech: np.ndarray) -> None:
    gen = make_generator(name)
    reason = gen.unavailable_reason()
    if reason:
        pytest.skip(reason)
    item = SynthInput(rng=np.random.default_rng(3), audio=speech, text=PROMPT)
    y = gen(item)
    assert y.dtype == np.float32 and y.ndim == 1
    assert np.all(np.isfinite(y)) and np.max(np.abs(y)) > 1e-3
    seconds = y.size / SAMPLE_RATE
    if gen.needs == "audio":
        assert abs(y.size - speech.size) <= 0.05 * SAMPLE_RATE  # copy-synthesis keeps the timing
        a, b = speech / np.std(speech), y / np.std(y)
        assert np.corrcoef(a, b)[0, 1] < 0.99  # resynthesized, not passed through
        assert np.mean((a - b) ** 2) > 0.01
    else:
        assert 1.0 < seconds < 8.0, f"{name}: {seconds:.2f} s for a 9-word prompt"
    again = gen(SynthInput(rng=np.random.default_rng(3), audio=speech, text=PROMPT))
    assert np.array_equal(y, again), f"{name} is not reproducible for a fixed seed"


@pytest.mark.parametrize("clip", ["fsdd/0_lucas_0.flac", "fsdd/6_jackson_0.flac"])
def test_mlsa_stays_stable_on_upsampled_8k_recordings(clip: str) -> None:
    """FSDD digits are 8 kHz recordings: their 4-8 kHz band is empty. Under an absolute spectral
    floor the cepstrum stretched to that -100 dB band and the MLSA filter diverged (these two
    clips gave 3e38 peaks). The relative floor keeps the output finite and speech-like in level."""
    gen = make_generator("mlsa")
    if gen.unavailable_reason():
        pytest.skip(gen.unavailable_reason())
    x = load_audio(DATA / "bonafide" / clip)
    y = gen(SynthInput(rng=np.random.default_rng(0), audio=x))
    assert np.all(np.isfinite(y))
    crest = float(np.max(np.abs(y)) / np.sqrt(np.mean(y.astype(np.float64) ** 2)))
    assert 3.0 < crest < 40.0, f"peak/RMS {crest:.1f}: not speech-like"


def test_unknown_generator_names_the_choices() -> None:
    with pytest.raises(ValueError, match="choose from .*world"):
        make_generator("wavenet")


# ---------------------------------------------------------------- channels


@pytest.mark.parametrize("name", CHANNELS)
def test_channel_keeps_length_and_changes_signal(name: str, speech: np.ndarray) -> None:
    if unavailable_reason(name):
        pytest.skip(unavailable_reason(name))
    x = speech * 0.3
    y = apply_channel(name, x, np.random.default_rng(0))
    assert y.shape == x.shape and y.dtype == np.float32 and np.all(np.isfinite(y))
    assert not np.allclose(x, y, atol=1e-4)
    # Still the same speech, time-aligned: the frame energy envelopes agree (a band-pass
    # shifts phase, so sample-wise correlation would not tell).
    assert np.corrcoef(frame_db(x), frame_db(y))[0, 1] > 0.8


def test_tel8k_band_limits(speech: np.ndarray) -> None:
    y = apply_channel("tel8k", speech, np.random.default_rng(0))
    assert _high_band_ratio_db(speech) > -40
    assert _high_band_ratio_db(y) < -60  # nothing left above the 4 kHz Nyquist of the 8 kHz channel
    low_in = _high_band_ratio_db(speech, 0) - _high_band_ratio_db(speech, 200)
    low_out = _high_band_ratio_db(y, 0) - _high_band_ratio_db(y, 200)
    assert low_out < low_in + 1e-6  # and less below 200 Hz


def test_mulaw_is_8_bit(speech: np.ndarray) -> None:
    y = apply_channel("mulaw", speech * 0.3, np.random.default_rng(0))
    assert len(np.unique(y)) <= 256


def test_unknown_channel() -> None:
    with pytest.raises(ValueError, match="choose from tel8k"):
        apply_channel("gsm", np.zeros(16000, np.float32), np.random.default_rng(0))


# ---------------------------------------------------------------- audio processing


def test_trim_edges_gives_requested_margins_both_ways(speech: np.ndarray) -> None:
    start, end = speech_bounds(speech)
    padded = np.concatenate([np.zeros(8000, np.float32), speech, np.zeros(8000, np.float32)])
    bare = speech[start:end]  # speech from the first sample, like a TTS engine's output
    for x in (padded, bare):
        y = trim_edges(x, 0.2, 0.1)
        s, e = speech_bounds(y)
        assert abs(s - 0.2 * SAMPLE_RATE) <= 320 and abs((y.size - e) - 0.1 * SAMPLE_RATE) <= 320


# ---------------------------------------------------------------- planning and splits


def test_split_is_a_stable_speaker_hash() -> None:
    speakers = [f"spk{i}" for i in range(2000)]
    splits = [split_for_speaker(s) for s in speakers]
    assert splits == [split_for_speaker(s) for s in speakers]
    share = {k: splits.count(k) / len(splits) for k in ("train", "dev", "eval")}
    assert abs(share["train"] - 0.7) < 0.05 and abs(share["dev"] - 0.1) < 0.03 and abs(share["eval"] - 0.2) < 0.04


def test_full_plan_is_speaker_disjoint_with_heldout_only_in_eval(tmp_path: Path) -> None:
    opts = BuildOptions(source=MANIFEST, out=tmp_path, progress=False, prompts=PROMPTS, heldout=("festival", "mlsa"))
    gens = resolve_generators(opts)
    tasks = plan(opts, read_source(MANIFEST), gens, load_prompts(PROMPTS))
    splits_of: dict[str, set[str]] = defaultdict(set)
    attacks_in: dict[str, set[str]] = defaultdict(set)
    for task in tasks:
        for out in task.outputs:
            splits_of[out.row.speaker].add(out.row.split)
            attacks_in[out.row.split].add(out.row.attack)
            assert out.row.path.startswith(out.row.split + "/")
    assert all(len(s) == 1 for s in splits_of.values())
    assert {"festival", "mlsa"} <= attacks_in["eval"]
    assert not {"festival", "mlsa"} & (attacks_in["train"] | attacks_in["dev"])
    assert {"world", "piper", "-"} <= attacks_in["train"]
    sources = {o.row.source for t in tasks for o in t.outputs}
    assert {"librispeech", "ljspeech", "piper+mp3", "librispeech+tel8k"} <= sources
    # TTS prompts are matched to the utterance's length.
    tts = [t for t in tasks if t.prompt is not None]
    assert tts and all(len(t.prompt or "") >= 20 for t in tts)


def test_default_plan_has_every_family_in_every_split_on_a_share_of_utterances(tmp_path: Path) -> None:
    opts = BuildOptions(source=MANIFEST, out=tmp_path, progress=False, prompts=PROMPTS)
    gens = resolve_generators(opts)
    utterances = read_source(MANIFEST)
    tasks = plan(opts, utterances, gens, load_prompts(PROMPTS))
    by_gen: dict[str, set[str]] = defaultdict(set)
    splits: dict[str, set[str]] = defaultdict(set)
    for t in tasks:
        by_gen[t.generator].add(t.utterance.key)
        splits[t.generator].add(t.split)
    assert by_gen["bonafide"] == {u.key for u in utterances}  # every utterance has its bona fide copy
    for g in gens:
        assert splits[g] == {"train", "dev", "eval"}, g
        assert 0.4 < len(by_gen[g]) / len(utterances) < 0.6, g  # the default share, 0.5
    assert by_gen["hifigan-universal"] != by_gen["hifigan-lj"]  # a different draw per generator
    every = plan(BuildOptions(source=MANIFEST, out=tmp_path, progress=False, prompts=PROMPTS, shares={"*": 1.0}),
                 utterances, ["world"], None)
    assert len(every) == 2 * len(utterances)


def test_round_trip_gives_the_22k_band_edge_and_keeps_the_band() -> None:
    noise = np.random.default_rng(0).standard_normal(SAMPLE_RATE * 2).astype(np.float32) * 0.1
    y = round_trip(noise, 22050)
    assert y.size == noise.size

    def band_db(x: np.ndarray, lo: float, hi: float) -> float:
        spec = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
        f = np.fft.rfftfreq(x.size, 1 / SAMPLE_RATE)
        return float(10 * np.log10(spec[(f >= lo) & (f < hi)].mean()))

    assert abs(band_db(y, 300, 6000) - band_db(noise, 300, 6000)) < 0.2  # the speech band is untouched
    assert band_db(y, 7950, 8000) < band_db(noise, 7950, 8000) - 6  # the resampler's edge is there


@pytest.mark.parametrize("name", ["hifigan-universal", "hifigan-lj", "hifigan-16k"])
def test_neural_vocoder_copy_synthesis_is_close_and_level_matched(name: str, speech: np.ndarray) -> None:
    gen = make_generator(name)
    reason = gen.unavailable_reason()
    if reason:
        pytest.skip(reason)
    y = gen(SynthInput(rng=np.random.default_rng(0), audio=speech))
    assert y.size == speech.size
    assert abs(active_level_db(y) - active_level_db(speech)) < 0.5
    # The vocoder reproduces the speech (a wrong mel recipe gives > 0.6 nats, see the fit tool);
    # the same speech with its spectrum tilted is farther away than the copy.
    close = mel_distance(speech, y)
    assert close < 0.5, f"{name}: reference log-mel distance {close:.3f}"
    assert mel_distance(speech, np.diff(speech, prepend=0.0).astype(np.float32) * 4) > close


def test_prompt_length_follows_duration() -> None:
    prompts = load_prompts(PROMPTS)
    rng = np.random.default_rng(0)
    short = [len(choose_prompt(prompts, 3.0, rng)) for _ in range(20)]
    long = [len(choose_prompt(prompts, 10.0, rng)) for _ in range(20)]
    assert max(short) < min(long)


# ---------------------------------------------------------------- building


def test_corpus_layout_labels_and_levels(corpus: tuple[Path, object]) -> None:
    out, summary = corpus
    rows = read_manifest(out / "manifest.csv")
    with (out / "manifest.csv").open() as fh:
        assert fh.readline().strip() == "path,label,speaker,attack,source,split"
    assert summary.failed_items == 0 and summary.written == len(rows) == summary.planned  # type: ignore[attr-defined]
    labels = {r.label for r in rows}
    assert labels == {"bonafide", "spoof"}
    for r in rows:
        assert (r.attack == "-") == (r.label == "bonafide")
        info = sf.info(str(out / r.path))
        assert (info.samplerate, info.channels, info.format) == (SAMPLE_RATE, 1, "FLAC")
        x, _ = sf.read(out / r.path, dtype="float32")
        assert -32.6 < active_level_db(x) < -23.4  # -28 +- 4 dB, for both classes
        lead = speech_bounds(x)[0] / SAMPLE_RATE
        assert lead < 0.32
        if "+" not in r.source:  # no stretch of digital silence, in either class (noise floor)
            q = np.round(x * 32767).astype(np.int64)
            assert _longest_zero_run(q) < 160, r.path
    # Both classes carry coded copies, recorded in the source column.
    coded = {(r.label, "+" in r.source) for r in rows}
    assert coded == {("bonafide", True), ("bonafide", False), ("spoof", True), ("spoof", False)}


def test_corpus_split_is_speaker_disjoint_and_heldout_only_in_eval(corpus: tuple[Path, object]) -> None:
    out, _ = corpus
    rows = read_manifest(out / "manifest.csv")
    splits_of: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        splits_of[r.speaker].add(r.split)
    assert all(len(s) == 1 for s in splits_of.values())
    assert {r.split for r in rows if r.attack == "griffinlim"} == {"eval"}
    assert {r.split for r in rows if r.attack == "world"} >= {"train", "eval"}


def test_build_is_deterministic(sources: Path, corpus: tuple[Path, object], tmp_path: Path) -> None:
    first, _ = corpus
    build(_options(sources, tmp_path))
    assert (first / "manifest.csv").read_bytes() == (tmp_path / "manifest.csv").read_bytes()
    for r in read_manifest(first / "manifest.csv"):
        assert (first / r.path).read_bytes() == (tmp_path / r.path).read_bytes(), r.path


def test_resume_skips_valid_files_and_remakes_broken_ones(sources: Path, corpus: tuple[Path, object],
                                                          tmp_path: Path) -> None:
    first, _ = corpus
    out = tmp_path / "c"
    shutil.copytree(first, out)
    again = build(_options(sources, out))
    assert again.written == 0 and again.skipped_existing == again.planned
    rows = read_manifest(out / "manifest.csv")
    victims = [out / rows[0].path, out / rows[-1].path]
    victims[0].unlink()
    victims[1].write_bytes(b"fLaC truncated")
    resumed = build(_options(sources, out))
    assert resumed.written == 2 and resumed.skipped_existing == resumed.planned - 2
    for v in victims:
        assert v.read_bytes() == (first / v.relative_to(out)).read_bytes()
    assert (out / "manifest.csv").read_bytes() == (first / "manifest.csv").read_bytes()
    assert not (out / "manifest.partial.csv").exists()


def test_resume_with_other_settings_is_refused(sources: Path, corpus: tuple[Path, object], tmp_path: Path) -> None:
    out = tmp_path / "c"
    shutil.copytree(corpus[0], out)
    with pytest.raises(CorpusError, match="seed"):
        build(_options(sources, out, seed=1))


def test_broken_input_is_skipped_with_reason(sources: Path, tmp_path: Path) -> None:
    folder = tmp_path / "src"
    shutil.copytree(sources.parent, folder)
    (folder / "broken.flac").write_bytes(b"this is not audio")
    with (folder / "manifest.csv").open("a", newline="") as fh:
        csv.writer(fh).writerow(["broken.flac", "librispeech-9999", "LibriSpeech"])
    summary = build(_options(folder / "manifest.csv", tmp_path / "out", generators=("world",), channel_copies=0,
                             heldout=()))
    assert summary.failed_items == 2  # the bona fide copy and the world spoof of that file
    assert all("broken.flac" in reason for _, reason in summary.failures)
    assert all("BadAudioError" in reason for _, reason in summary.failures)
    failures = (tmp_path / "out" / "failures.csv").read_text()
    assert "librispeech-broken__world" in failures
    rows = read_manifest(tmp_path / "out" / "manifest.csv")
    assert len(rows) == 2 * 5 and not any("broken" in r.path for r in rows)


@pytest.mark.slow
def test_workers_give_the_same_corpus(sources: Path, corpus: tuple[Path, object], tmp_path: Path) -> None:
    first, _ = corpus
    build(_options(sources, tmp_path, workers=2))
    assert (first / "manifest.csv").read_bytes() == (tmp_path / "manifest.csv").read_bytes()
    for r in read_manifest(first / "manifest.csv"):
        assert (first / r.path).read_bytes() == (tmp_path / r.path).read_bytes(), r.path


# ---------------------------------------------------------------- CLI and demo


def test_cli_list_and_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert synth_main(["--list"]) == 0
    assert "world" in capsys.readouterr().out
    assert synth_main(["--source", str(MANIFEST), "--out", str(tmp_path), "--generators", "wavenet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown generator 'wavenet'") and "\n" not in err
    with pytest.raises(SystemExit):
        synth_main(["--help"])
    assert "speaker-disjoint" in capsys.readouterr().out


def test_cli_builds(sources: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = synth_main(["--source", str(sources), "--out", str(tmp_path), "--generators", "world",
                       "--heldout", "none", "--share", "*=1", "--channel-copies", "0", "--limit", "2",
                       "--no-progress"])
    assert code == 0
    assert "4 written" in capsys.readouterr().out
    assert len(read_manifest(tmp_path / "manifest.csv")) == 4


def test_bundled_demo_clip() -> None:
    clip = REPO / "realtime" / "assets" / "demo.flac"
    info = sf.info(str(clip))
    assert (info.samplerate, info.channels, info.format) == (SAMPLE_RATE, 1, "FLAC")
    assert 10.0 <= info.duration <= 14.0
    assert clip.stat().st_size < 500 * 1024


@pytest.mark.slow
def test_demo_is_reproducible(tmp_path: Path) -> None:
    from training.synth.demo import DemoOptions, make_demo

    reason = make_generator("piper").unavailable_reason()
    if reason:
        pytest.skip(reason)
    a, b = tmp_path / "a.flac", tmp_path / "b.flac"
    make_demo(DemoOptions(out=a, prompts=PROMPTS))
    make_demo(DemoOptions(out=b, prompts=PROMPTS))
    assert a.read_bytes() == b.read_bytes()
    committed = sf.info(str(REPO / "realtime" / "assets" / "demo.flac")).duration
    assert abs(sf.info(str(a)).duration - committed) < 1.0
