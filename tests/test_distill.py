"""Distillation mechanics (training.distill): a 1-epoch run of the streaming student on a tiny corpus
writes a loadable checkpoint that records its teacher; the distillation term pulls towards the teacher."""
from pathlib import Path

import pytest
import torch

from engines.checkpoint import load_detector, save_checkpoint
from engines.models import build_detector
from tests.tiny_corpus import make_corpus
from training.distill import main
from training.train import distill_loss


def test_distillation_loss_is_least_at_the_teachers_logits() -> None:
    teacher = torch.tensor([-3.0, 0.5, 4.0])
    logit = teacher.clone().requires_grad_(True)
    distill_loss(logit, teacher, 2.0).backward()
    assert logit.grad is not None and logit.grad.abs().max() < 1e-6
    assert distill_loss(teacher + 1.0, teacher, 2.0) > distill_loss(teacher, teacher, 2.0)


def test_one_epoch_distillation_writes_a_loadable_student(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = make_corpus(tmp_path / "tiny", n_per_class=4, dev_per_class=1, odd_formats=False)
    torch.manual_seed(0)
    teacher = tmp_path / "teacher"
    save_checkpoint(build_detector("specrnet").eval(), teacher, architecture="specrnet", export_onnx=False)
    out = tmp_path / "student"
    common = ["--manifest", str(corpus), "--out", str(out), "--batch-size", "4", "--workers", "0", "--threads", "1",
              "--no-onnx", "--no-progress"]
    assert main(common + ["--epochs", "1"]) == 2  # no teacher
    assert "needs a teacher checkpoint (--teacher CKPT)" in capsys.readouterr().err
    assert main(common + ["--teacher", str(teacher), "--teacher-init", "--epochs", "1"]) == 0
    det, cfg = load_detector(out / "best")
    assert cfg.architecture == "specrnet_stream" and cfg.metrics["epoch"] == 1
    record = cfg.training_data["teacher"]
    assert record["checkpoint"] == str(teacher.resolve()) and record["init_tensors"] > 30
    assert (out / "last" / "state.json").is_file()
