"""Training mechanics on a tiny corpus (real bona fide speech, crude random-phase "spoofs").

Random-looking EERs are expected: these tests check plumbing (splits, checkpoints, resume), not
accuracy.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import engines
from engines.checkpoint import read_config
from training.augment import AugmentConfig
from training.config import TrainConfig
from training.data import EpochSampler
from training.splits import read_splits
from training.state import ResumeError
from training.train import TrainResult, main, threshold_from_logit, train
from tests.tiny_corpus import make_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("tiny"))


def _cfg(manifest: Path, out: Path, **kw) -> TrainConfig:
    # One thread: on a shared 2-core machine a second torch thread mostly spins.
    base = dict(manifest=str(manifest), out=str(out), arch="specrnet", epochs=2, batch_size=4, workers=0,
                threads=1, progress=False, export_onnx=False, seed=3,
                augment=AugmentConfig(p_noise=0.5, p_gain=0.5, p_codec=0.0))
    return TrainConfig(**{**base, **kw})


def test_splits_and_counts(corpus: Path, tmp_path: Path) -> None:
    split = read_splits(corpus)
    assert (len(split.train), len(split.dev)) == (12, 4)
    assert {u.subset for u in split.train} == {"train"} and {u.subset for u in split.dev} == {"dev"}
    # Without a split column the dev data must come from --dev-manifest.
    plain = make_corpus(tmp_path / "plain", n_per_class=3, dev_per_class=0, split_column=False, odd_formats=False)
    with pytest.raises(ValueError, match="no 'split' column"):
        read_splits(plain)
    both = read_splits(plain, dev_manifest=corpus)
    assert (len(both.train), len(both.dev), both.how) == (6, 16, "dev manifest")
    bad = corpus.parent / "bad.csv"  # beside the audio, so relative paths resolve
    bad.write_text(corpus.read_text().replace(",dev\n", ",holdout\n", 1))
    with pytest.raises(ValueError, match="split 'holdout' is not known; accepted: train, dev"):
        read_splits(bad)


def test_balanced_sampler_draws_classes_equally() -> None:
    labels = [0] * 10 + [1] * 90
    s = EpochSampler(labels, seed=0, balanced=True)
    drawn = []
    for epoch in range(20):
        s.set_epoch(epoch)
        drawn += [labels[i] for i, e in s if e == epoch]
    assert len(drawn) == 2000 and abs(np.mean(drawn) - 0.5) < 0.05
    plain = EpochSampler(labels, seed=0)
    assert sorted(i for i, _ in plain) == list(range(100))


def test_threshold_is_a_probability_strictly_inside_0_1() -> None:
    assert threshold_from_logit(0.0) == 0.5
    assert 0.0 < threshold_from_logit(1e9) < 1.0 and 0.0 < threshold_from_logit(-1e9) < 1.0


@pytest.fixture(scope="module")
def resumed(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrainResult, TrainResult]:
    """A run interrupted after epoch 1 and resumed to epoch 2, exporting ONNX at the end."""
    out = tmp_path_factory.mktemp("run")
    first = train(_cfg(corpus, out, epochs=1))
    second = train(_cfg(corpus, out, epochs=2, resume=True, export_onnx=True))
    return out, first, second


def test_resume_continues_from_the_saved_epoch(resumed: tuple[Path, TrainResult, TrainResult]) -> None:
    out, first, second = resumed
    assert (first.epochs_completed, first.stop_reason) == (1, "epochs")
    assert second.epochs_completed == 2
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(h["steps"] == 3 for h in history)  # 12 files / batch 4, no epoch repeated
    state = json.loads((out / "last" / "state.json").read_text())
    assert state["epoch"] == 2 and state["global_step"] == 6 and state["finished"]


def test_best_checkpoint_is_loadable_and_documented(resumed: tuple[Path, TrainResult, TrainResult]) -> None:
    out, _, result = resumed
    history = json.loads((out / "history.json").read_text())
    cfg = read_config(result.best_dir)
    assert cfg.architecture == "specrnet" and 0.0 < cfg.threshold < 1.0
    assert cfg.metrics["dev_eer"] == pytest.approx(result.best_eer) == min(h["dev_eer"] for h in history)
    assert 0.0 <= cfg.metrics["dev_eer"] <= 1.0
    assert cfg.metrics["epoch"] == result.best_epoch in (1, 2)
    assert cfg.threshold == pytest.approx(threshold_from_logit(cfg.metrics["dev_threshold_logit"]))
    td = cfg.training_data
    assert len(td["manifest_sha256"]) == 64 and td["split"] == "split column"
    assert td["train"] == {"files": 12, "bonafide": 6, "spoof": 6, "attacks": {"RPV": 3, "RPV2": 3},
                           "sources": {"tiny": 6, "tiny-synth": 6}}
    assert (td["dev"]["bonafide"], td["dev"]["spoof"]) == (2, 2)
    x = np.random.default_rng(0).standard_normal((3, 64000)).astype(np.float32) * 0.1
    lo = engines.load(result.best_dir, engine="onnx").logits(x)
    lt = engines.load(result.best_dir, engine="torch").logits(x)
    np.testing.assert_allclose(lo, lt, atol=1e-4, rtol=1e-4)


def test_resume_refuses_other_settings(corpus: Path, resumed: tuple[Path, TrainResult, TrainResult],
                                       tmp_path: Path) -> None:
    out = resumed[0]
    with pytest.raises(ValueError, match="already holds a training run"):
        train(_cfg(corpus, out, epochs=3))
    with pytest.raises(ResumeError, match="arch: saved 'specrnet', now 'lcnn'"):
        train(_cfg(corpus, out, epochs=3, resume=True, arch="lcnn"))
    with pytest.raises(ResumeError, match="already completed 2 epochs"):
        train(_cfg(corpus, out, epochs=2, resume=True))
    with pytest.raises(ResumeError, match="is missing"):
        train(_cfg(corpus, tmp_path / "nothing", epochs=1, resume=True))


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(corpus: Path, resumed: tuple[Path, TrainResult, TrainResult],
                                               tmp_path: Path) -> None:
    out = resumed[0]
    train(_cfg(corpus, tmp_path, epochs=2))
    h_resumed = json.loads((out / "history.json").read_text())
    h_straight = json.loads((tmp_path / "history.json").read_text())
    assert [h["train_loss"] for h in h_straight] == pytest.approx([h["train_loss"] for h in h_resumed], rel=1e-6)
    wa = load_file(str(out / "last" / "state.safetensors"))
    wb = load_file(str(tmp_path / "last" / "state.safetensors"))
    assert wa.keys() == wb.keys()
    # Model and optimizer state (rng.torch differs: the resumed run also rebuilt a model for ONNX export).
    for k in (k for k in wa if k.startswith(("model.", "optim."))):
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6, msg=k)


def test_cli_errors_are_one_line(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--manifest", str(corpus), "--out", str(tmp_path), "--arch", "nope", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: architecture 'nope' is not known; accepted:") and err.count("\n") == 1
    assert main(["--manifest", str(corpus), "--out", str(tmp_path), "--device", "cpu", "--amp", "fp16"]) == 2
    assert "needs device 'cuda'" in capsys.readouterr().err


def test_config_json_round_trip_and_cli_override(tmp_path: Path) -> None:
    from training.train import config_from_args

    cfg = TrainConfig(manifest="m.csv", out="o", arch="lcnn", epochs=7, augment=AugmentConfig(p_rawboost=0.5))
    path = tmp_path / "c.json"
    path.write_text(cfg.to_json())
    assert TrainConfig.from_json(path) == cfg
    over = config_from_args(["--config", str(path), "--epochs", "3", "--arch-params", '{"dropout": 0.5}'])
    assert (over.epochs, over.arch, over.arch_params, over.augment.p_rawboost) == (3, "lcnn", {"dropout": 0.5}, 0.5)
    path.write_text(json.dumps({"epochs": 2, "learning_rate": 0.1}))
    with pytest.raises(ValueError, match=r"\['learning_rate'\] are not known"):
        TrainConfig.from_json(path)


def test_time_limit_stops_and_saves(corpus: Path, tmp_path: Path) -> None:
    result = train(_cfg(corpus, tmp_path, epochs=5, max_minutes=1e-6, augment=AugmentConfig.off()))
    assert (result.stop_reason, result.epochs_completed) == ("time_limit", 1)
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history) == 1 and history[0]["partial"] and history[0]["steps"] == 1
    assert read_config(result.best_dir).metrics["epoch"] == 1


def test_subset_column_also_splits(corpus: Path) -> None:
    # ASVspoof-derived manifests call the column `subset`; it splits the same way.
    alt = corpus.parent / "subset.csv"
    alt.write_text(corpus.read_text().replace(",split\n", ",subset\n", 1))
    split = read_splits(alt)
    assert (len(split.train), len(split.dev)) == (12, 4)


def test_train_fraction_keeps_every_stratum_and_is_seeded(tmp_path: Path) -> None:
    from training.splits import read_splits, subsample

    manifest = make_corpus(tmp_path / "c", n_per_class=8, dev_per_class=2, odd_formats=False)
    train = read_splits(manifest).train
    half = subsample(train, 0.5, seed=3)
    assert len(half) == 7 and half == subsample(train, 0.5, seed=3)  # 3 of 6 bona fide, 2 of 3 per attack
    strata = {(u.label, u.attack) for u in train}
    assert {(u.label, u.attack) for u in half} == strata  # every class/attack still present
    assert subsample(train, 0.5, seed=4) != half
    assert subsample(train, 1.0, seed=0) == train
    with pytest.raises(ValueError, match="train_fraction"):
        TrainConfig(manifest="m.csv", out="o", train_fraction=0.0)


def test_a_chosen_front_end_is_trained_saved_and_exported(corpus: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    fe = {"kind": "loglinear", "n_mels": 80}
    result = train(_cfg(corpus, tmp_path / "run", epochs=1, frontend=fe, export_onnx=True))
    saved = read_config(result.best_dir).frontend
    assert (saved["kind"], saved["n_mels"], saved["n_fft"]) == ("loglinear", 80, 512)
    x = np.random.default_rng(1).standard_normal((2, 64000)).astype(np.float32) * 0.1
    np.testing.assert_allclose(engines.load(result.best_dir, engine="onnx").logits(x),
                               engines.load(result.best_dir, engine="torch").logits(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(ResumeError, match="frontend: saved"):
        train(_cfg(corpus, tmp_path / "run", epochs=2, resume=True))
    assert main(["--manifest", str(corpus), "--out", str(tmp_path / "x"), "--frontend", '{"kind": "mfcc"}']) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: front end kind 'mfcc' is not supported; accepted: logmel, loglinear, logpower")


def test_init_starts_from_a_checkpoints_weights(corpus: Path, resumed: tuple[Path, TrainResult, TrainResult],
                                                tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A curriculum's second stage: the weights come from --init, the optimizer starts fresh. With a
    learning rate too small to move them, the convolutions end where the checkpoint's were."""
    import torch

    from engines.checkpoint import load_detector

    _, _, first = resumed
    source, _ = load_detector(first.best_dir)
    result = train(_cfg(corpus, tmp_path / "stage2", epochs=1, lr=1e-12, init=str(first.best_dir)))
    after, mc = load_detector(result.best_dir)
    fresh, _ = load_detector(train(_cfg(corpus, tmp_path / "fresh", epochs=1, lr=1e-12)).best_dir)
    for name in ("block0.conv1.weight", "block2.conv2.weight", "fc2.weight"):
        w = dict(source.network.named_parameters())[name]
        assert torch.allclose(dict(after.network.named_parameters())[name], w, atol=1e-6)
        assert not torch.allclose(dict(fresh.network.named_parameters())[name], w, atol=1e-3)
    assert mc.training_data["init"]["model"] == read_config(first.best_dir).model_id
    # Another network refuses in one line.
    assert main(["--manifest", str(corpus), "--out", str(tmp_path / "bad"), "--arch", "resmax", "--epochs", "1",
                 "--init", str(first.best_dir), "--no-progress", "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --init ") and err.count("\n") == 1


def test_curriculum_trains_its_families_first_then_everything_from_there(corpus: Path, tmp_path: Path) -> None:
    """first_stage: OUT/first-stage trains on bona fide and its families alone; the run in OUT starts
    from its weights. A stage stopped by the time limit resumes, and the first stage is not redone."""
    from training.curriculum import FIRST_STAGE_DIR, run_training

    out = tmp_path / "curriculum"
    stage = {"families": ["RPV"], "epochs": 2}
    stopped = run_training(_cfg(corpus, out, epochs=1, first_stage=stage, max_minutes=1e-6))
    assert stopped.stop_reason == "time_limit" and not (out / "last").exists()
    with pytest.raises(ValueError, match="already holds a training run"):
        run_training(_cfg(corpus, out, epochs=1, first_stage=stage))
    result = run_training(_cfg(corpus, out, epochs=1, first_stage=stage, resume=True))
    assert result.stop_reason == "epochs"
    first = out / FIRST_STAGE_DIR
    first_data = read_config(first / "best").training_data
    assert set(first_data["train"]["attacks"]) == {"RPV"}, first_data["train"]
    assert first_data["train"]["bonafide"] == 6
    mc = read_config(result.best_dir)
    assert set(mc.training_data["train"]["attacks"]) == {"RPV", "RPV2"}
    assert mc.training_data["init"]["checkpoint"] == str((first / "best").resolve())
    assert json.loads((out / "config.json").read_text())["first_stage"] == stage
    # A family the manifest lacks is a one-line refusal, before any training.
    with pytest.raises(ValueError, match="no rows of the first stage's families"):
        run_training(_cfg(corpus, tmp_path / "none", epochs=1, first_stage={"families": ["vocos"], "epochs": 1}))
    with pytest.raises(ValueError, match="first_stage.epochs must be >= 1"):
        _cfg(corpus, tmp_path / "bad", first_stage={"families": ["RPV"], "epochs": 0})
