"""The project's own vocoders (training/synth/own_vocoders): training, resume, copy-synthesis.

Tiny configurations of each architecture train for a few steps on real speech from
../shared/data; these test the mechanics (losses, checkpoints, determinism, the builder's
generator), never the quality; the committed weights (85 minutes of CPU training each) are
checked on speakers they never heard.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from safetensors.torch import load_file  # noqa: E402

from tests.conftest import DATA, speech  # noqa: E402
from training.synth import train_vocoder  # noqa: E402
from training.synth.audio import SAMPLE_RATE, active_level_db  # noqa: E402
from training.synth.base import SynthInput, default_generator_names, generator_names, make_generator  # noqa: E402
from training.synth.corpus import BuildOptions, read_source, resolve_generators, split_for_speaker  # noqa: E402
from training.synth.own_vocoders.checkpoint import STATE_TENSORS  # noqa: E402
from training.synth.own_vocoders.config import (  # noqa: E402
    OWN_MEL,
    MelGANOptions,
    VocoderConfig,
    VocoderConfigError,
    VocosOptions,
)
from training.synth.own_vocoders.data import split_utterances  # noqa: E402
from training.synth.own_vocoders.generators import MelganOurs, VocosOurs  # noqa: E402
from training.synth.own_vocoders.torch_mel import TorchMel, hann  # noqa: E402
from training.synth.own_vocoders.trainer import TrainError, TrainOptions, train  # noqa: E402
from training.synth.own_vocoders.vocos import OverlapAdd  # noqa: E402

BONAFIDE = DATA / "bonafide"
pytestmark = pytest.mark.skipif(not (BONAFIDE / "manifest.csv").is_file(), reason=f"shared speech data not found at {DATA}")

# Small enough that a step takes a fraction of a second on a busy CPU.
TINY = {
    "vocos": VocoderConfig(arch="vocos", model=VocosOptions(dim=16, intermediate=32, layers=2, n_fft=320)),
    "melgan": VocoderConfig(arch="melgan", model=MelGANOptions(channels=32, ratios=(5, 4, 4, 2), dilations=(1, 3))),
}
GENERATORS = {"vocos": VocosOurs, "melgan": MelganOurs}


def _options(arch: str, out: Path, **kw: object) -> TrainOptions:
    base = dict(arch=arch, data=BONAFIDE, out=out, minutes=None, steps=4, seed=3, threads=1, batch_size=2,
                segment_seconds=0.25, gan_from_step=1, checkpoint_every=100, validate_every=100, log_every=1,
                val_utterances=1, val_seconds=1.0, max_files=2, progress=False, config=TINY.get(arch))
    base.update(kw)
    return TrainOptions(**base)  # type: ignore[arg-type]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module", params=["vocos", "melgan"])
def uninterrupted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    arch = request.param
    out = tmp_path_factory.mktemp(arch) / "run"
    result = train(_options(arch, out))
    assert result.step == 4
    assert [s for s, _ in result.validation] == [4]
    return arch, out


def test_torch_mel_equals_mel_analysis() -> None:
    x = speech(2.0)
    ours = TorchMel(OWN_MEL)(torch.from_numpy(x)[None])[0].numpy()
    ref = OWN_MEL(x)
    assert ours.shape == ref.shape == (80, x.size // OWN_MEL.hop_length)
    assert float(np.max(np.abs(ours - ref))) < 5e-3  # float32 against numpy's float64


def test_vocos_overlap_add_inverts_the_mel_framing() -> None:
    # An STFT framed exactly as MelAnalysis frames (reflect pad, frame t centred on t*hop + hop/2)
    # comes back as the same speech: the iSTFT head needs no phase ramp to line up with the mel.
    n_fft, hop = 640, OWN_MEL.hop_length
    x = speech(1.0)
    pad = (n_fft - hop) // 2
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(x, (pad, pad), mode="reflect"), n_fft)[::hop]
    spec = np.fft.rfft(frames * hann(n_fft).numpy(), axis=1).T
    y = OverlapAdd(n_fft, hop)(torch.from_numpy(spec)[None].to(torch.complex64))[0].numpy()
    assert y.size == frames.shape[0] * hop
    assert float(np.max(np.abs(y - x[: y.size]))) < 1e-4


def test_training_uses_train_speakers_only_and_validates_on_dev() -> None:
    speakers = {u.speaker for u in read_source(BONAFIDE)}
    assert {split_for_speaker(s) for s in speakers} == {"train", "dev", "eval"}
    for split in ("train", "dev"):
        assert {split_for_speaker(u.speaker) for u in split_utterances(BONAFIDE, split)} == {split}


def test_tiny_run_writes_weights_config_and_logs(uninterrupted: tuple[str, Path]) -> None:
    arch, out = uninterrupted
    assert VocoderConfig.load(out / "config.json") == TINY[arch]
    log = _rows(out / "log.csv")
    assert [int(r["step"]) for r in log] == [1, 2, 3, 4]
    assert all(np.isfinite(float(r["loss_mel"])) and np.isfinite(float(r["loss_stft"])) for r in log)
    # gan_from_step=1: step 0 is regression only, later steps train the discriminator.
    assert np.isnan(float(log[0]["loss_disc"])) and all(np.isfinite(float(r["loss_disc"])) for r in log[1:])
    (val,) = _rows(out / "validation.csv")
    assert int(val["step"]) == 4 and 0.0 < float(val["mel_distance"]) < 20.0


def test_resume_continues_at_the_saved_step_and_equals_an_uninterrupted_run(
        uninterrupted: tuple[str, Path], tmp_path: Path) -> None:
    arch, whole = uninterrupted
    out = tmp_path / "run"
    assert train(_options(arch, out, steps=2)).step == 2
    result = train(_options(arch, out, steps=4, resume=True))
    assert result.step == 4
    for name in ("generator.safetensors", STATE_TENSORS):
        a, b = load_file(str(whole / name)), load_file(str(out / name))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    drop_time = [{k: v for k, v in r.items() if k != "elapsed_s"} for r in _rows(whole / "log.csv")]
    assert [{k: v for k, v in r.items() if k != "elapsed_s"} for r in _rows(out / "log.csv")] == drop_time


def test_generator_from_checkpoint_copy_synthesizes_speech(uninterrupted: tuple[str, Path]) -> None:
    arch, out = uninterrupted
    gen = GENERATORS[arch](weights=out)
    assert gen.unavailable_reason() is None
    x = speech(2.3, index=1)  # not a whole number of hops: the tail is padded back
    y = gen(SynthInput(rng=np.random.default_rng(0), audio=x))
    assert y.dtype == np.float32 and y.size == x.size and np.all(np.isfinite(y))
    assert abs(active_level_db(y) - active_level_db(x)) < 0.5
    assert float(np.std(y)) > 0.0


def test_registered_generators_say_how_to_train_missing_weights(tmp_path: Path) -> None:
    names = generator_names()
    for name, cls in (("vocos-ours", VocosOurs), ("melgan-ours", MelganOurs)):
        assert name in names
        gen = make_generator(name)
        assert (gen.family, gen.needs, gen.native_rate) == ("neural-vocoder", "audio", SAMPLE_RATE)
        reason = cls(weights=tmp_path / "absent").unavailable_reason()
        assert reason is not None and "\n" not in reason
        assert f"python -m training.synth.train_vocoder --arch {cls.arch} --data ../shared/data/bonafide" in reason
        assert f"--out training/synth/weights/{name}" in reason


def test_own_vocoders_are_opt_in_for_the_builder(tmp_path: Path) -> None:
    # The default build reproduces the corpus the shipped detectors were trained and measured on.
    ours = {"vocos-ours", "melgan-ours"}
    assert not ours & set(default_generator_names())
    assert set(generator_names()) - set(default_generator_names()) == ours
    assert not ours & set(resolve_generators(BuildOptions(source=BONAFIDE, out=tmp_path, progress=False)))
    named = BuildOptions(source=BONAFIDE, out=tmp_path, progress=False, generators=("world", "vocos-ours"))
    assert resolve_generators(named) == ["world", "vocos-ours"]


def test_generator_refuses_weights_of_another_architecture(uninterrupted: tuple[str, Path]) -> None:
    arch, out = uninterrupted
    other = MelganOurs if arch == "vocos" else VocosOurs
    with pytest.raises(VocoderConfigError, match="holds a"):
        other(weights=out)(SynthInput(rng=np.random.default_rng(0), audio=speech(1.0)))


@pytest.mark.parametrize(("change", "message"), [
    ({"minutes": 0.0}, "--minutes must be > 0"),
    ({"minutes": None, "steps": None}, "give --minutes or --steps"),
    ({"threads": 0}, "--threads must be >= 1"),
    ({"batch_size": 0}, "--batch-size must be >= 1"),
    ({"segment_seconds": 0.1}, "--segment-seconds must be in"),
    ({"lr": 0.0}, "--lr must be in"),
    ({"gan_from_step": -1}, "--gan-from-step must be >= 0"),
    ({"arch": "wavenet"}, "--arch 'wavenet' is unknown"),
    ({"arch": "melgan"}, "the given config is a vocos vocoder"),
    ({"data": Path("/nonexistent/speech")}, "does not exist"),
    ({"resume": True}, "has no checkpoint to resume"),
])
def test_bad_options_are_one_line_errors(change: dict[str, object], message: str, tmp_path: Path) -> None:
    kw = {"config": TINY["vocos"], **change}
    arch = str(kw.pop("arch", "vocos"))
    with pytest.raises(TrainError, match=message) as err:
        _options(arch, tmp_path / "new", **kw)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("config", "message"), [
    (lambda: VocoderConfig(arch="melgan", model=MelGANOptions(ratios=(5, 4, 4))), "must multiply to the hop 160"),
    (lambda: VocoderConfig(arch="vocos", model=VocosOptions(n_fft=200)), "at least twice the hop"),
    (lambda: VocoderConfig(arch="vocos", model=MelGANOptions()), "vocos needs VocosOptions"),
    (lambda: VocoderConfig(arch="vocos", mel=replace(OWN_MEL, sample_rate=22050)), "run at 16000 Hz"),
])
def test_bad_configs_are_one_line_errors(config: object, message: str) -> None:
    with pytest.raises(VocoderConfigError, match=message):
        config()  # type: ignore[operator]


def test_cli_trains_resumes_and_refuses_a_used_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "vocos-ours"

    def cli(arch: str, steps: int, *extra: str) -> int:
        return train_vocoder.main(["--arch", arch, "--data", str(BONAFIDE), "--out", str(out), "--steps", str(steps),
                                   "--batch-size", "1", "--segment-seconds", "0.25", "--max-files", "1",
                                   "--val-utterances", "1", "--no-progress", *extra])

    assert cli("vocos", 1) == 0
    assert "vocos: step 1" in capsys.readouterr().out
    assert cli("vocos", 1) == 2  # a used folder without --resume
    err = capsys.readouterr().err
    assert err.startswith("error: --out") and "--resume" in err and err.count("\n") == 1
    assert cli("vocos", 2, "--resume") == 0
    assert "vocos: step 2" in capsys.readouterr().out
    assert cli("melgan", 3, "--resume") == 2
    assert "holds a vocos run" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible: tests/test_gpu.py trains on it")
def test_cuda_without_a_gpu_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(TrainError, match="--device cuda: torch .* sees no CUDA GPU; accepted here: cpu"):
        _options("vocos", tmp_path / "run", device="cuda")


@pytest.mark.parametrize("cls", [VocosOurs, MelganOurs], ids=["vocos-ours", "melgan-ours"])
def test_committed_weights_copy_synthesize_unheard_speakers(cls: type[VocosOurs]) -> None:
    # The shipped weights (training/synth/weights/NAME) on dev-split speakers, whom training never
    # used: much closer to the source than the same architecture untrained, and at its level.
    from training.synth.neural_vocoder import mel_distance
    from training.synth.own_vocoders.data import load_split
    from training.synth.own_vocoders.synthesis import build_model, vocode

    gen = cls()
    assert gen.unavailable_reason() is None, "the committed weights are missing"
    model, config = gen.network()
    torch.manual_seed(0)
    untrained = build_model(config).eval()
    clips = [c[: 4 * SAMPLE_RATE] for c in load_split(BONAFIDE, "dev", config.mel.hop_length * 8, 3)]
    trained_d = [mel_distance(x, gen(SynthInput(rng=np.random.default_rng(0), audio=x))) for x in clips]
    untrained_d = [mel_distance(x, vocode(untrained, config, x, cls.name)) for x in clips]
    assert max(trained_d) < 2.0 and float(np.mean(trained_d)) < 0.6 * float(np.mean(untrained_d)), (trained_d, untrained_d)
