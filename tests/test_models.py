import numpy as np
import onnxruntime as ort
import pytest
import torch

from engines.export import export_onnx
from engines.models import build_detector, count_parameters
from tests.conftest import speech


def test_specrnet_has_published_parameter_count() -> None:
    # Kawa et al. 2022 report 277,963 parameters.
    assert count_parameters(build_detector("specrnet").network) == 277_963


def test_resmax_parameter_count_as_documented() -> None:
    # Documented in engines/models/resmax.py; the paper reports about 0.26M.
    assert count_parameters(build_detector("resmax").network) == 263_331


def test_resmax_lite_is_narrower_and_keeps_the_fine_spectrogram() -> None:
    det = build_detector("resmax_lite").eval()
    assert count_parameters(det.network) == 133_875
    with torch.no_grad():
        feats = det.frontend(torch.from_numpy(speech(4.0, 0))[None])
    # 513 bins of 15.6 Hz; the 0.5-s default window hop is 32 of its 250-sample frames.
    assert feats.shape[2] == 513 and 8000 % det.frontend.config.hop_length == 0


def test_frontends_have_no_trainable_parameters() -> None:
    for arch in ("specrnet", "resmax", "resmax_lite"):
        det = build_detector(arch)
        assert count_parameters(det.frontend) == 0
        assert not any(k.startswith("frontend.") for k in det.state_dict())


@pytest.mark.parametrize("arch", ["specrnet", "resmax", "resmax_lite"])
def test_detector_maps_windows_to_logits(arch: str) -> None:
    det = build_detector(arch).eval()
    x = torch.from_numpy(np.stack([speech(4.0, 0), speech(4.0, 1), np.zeros(64000, np.float32)]))
    with torch.no_grad():
        y = det(x)
    assert y.shape == (3,) and torch.isfinite(y).all()
    # Batch independence in eval mode: scoring one window alone gives the same logit.
    with torch.no_grad():
        y0 = det(x[:1])
    assert torch.allclose(y0, y[:1], atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["specrnet", "resmax", "resmax_lite"])
def test_onnx_export_has_dynamic_batch_and_small_file(arch: str, tmp_path) -> None:
    det = build_detector(arch).eval()
    path = export_onnx(det, tmp_path / "m.onnx")
    # The Fourier basis is built in the graph, not stored: file ~ weights only.
    assert path.stat().st_size < 3_000_000
    assert not list(tmp_path.glob("*.data")), "export must be one self-contained file"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b in (1, 3, 17):
        x = np.stack([speech(4.0, i % 2) * (0.5 + i / 20) for i in range(b)]).astype(np.float32)
        y = sess.run(None, {"waveform": x})[0]
        assert y.shape == (b,)
        with torch.no_grad():
            ref = det(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(y, ref, atol=1e-4, rtol=1e-4)
