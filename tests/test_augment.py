"""Augmentation ops on real speech: each keeps length and finiteness and does what it claims."""
import numpy as np
import pytest

from training import augment as A
from tests.conftest import speech

SR = 16000
N = 64000


def _snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    c = clean.astype(np.float64)
    return 10 * np.log10(np.sum(c * c) / np.sum((noisy - c) ** 2))


def _band_power(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    f = np.fft.rfftfreq(x.size, 1 / SR)
    return float(spec[(f >= lo) & (f < hi)].sum())


def _peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / SR)[np.argmax(spec)])


def _tone(hz: float, seconds: float = 4.0) -> np.ndarray:
    return np.sin(2 * np.pi * hz * np.arange(int(seconds * SR)) / SR).astype(np.float32)


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return speech(4.0, 1)


def _ok(y: np.ndarray, n: int = N) -> None:
    assert y.dtype == np.float32 and y.shape == (n,) and np.isfinite(y).all()


# ----------------------------------------------------------------------------- crop


def test_random_crop_is_an_excerpt_and_tiles_short_clips() -> None:
    long = speech(6.0, 0)
    rng = np.random.default_rng(0)
    y = A.random_crop(long, N, rng)
    _ok(y)
    starts = [i for i in range(long.size - N + 1) if long[i] == y[0] and np.array_equal(long[i : i + N], y)]
    assert starts, "the crop is not a contiguous excerpt of the clip"
    short = speech(1.5, 0)
    t = A.random_crop(short, N, rng)
    _ok(t)
    period = short.size
    np.testing.assert_array_equal(t[period : 2 * period], t[:period])  # tiled
    c = A.center_crop(long, N)
    np.testing.assert_array_equal(c, long[(long.size - N) // 2 :][:N])


# ----------------------------------------------------------------------------- level and noise


@pytest.mark.parametrize("gain", [-30.0, -7.5, 0.0, 6.0])
def test_gain_in_db(x: np.ndarray, gain: float) -> None:
    y = A.apply_gain(x, gain)
    _ok(y)
    assert A.rms_db(y) - A.rms_db(x) == pytest.approx(gain, abs=0.01)


@pytest.mark.parametrize("kind", ["white", "pink", "babble"])
@pytest.mark.parametrize("snr", [0.0, 10.0, 35.0])
def test_noise_added_at_the_requested_snr(x: np.ndarray, kind: str, snr: float) -> None:
    rng = np.random.default_rng(3)
    if kind == "white":
        noise = A.white_noise(N, rng)
    elif kind == "pink":
        noise = A.pink_noise(N, rng)
    else:
        noise = A.babble_noise(N, [speech(3.0, i) for i in (2, 3, 4)], 4, rng)
    y = A.add_noise(x, noise, snr)
    _ok(y)
    assert abs(_snr_db(x, y) - snr) < 1.0


def test_pink_noise_has_equal_power_per_octave_white_does_not() -> None:
    rng = np.random.default_rng(0)
    pink, white = A.pink_noise(N, rng), A.white_noise(N, rng)
    pink_ratio = 10 * np.log10(_band_power(pink, 2000, 4000) / _band_power(pink, 200, 400))
    white_ratio = 10 * np.log10(_band_power(white, 2000, 4000) / _band_power(white, 200, 400))
    assert abs(pink_ratio) < 1.0
    assert abs(white_ratio - 10.0) < 1.0  # ten times the bandwidth


def test_silence_gets_no_noise() -> None:
    z = np.zeros(N, np.float32)
    np.testing.assert_array_equal(A.add_noise(z, A.white_noise(N, np.random.default_rng(0)), 10.0), z)


# ----------------------------------------------------------------------------- time and pitch


def test_time_shift_is_a_circular_roll(x: np.ndarray) -> None:
    y = A.time_shift(x, 4000)
    _ok(y)
    np.testing.assert_array_equal(y[4000:], x[:-4000])
    np.testing.assert_array_equal(y[:4000], x[-4000:])


@pytest.mark.parametrize("rate", [0.8, 1.25])
def test_time_stretch_changes_tempo_not_pitch(rate: float) -> None:
    # 440 Hz for 1 s, then 880 Hz: the switch must move to 1/rate s, both pitches must stay.
    sig = np.concatenate([_tone(440, 1.0), _tone(880, 3.0)])
    y = A.time_stretch(sig, rate)
    assert y.shape == (round(sig.size / rate),) and np.isfinite(y).all()
    switch = int(SR / rate)
    assert abs(_peak_hz(y[: switch - 800]) - 440) <= 1.0
    assert abs(_peak_hz(y[switch + 800 :]) - 880) <= 1.0
    # Energy near 880 Hz appears within 20 ms of the expected switch time.
    frame = 320
    hi_energy = [_band_power(y[i : i + frame], 800, 960) > _band_power(y[i : i + frame], 380, 500)
                 for i in range(0, y.size - frame, frame)]
    first = hi_energy.index(True) * frame
    assert abs(first - switch) <= 320 + frame


def test_time_stretch_on_speech_keeps_level(x: np.ndarray) -> None:
    y = A.time_stretch(x, 0.9)
    assert np.isfinite(y).all() and abs(A.rms_db(y) - A.rms_db(x)) < 1.5


@pytest.mark.parametrize("semitones", [-3.0, 2.0])
def test_pitch_shift_moves_pitch_keeps_length(semitones: float) -> None:
    y = A.pitch_shift(_tone(440), semitones, SR)
    _ok(y)
    assert abs(_peak_hz(y) - 440 * 2 ** (semitones / 12)) <= 1.0


def test_pitch_shift_on_speech(x: np.ndarray) -> None:
    y = A.pitch_shift(x, 2.0, SR)
    _ok(y)
    assert not np.allclose(y, x) and abs(A.rms_db(y) - A.rms_db(x)) < 2.0


# ----------------------------------------------------------------------------- channel


def test_telephone_removes_energy_above_4khz_and_below_300hz(x: np.ndarray) -> None:
    y = A.telephone(x, SR)
    _ok(y)
    def above_4k_db(s: np.ndarray) -> float:
        return 10 * np.log10(_band_power(s, 4100, SR / 2) / _band_power(s, 0, SR / 2))

    assert above_4k_db(x) > -40  # speech had energy there ...
    assert above_4k_db(y) < -55  # ... the 8 kHz channel has none
    assert 10 * np.log10(_band_power(y, 0, 150) / _band_power(x, 0, 150)) < -20  # below the voice band
    # The voice band survives: 500-3000 Hz level within 2 dB (mu-law adds only quantisation noise).
    assert abs(10 * np.log10(_band_power(y, 500, 3000) / _band_power(x, 500, 3000))) < 2.0


def test_mu_law_quantises_to_256_levels(x: np.ndarray) -> None:
    y = A.mu_law(x)
    _ok(y)
    assert np.unique(y).size <= 256
    assert 30.0 < _snr_db(x, y) < 45.0  # 8-bit companding: ~38 dB on speech
    assert A.mu_law(np.array([2.0, -3.0], np.float32)).tolist() == pytest.approx([1.0, -1.0], abs=1e-6)


@pytest.mark.parametrize("kind", A.CODECS)
def test_codec_round_trip(x: np.ndarray, kind: str) -> None:
    if kind not in A.available_codecs():
        pytest.skip(f"libsndfile {A.sf.__libsndfile_version__} here cannot write {kind}")
    y = A.codec(x, kind, SR, 0.5)
    _ok(y)
    assert not np.allclose(y, x, atol=1e-4)
    assert np.corrcoef(x, y)[0, 1] > 0.95  # lossy, aligned, same signal


# ----------------------------------------------------------------------------- RawBoost


def test_rawboost_lnl_colours_the_signal_keeps_peak(x: np.ndarray) -> None:
    y = A.rawboost_lnl(x, np.random.default_rng(1), SR)
    _ok(y)
    assert np.max(np.abs(y)) == pytest.approx(np.max(np.abs(x)), rel=1e-5)
    # A random multi-band channel: the band balance changes by several dB somewhere.
    bands = [(100, 500), (500, 1000), (1000, 2000), (2000, 4000), (4000, 8000)]
    change = [10 * np.log10((_band_power(y, *b) + 1e-12) / _band_power(x, *b)) for b in bands]
    assert max(change) - min(change) > 3.0


def test_rawboost_isd_touches_at_most_ten_percent(x: np.ndarray) -> None:
    y = A.rawboost_isd(x, np.random.default_rng(2))
    _ok(y)
    changed = y != x
    assert 0 < changed.mean() <= 0.10
    assert (x[changed] != 0).all()  # signal-dependent: silent samples stay silent
    assert (np.abs(y[changed] - x[changed]) <= 2.0 * np.abs(x[changed]) + 1e-7).all()


def test_rawboost_ssi_snr_in_range(x: np.ndarray) -> None:
    for seed in range(3):
        y = A.rawboost_ssi(x, np.random.default_rng(seed), SR)
        _ok(y)
        assert 9.0 <= _snr_db(x, y) <= 41.0


# ----------------------------------------------------------------------------- pipeline


def _all_on() -> A.AugmentConfig:
    return A.AugmentConfig(p_stretch=1, p_pitch=1, p_shift=1, p_rawboost=1, rawboost=("lnl", "isd", "ssi"),
                           p_noise=1, p_gain=1, p_telephone=1, p_mulaw=1, p_codec=1)


def test_pipeline_is_deterministic_and_keeps_length() -> None:
    aug = A.Augmenter(_all_on(), babble_pool=[speech(3.0, i) for i in (2, 3)])
    for clip in (speech(6.0, 0), speech(1.2, 4)):  # longer and shorter than the window
        a = aug(clip, np.random.default_rng(7))
        b = aug(clip, np.random.default_rng(7))
        c = aug(clip, np.random.default_rng(8))
        _ok(a)
        np.testing.assert_array_equal(a, b)
        assert not np.allclose(a, c)


def test_off_config_is_a_plain_crop() -> None:
    clip = speech(6.0, 0)
    y = A.Augmenter(A.AugmentConfig.off())(clip, np.random.default_rng(0))
    _ok(y)
    assert any(np.array_equal(clip[i : i + N], y) for i in np.flatnonzero(clip == y[0]))


def test_config_validation_and_json_round_trip() -> None:
    cfg = _all_on()
    assert A.AugmentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="p_noise = 1.5"):
        A.AugmentConfig(p_noise=1.5)
    with pytest.raises(ValueError, match="accepted: \\['white', 'pink', 'babble'\\]"):
        A.AugmentConfig(noise_kinds=("brown",))
    with pytest.raises(ValueError, match="gain_db"):
        A.AugmentConfig(gain_db=(6.0, -30.0))
    with pytest.raises(ValueError, match="not known"):
        A.AugmentConfig.from_dict({"p_reverb": 0.5})
