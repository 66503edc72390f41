import numpy as np
import pytest
import torch

from engines.frontend import RESMAX_FRONTEND, SPECRNET_FRONTEND, FrontEnd, fourier_basis
from engines.frontend_config import FrontEndConfig
from engines.mel import linear_filterbank, mel_filterbank
from tests.conftest import speech


def _signals() -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    return {
        "speech": torch.from_numpy(np.stack([speech(4.0, 0), speech(4.0, 1)])),
        "noise": torch.from_numpy(rng.standard_normal((2, 64000)).astype(np.float32) * 0.1),
    }


@pytest.mark.parametrize("cfg", [SPECRNET_FRONTEND, RESMAX_FRONTEND], ids=["specrnet", "resmax"])
@pytest.mark.parametrize("signal", ["speech", "noise"])
def test_conv_stft_matches_torch_stft(cfg: FrontEndConfig, signal: str) -> None:
    x = _signals()[signal]
    fe = FrontEnd(cfg)
    real, imag = fe.stft(x)
    ref = torch.stft(x, cfg.n_fft, cfg.hop_length, cfg.win_length, torch.hann_window(cfg.win_length),
                     center=True, pad_mode="constant", return_complex=True)
    assert real.shape == ref.shape == (2, cfg.n_bins, cfg.n_frames(64000))
    ours = torch.complex(real, imag)
    # 1e-4 relative to the spectrum's peak; bins far below the peak carry float32 rounding only.
    err = (ours - ref).abs().max() / ref.abs().max()
    assert err < 1e-4, float(err)
    power_err = ((ours.abs() ** 2 - ref.abs() ** 2).abs().max() / (ref.abs() ** 2).max())
    assert power_err < 1e-4


def test_frame_counts_match_issue() -> None:
    assert SPECRNET_FRONTEND.n_frames(64000) == 401 and SPECRNET_FRONTEND.n_features == 80
    assert RESMAX_FRONTEND.n_frames(64000) == 251 and RESMAX_FRONTEND.n_features == 513


def test_graph_built_basis_equals_numpy_basis() -> None:
    from engines.frontend import fourier_basis_graph

    for n_fft, win in ((512, 400), (1024, 1024)):
        ref = torch.from_numpy(fourier_basis(n_fft, win))
        built = fourier_basis_graph(n_fft, win, torch.zeros(1))
        assert (built - ref).abs().max() < 2e-6


@pytest.mark.parametrize("n_fft,n_mels,fmax", [(512, 80, None), (1024, 128, 7600.0), (400, 40, 4000.0)])
def test_mel_filterbank_matches_librosa_slaney(n_fft: int, n_mels: int, fmax: float | None) -> None:
    librosa = pytest.importorskip("librosa")
    ours = mel_filterbank(16000, n_fft, n_mels, 0.0, fmax)
    ref = librosa.filters.mel(sr=16000, n_fft=n_fft, n_mels=n_mels, fmin=0.0, fmax=fmax, htk=False, norm="slaney")
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


def test_logmel_output_is_finite_on_silence_and_changes_with_input() -> None:
    fe = FrontEnd(SPECRNET_FRONTEND)
    silent = fe(torch.zeros(1, 64000))
    assert torch.isfinite(silent).all()
    assert torch.allclose(silent, torch.full_like(silent, float(np.log(1e-6))))
    voiced = fe(torch.from_numpy(speech(4.0)[None]))
    assert voiced.shape == (1, 1, 80, 401) and voiced.std() > 1.0


def test_bad_frontend_config_is_refused() -> None:
    with pytest.raises(ValueError, match="kind"):
        FrontEndConfig(kind="mfcc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="win_length"):
        FrontEndConfig(n_fft=256, win_length=400)
    with pytest.raises(ValueError, match="not known"):
        FrontEndConfig.from_dict({"kind": "logmel", "nfft": 512})


def test_uncentred_stft_matches_torch_stft() -> None:
    cfg = FrontEndConfig(kind="logpower", n_fft=512, win_length=400, hop_length=160, center=False)
    x = _signals()["speech"]
    real, imag = FrontEnd(cfg).stft(x)
    ref = torch.stft(x, 512, 160, 400, torch.hann_window(400), center=False, return_complex=True)
    assert real.shape == ref.shape and cfg.n_frames(64000) == ref.shape[-1]
    assert ((torch.complex(real, imag) - ref).abs().max() / ref.abs().max()) < 1e-4


LINEAR_FRONTEND = FrontEndConfig(kind="loglinear", n_fft=512, win_length=400, hop_length=160, n_mels=80)


def test_linear_filterbank_is_equally_spaced_with_unit_area() -> None:
    fb = linear_filterbank(16000, 512, 80)
    freqs = np.linspace(0, 8000, 257)
    centres = freqs[fb.argmax(axis=1)]
    np.testing.assert_allclose(np.diff(centres), 8000 / 81, atol=8000 / 256)  # within one FFT bin
    np.testing.assert_allclose(fb.sum(axis=1) * (freqs[1] - freqs[0]), 1.0, rtol=0.05)
    with pytest.raises(ValueError, match="band"):
        linear_filterbank(16000, 512, 80, 0.0, 9000.0)


def test_linear_bands_resolve_high_harmonics_that_mel_bands_average_away() -> None:
    """A 200-Hz harmonic complex: above 4 kHz, ~100-Hz linear bands see each harmonic and the
    gap between them (a strong ripple across bands); mel bands there are ~300-500 Hz wide and
    average it away. This is the detail a mel-matched vocoder is free to get wrong."""
    t = np.arange(64000) / 16000
    tone = sum(np.sin(2 * np.pi * 200 * k * t) for k in range(1, 40)).astype(np.float32) / 40

    def ripple(cfg: FrontEndConfig) -> float:
        from engines.features import log_features

        feats = log_features(tone, cfg).mean(axis=1)
        centres = np.linspace(0, 8000, 257)[cfg.filterbank().argmax(axis=1)]
        high = feats[(centres > 4000) & (centres < 7600)]
        return float(np.abs(np.diff(high)).mean())

    assert ripple(LINEAR_FRONTEND) > 3 * ripple(SPECRNET_FRONTEND)


@pytest.mark.parametrize("cfg", [SPECRNET_FRONTEND, LINEAR_FRONTEND, RESMAX_FRONTEND], ids=["specrnet", "linear", "resmax"])
def test_numpy_features_equal_torch_front_end(cfg: FrontEndConfig) -> None:
    from engines.features import log_features

    x = speech(4.0, 1)
    ours = log_features(x, cfg)
    ref = FrontEnd(cfg)(torch.from_numpy(x[None]))[0, 0].numpy()
    assert ours.shape == ref.shape == (cfg.n_features, cfg.n_frames(64000))
    # Log domain: compare where there is energy (silent bins differ only by float rounding near the floor).
    np.testing.assert_allclose(ours, ref, atol=2e-3)
