"""The Triton inference tier: engines.triton_repo and --engine triton against a real tritonserver.

The server is the one nvidia-pytriton bundles (2.51, Python backend only), so it serves the
repository written with ``--backend python`` (the checkpoint's model.onnx run by ONNX Runtime
inside Triton's Python stub); the onnxruntime-backend repository is checked against Triton's own
ModelConfig schema. Loopback only, every wait bounded, the server's process group killed in
teardown. Skipped with the reason where tritonclient, nvidia-pytriton or libpython3.11 is missing.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engines.checkpoint import read_config, sha256_file
from tests.conftest import REPO, speech, speech_files

pytest.importorskip("tritonclient.grpc", reason="tritonclient not installed: pip install 'realtime-detect[triton]'")

from engines import EngineError, load  # noqa: E402
from engines.backends.triton_backend import TritonOptions  # noqa: E402
from tools.tritonserver import TritonServer, TritonStartError, TritonUnavailable  # noqa: E402

SHIPPED = REPO / "engines" / "weights" / "specrnet"
pytestmark = pytest.mark.timeout(120)


def write_repo(out: Path, *args: str, model: Path | str = "specrnet") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engines.triton_repo", "--model", str(model), "--out", str(out), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def write_repo_here(out: Path, capsys: pytest.CaptureFixture, *args: str, model: Path | str = "specrnet") -> tuple[int, str]:
    """engines.triton_repo's main in this process (no interpreter start-up); (exit code, stderr)."""
    from engines.triton_repo import main

    code = main(["--model", str(model), "--out", str(out), *args])
    return code, capsys.readouterr().err


def start_server(repo: Path) -> TritonServer:
    try:
        server = TritonServer(repo)
    except TritonUnavailable as e:
        pytest.skip(str(e))
    try:
        return server.start(["specrnet"])
    except TritonStartError as e:
        server.close()
        if e.model_failed:  # our model did not load: a real failure
            raise
        pytest.skip(f"tritonserver cannot start here: {e}")


@pytest.fixture(scope="module")
def python_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("triton-repo")
    r = write_repo(out, "--backend", "python", "--max-batch", "4")
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def server(python_repo: Path):
    s = start_server(python_repo)
    yield s
    s.close()


def real_windows(n: int) -> np.ndarray:
    """``n`` 4-s windows of real speech from the shared data, at varied offsets."""
    files = len(speech_files(4))
    return np.stack([np.roll(speech(6.0, i % files), -4000 * i)[:64000] for i in range(n)]).astype(np.float32)


def parse_config(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


# -- the repository writer ------------------------------------------------------------------------

def test_onnxruntime_repository_is_a_valid_triton_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, err = write_repo_here(tmp_path, capsys, "--kind", "gpu", "--instances", "2", "--max-batch", "32",
                                "--max-queue-delay-us", "200")
    assert code == 0, err
    cfg = read_config(SHIPPED)
    model = tmp_path / "specrnet"
    # Parsed with Triton's own protobuf schema: a misspelt field would raise here.
    c = parse_config(model / "config.pbtxt")
    assert (c.name, c.backend, c.max_batch_size) == ("specrnet", "onnxruntime", 32)
    assert c.dynamic_batching.max_queue_delay_microseconds == 200
    assert [(g.count, g.kind) for g in c.instance_group] == [(2, c.instance_group[0].KIND_GPU)]
    assert [(i.name, list(i.dims)) for i in c.input] == [("waveform", [64000])]
    # The graph's output is [batch]: per-item dims [1], reshaped to [] for the model.
    assert [(o.name, list(o.dims), list(o.reshape.shape), o.HasField("reshape")) for o in c.output] == [("logit", [1], [], True)]
    assert c.parameters["realtime_detect_onnx_sha256"].string_value == cfg.onnx_sha256
    assert sha256_file(model / "1" / "model.onnx") == cfg.onnx_sha256
    assert not (model / "1" / "model.py").exists()


def test_repository_refuses_a_tampered_checkpoint_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(SHIPPED, ckpt)
    data = bytearray((ckpt / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (ckpt / "model.onnx").write_bytes(bytes(data))
    code, err = write_repo_here(tmp_path / "repo", capsys, model=ckpt)
    assert code == 2 and err.count("\n") == 1
    assert "onnx_sha256" in err and "does not match" in err
    assert not (tmp_path / "repo" / "specrnet").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--backend", "python", "--kind", "gpu"], "CPU only"),
    (["--max-batch", "0"], "--max-batch 0: must be between 1 and 4096"),
    (["--name", "../x"], "--name '../x'"),
])
def test_repository_options_are_checked_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str],
                                                    message: str) -> None:
    code, err = write_repo_here(tmp_path, capsys, *args)
    assert code == 2 and message in err and err.count("\n") == 1


def test_tensorrt_plan_is_skipped_with_the_reason_where_it_cannot_be_built(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture) -> None:
    from engines.triton_repo import _tensorrt_unavailable

    reason = _tensorrt_unavailable()
    if not reason:
        pytest.skip("TensorRT and a GPU are present: the plan would be built (covered on GPU machines)")
    code, err = write_repo_here(tmp_path, capsys, "--tensorrt")
    assert code == 0 and f"skipped TensorRT plan: {reason}" in err
    assert (tmp_path / "specrnet" / "config.pbtxt").is_file() and not (tmp_path / "specrnet_trt").exists()


# -- the engine against a real tritonserver ----------------------------------------------------------

def test_triton_matches_the_in_process_onnx_engine_on_real_speech(server: TritonServer) -> None:
    local = load("specrnet", "onnx")
    remote = load("specrnet", "triton", triton=TritonOptions(server.url, timeout_s=30))
    try:
        assert remote.preferred_batch == 4  # the repository's max_batch_size caps one call
        x = real_windows(6)  # calls of 4 and 2 windows: the split is invisible
        expected = local.logits(x)
        np.testing.assert_allclose(remote.logits(x), expected, rtol=0, atol=1e-5)
        np.testing.assert_allclose(remote.logits(x[:1]), expected[:1], rtol=0, atol=1e-5)
        assert remote.info()["triton_url"] == server.url and remote.threshold == local.threshold
    finally:
        remote.close()
        local.close()


def test_concurrent_callers_share_one_client(server: TritonServer) -> None:
    """The batcher's --parallel calls come from several threads at once; Triton may merge them."""
    engine = load("specrnet", "triton", triton=TritonOptions(server.url, timeout_s=30))
    x = real_windows(4)
    expected = load("specrnet", "onnx").logits(x)
    results: dict[int, np.ndarray] = {}

    def call(i: int) -> None:
        results[i] = engine.logits(np.roll(x, i, axis=0))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    engine.close()
    assert sorted(results) == [0, 1, 2]
    for i, got in results.items():
        np.testing.assert_allclose(got, np.roll(expected, i), rtol=0, atol=1e-5)


def test_engine_refuses_a_model_it_does_not_serve(server: TritonServer, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="'nosuch' .* is not loaded or not ready"):
        load("specrnet", "triton", triton=TritonOptions(server.url, model_name="nosuch"))
    # A checkpoint whose model.onnx is not the served one (another sha256 in model.json).
    other = tmp_path / "other"
    shutil.copytree(SHIPPED, other)
    meta = json.loads((other / "model.json").read_text())
    meta["onnx_sha256"] = "0" * 64
    (other / "model.json").write_text(json.dumps(meta))
    with pytest.raises(EngineError, match="serves ONNX sha256 .* the checkpoint's model.onnx has 000000000000"):
        load(other, "triton", triton=TritonOptions(server.url, model_name="specrnet"))


def test_cli_offline_through_triton_equals_onnx(server: TritonServer, tmp_path: Path) -> None:
    import soundfile as sf

    clip = tmp_path / "speech.wav"
    sf.write(clip, speech(5.0, 2), 16000)  # 3 windows: the file path, not the amount, is under test
    out = {}
    for engine, extra in (("onnx", []), ("triton", ["--triton-url", server.url, "--triton-timeout", "30"])):
        r = subprocess.run([sys.executable, "-m", "realtime.cli", "--input", str(clip), "--offline", "--windows",
                            "--json", "--engine", engine, *extra], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        out[engine] = [json.loads(line) for line in r.stdout.splitlines()]
    scores = {e: [ev["spoof_probability"] for ev in evs if ev["type"] == "score" and ev["spoof_probability"] is not None]
              for e, evs in out.items()}
    assert len(scores["onnx"]) >= 2 and len(scores["onnx"]) == len(scores["triton"])
    np.testing.assert_allclose(scores["triton"], scores["onnx"], rtol=0, atol=1e-5)


def test_cli_names_an_unreachable_tier_in_one_line() -> None:
    from tools.haproxy import free_port

    r = subprocess.run([sys.executable, "-m", "realtime.cli", "--input", "demo", "--offline", "--engine", "triton",
                        "--triton-url", f"grpc://127.0.0.1:{free_port()}"], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "Triton model 'specrnet' at grpc://127.0.0.1:" in r.stderr


def test_a_dead_tier_is_an_engine_error_per_window_and_the_detector_lives(python_repo: Path) -> None:
    """SIGKILL the server mid-stream: the windows after it are engine_error events, the stream
    still ends with its summary over the windows scored before."""
    from realtime.batcher import BatcherOptions
    from realtime.options import DetectorOptions
    from realtime.session import LiveDetector

    triton = start_server(python_repo)  # its own server: this test kills it
    try:
        engine = load("specrnet", "triton", triton=TritonOptions(triton.url, timeout_s=5))
        audio = np.concatenate([speech(6.0, 0), speech(3.0, 1)]).reshape(-1, 1)
        events: list = []
        killed_at: list[int] = []

        async def wait_for(count: int, kind: str, within_s: float = 60.0) -> None:
            deadline = time.monotonic() + within_s
            while sum(e.type == kind for e in events) < count:
                assert time.monotonic() < deadline, f"fewer than {count} {kind} events: {events}"
                await asyncio.sleep(0.05)

        async def run():
            det = LiveDetector(engine, DetectorOptions(batching=BatcherOptions(max_wait_ms=1.0))).start()
            stream = det.open_stream("call-1", 16000, policy="block", sinks=[events.append])
            await stream.push(audio[: 6 * 16000])  # windows at 0, 0.5, 1, 1.5, 2 s
            await wait_for(5, "score")
            killed_at.append(len(events))
            triton.kill()
            await stream.push(audio[6 * 16000 :])
            summary = await stream.finish()
            await det.aclose()
            return summary

        summary = asyncio.run(asyncio.wait_for(run(), 90))
        engine.close()
    finally:
        triton.close()
    errors = [e for e in events if e.type == "error"]
    assert len(errors) >= 1 and all(e.code == "engine_error" for e in errors)
    assert all(f"Triton model 'specrnet' at {triton.url}" in e.message for e in errors)
    before, after = events[: killed_at[0]], events[killed_at[0]:]
    assert [e.type for e in before] == ["score"] * 5
    # After the kill nothing is scored: speech windows are errors, silent ones skipped by the gate.
    assert all(e.spoof_probability is None for e in after if e.type == "score")
    assert summary.type == "summary"
