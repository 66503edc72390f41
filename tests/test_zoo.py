"""Training-zoo architectures: documented sizes, shapes, gradients, ONNX export (random weights)."""
import numpy as np
import onnxruntime as ort
import pytest
import torch

from engines.export import export_onnx
from engines.models import ARCHITECTURES, build_detector, count_parameters
from tests.conftest import speech

# Exact counts documented in each module's docstring.
DOCUMENTED = {
    "resnet18": 11_170_753,  # torchvision ImageNet ResNet-18 (11,689,512) minus RGB stem and 1000-way head
    "res2net": 878_877,  # Li et al. 2021 report ~0.9M
    "efficientnet_b0": 4_335_165,  # B0 body 4,006,972 + 1280->256->1 head
    "lcnn": 322_257,  # LCNN-9 body 158,016 + FC 160 / MFM 80 head on 1,024 pooled inputs
}
ZOO = sorted(DOCUMENTED)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The test machine is a shared 2-core box: a second intra-op thread mostly spins.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("arch", ZOO)
def test_parameter_count_as_documented(arch: str) -> None:
    assert count_parameters(build_detector(arch).network) == DOCUMENTED[arch]


def test_res2net_se_variant_count() -> None:
    assert count_parameters(build_detector("res2net", se=True).network) == 920_179


@pytest.mark.parametrize("arch", ZOO)
def test_registered_with_its_front_end(arch: str) -> None:
    spec = ARCHITECTURES[arch]
    expected = {"resnet18": ("logmel", 80), "efficientnet_b0": ("logmel", 80), "res2net": ("logmel", 128),
                "lcnn": ("logpower", 513)}[arch]
    assert (spec.default_frontend.kind, spec.default_frontend.n_features) == expected
    assert spec.citation


@pytest.mark.parametrize("arch", ZOO)
def test_forward_shape_and_batch_independence(arch: str) -> None:
    torch.manual_seed(0)
    det = build_detector(arch)
    x = torch.from_numpy(np.stack([speech(4.0, 0), speech(4.0, 1)]))
    det.train()
    with torch.no_grad():
        y_train = det(x)  # also moves BatchNorm running statistics away from the identity
    # Batch statistics make every layer input-dependent even at random init.
    assert not torch.allclose(y_train[0], y_train[1]), "two different utterances gave the same logit"
    det.eval()
    with torch.no_grad():
        y = det(x)
        y0 = det(x[:1])
    assert y.shape == (2,) and y.dtype == torch.float32 and torch.isfinite(y).all()
    assert torch.allclose(y0, y[:1], atol=1e-4)


@pytest.mark.parametrize("arch", ZOO)
def test_every_parameter_gets_a_gradient(arch: str) -> None:
    torch.manual_seed(0)
    det = build_detector(arch).train()
    # 1-s inputs: the networks pool globally, and backward on 4 s is needlessly slow on CPU.
    x = torch.from_numpy(np.stack([speech(1.0, 0), speech(1.0, 2)]))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(det(x), torch.tensor([0.0, 1.0]))
    loss.backward()
    dead = [n for n, p in det.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not dead, f"parameters without a finite gradient: {dead[:5]}"


def test_lcnn_refuses_a_front_end_of_another_width() -> None:
    from engines.frontend import SPECRNET_FRONTEND

    det = build_detector("lcnn", SPECRNET_FRONTEND)  # 80 mels into a 513-bin LCNN
    with pytest.raises(ValueError, match="513 frequency bins got 80"):
        det(torch.zeros(1, 64000))
    ok = build_detector("lcnn", SPECRNET_FRONTEND, n_bins=80).eval()
    assert ok(torch.zeros(2, 64000)).shape == (2,)


def _onnx_matches_torch(arch: str, tmp_path) -> None:
    torch.manual_seed(0)
    det = build_detector(arch)
    x = np.stack([speech(4.0, i) for i in range(3)]).astype(np.float32)
    det.train()
    with torch.no_grad():
        det(torch.from_numpy(x))
    det.eval()
    path = export_onnx(det, tmp_path / f"{arch}.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"waveform": x})[0]
    with torch.no_grad():
        ref = det(torch.from_numpy(x)).numpy()
    assert y.shape == (3,)
    np.testing.assert_allclose(y, ref, atol=1e-4, rtol=1e-4)


def test_onnx_export_lcnn(tmp_path) -> None:
    _onnx_matches_torch("lcnn", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["res2net", "efficientnet_b0", "resnet18"])
def test_onnx_export_big_models(arch: str, tmp_path) -> None:
    _onnx_matches_torch(arch, tmp_path)
