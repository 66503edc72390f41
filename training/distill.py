"""Distil a streaming student from a teacher: ``python -m training.distill --teacher CKPT --manifest CSV --out DIR``.

    python -m training.distill --teacher engines/weights/specrnet --manifest corpus/manifest.csv \\
        --out runs/student --teacher-init --epochs 30

``training.train`` with a teacher (``--teacher``) and, by default, the ``specrnet_stream`` student, whose
network runs once per hop (engines.stream_network). Every option of training.train applies (same
augmentation, resume with ``--resume``, checkpoints in OUT/best and OUT/last, model.onnx and the
student's trunk and readout graphs at the end); the loss mixes the labels with the teacher's logits
(``--distill-weight``, ``--distill-temperature``; TrainConfig says how).
"""
from __future__ import annotations

import sys

from training.train import main as train_main

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    return train_main(argv, defaults={"arch": "specrnet_stream"}, prog="python -m training.distill", needs_teacher=True)


if __name__ == "__main__":
    sys.exit(main())
