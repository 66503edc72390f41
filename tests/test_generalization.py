"""The leave-families-out protocol end to end on a tiny corpus (real speech, crude spoofs).

Two crude "families" (random-phase resynthesis with long and with short frames) stand in for
generators: the tests check the plumbing (fold manifests, training without the held-out family,
per-family EERs, the matrix, resuming, the threshold written into a checkpoint), not accuracy.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engines.checkpoint import read_config
from training.augment import AugmentConfig
from training.config import TrainConfig
from training.generalization import (
    ProtocolError,
    ProtocolOptions,
    apply_int8_comparison,
    apply_threshold,
    family_eers,
    main,
    plan_folds,
    read_rows,
    run,
)
from tests.conftest import speech
from tests.tiny_corpus import random_phase_vocoder

SR = 16000
FOLDS = {"long": ("rpv-long",), "short": ("rpv-short",)}
COUNTS = {"train": 4, "dev": 2, "eval": 3}  # per class and family


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lofo-corpus")
    rows = []
    i = 0
    for split, n in COUNTS.items():
        for k in range(n):
            x = speech(2.0, i % 4)[::1].copy()
            x = np.roll(x, 1000 * i)  # a different stretch of speech per item
            name = f"{split}/bona_{k}.flac"
            (root / split).mkdir(exist_ok=True)
            sf.write(root / name, x, SR)
            rows.append([name, "bonafide", f"spk-{split}-{k}", "-", "tiny", split])
            for family, n_fft in (("rpv-long", 1024), ("rpv-short", 128)):
                y = random_phase_vocoder(x, seed=i, n_fft=n_fft, hop=n_fft // 4)
                name = f"{split}/{family}_{k}.flac"
                sf.write(root / name, y, SR)
                rows.append([name, "spoof", f"spk-{split}-{k}", family, family, split])
            i += 1
    path = root / "manifest.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "speaker", "attack", "source", "split"])
        w.writerows(rows)
    return path


def _recipe(**kw: object) -> TrainConfig:
    base = dict(arch="specrnet", epochs=1, batch_size=4, workers=0, threads=1, progress=False, seed=1,
                augment=AugmentConfig.off())
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_fold_plans_hold_each_family_out_of_training(manifest: Path) -> None:
    rows = read_rows(manifest)
    plans = plan_folds(rows, FOLDS)
    assert [p.name for p in plans] == ["long", "short"]
    for p in plans:
        assert not {r.attack for r in p.train} & set(p.heldout)  # never trained on
        assert {r.split for r in p.train} == {"train", "dev"}
        assert {r.attack for r in p.monitor} == {"-", *p.heldout} and {r.split for r in p.monitor} == {"dev"}
        assert len(p.eval) == COUNTS["eval"] * 3  # every family and bona fide, eval split
        assert all(Path(r.path).is_absolute() and Path(r.path).is_file() for r in p.train)


def test_folds_must_cover_every_family_once(manifest: Path) -> None:
    rows = read_rows(manifest)
    with pytest.raises(ProtocolError, match="rpv-short are in no fold"):
        plan_folds(rows, {"long": ("rpv-long",)})
    with pytest.raises(ProtocolError, match="in two folds"):
        plan_folds(rows, {"a": ("rpv-long",), "b": ("rpv-long", "rpv-short")})
    with pytest.raises(ProtocolError, match="not in the manifest"):
        plan_folds(rows, {**FOLDS, "c": ("hifigan-lj",)})


def test_family_eers_are_per_family_against_all_bonafide() -> None:
    scores = [("bonafide", "-", 0.0), ("bonafide", "-", 1.0), ("spoof", "a", 2.0), ("spoof", "a", 3.0),
              ("spoof", "b", -1.0), ("spoof", "b", 0.5)]
    eers = family_eers(scores)
    assert eers["a"]["eer"] == 0.0 and eers["a"]["spoof_files"] == 2 and eers["a"]["bonafide_files"] == 2
    assert eers["b"]["eer"] == pytest.approx(0.5)


@pytest.fixture(scope="module")
def protocol(manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("lofo")
    matrix = run(ProtocolOptions(manifest=manifest, out=out, recipe=_recipe(), folds=FOLDS, threads=1,
                                 progress=False))
    return out, matrix


def test_protocol_writes_the_matrix(protocol: tuple[Path, dict]) -> None:
    out, m = protocol
    assert m["complete"] and set(m["folds"]) == {"long", "short"}
    assert set(m["heldout"]) == {"rpv-long", "rpv-short"}
    assert m["heldout"]["rpv-long"]["fold"] == "long"
    for fold in m["folds"].values():
        assert set(fold["families"]) == {"rpv-long", "rpv-short"}
        assert all(v["spoof_files"] == COUNTS["eval"] and v["bonafide_files"] == COUNTS["eval"]
                   for v in fold["families"].values())
    assert m["pooled_spoof_files"] == 2 * COUNTS["eval"] and m["pooled_bonafide_files"] == 2 * COUNTS["eval"]
    assert 0.0 <= m["mean_heldout_eer"] <= 1.0 and 0.0 < m["threshold"] < 1.0
    assert [c["epoch"] for c in m["monitor_curve"]] == [1] and m["best_monitor_epoch"] == 1
    text = (out / "matrix.md").read_text()
    assert "| long (rpv-long) |" in text and "mean held-out EER" in text
    # Each fold trained without its held-out family: the training data record says so.
    fold = json.loads((out / "fold-long" / "fold.json").read_text())
    info = read_config(out / "fold-long" / "run" / "best").training_data
    assert "rpv-long" not in json.dumps(info["train"]) and "rpv-short" in json.dumps(info["train"])
    assert "monitor_eer" in fold["history"][0]


def test_protocol_resumes_without_retraining(protocol: tuple[Path, dict], manifest: Path) -> None:
    out, first = protocol
    stamp = (out / "fold-long" / "fold.json").stat().st_mtime_ns
    again = run(ProtocolOptions(manifest=manifest, out=out, recipe=_recipe(), folds=FOLDS, threads=1, progress=False))
    assert (out / "fold-long" / "fold.json").stat().st_mtime_ns == stamp
    assert again["mean_heldout_eer"] == first["mean_heldout_eer"]
    with pytest.raises(ProtocolError, match="another recipe"):
        run(ProtocolOptions(manifest=manifest, out=out, recipe=_recipe(lr=0.5), folds=FOLDS, progress=False))
    # A recipe.json written before TrainConfig had an option reads that option as its default.
    saved = json.loads((out / "recipe.json").read_text())
    (out / "recipe.json").write_text(json.dumps({k: v for k, v in saved.items() if k != "first_stage"}))
    assert run(ProtocolOptions(manifest=manifest, out=out, recipe=_recipe(), folds=FOLDS, threads=1,
                               progress=False))["mean_heldout_eer"] == first["mean_heldout_eer"]


def test_threshold_goes_into_a_checkpoint(protocol: tuple[Path, dict], tmp_path: Path) -> None:
    import shutil

    out, m = protocol
    ckpt = tmp_path / "final"
    shutil.copytree(out / "fold-short" / "run" / "best", ckpt)
    before = read_config(ckpt)
    files = {p.name: p.read_bytes() for p in ckpt.iterdir() if p.name != "model.json"}
    thr = apply_threshold(out / "matrix.json", ckpt)
    cfg = read_config(ckpt)
    assert cfg.threshold == pytest.approx(thr) == pytest.approx(m["threshold"])
    assert cfg.metrics["protocol_mean_heldout_eer"] == m["mean_heldout_eer"]
    # Only the threshold and its provenance change: weights, graphs and their records (an int8
    # model's included) stay valid, whichever order the ship steps run in.
    assert {p.name: p.read_bytes() for p in ckpt.iterdir() if p.name != "model.json"} == files
    assert {k: v for k, v in vars(cfg).items() if k not in ("threshold", "metrics")} == \
        {k: v for k, v in vars(before).items() if k not in ("threshold", "metrics")}


def test_int8_is_scored_on_the_same_folds_and_recorded_in_a_checkpoint(protocol: tuple[Path, dict],
                                                                      manifest: Path, tmp_path: Path) -> None:
    import shutil

    import engines

    out, fp32 = protocol
    stamps = {f: (out / f"fold-{f}" / "fold.json").stat().st_mtime_ns for f in FOLDS}
    int8 = run(ProtocolOptions(manifest=manifest, out=out, recipe=_recipe(), folds=FOLDS, threads=1,
                               progress=False, engine="onnx-int8"))
    # The trained folds are reused (float32's results untouched); each kept model got an int8 file.
    assert {f: (out / f"fold-{f}" / "fold.json").stat().st_mtime_ns for f in FOLDS} == stamps
    assert int8["engine"] == "onnx-int8" and int8["complete"] and (out / "matrix-int8.md").is_file()
    for f in FOLDS:
        fold = json.loads((out / f"fold-{f}" / "fold-int8.json").read_text())
        assert fold["scores"] == f"fold-{f}/eval-int8/scores.csv" and fold["eval_files"] == COUNTS["eval"] * 3
        assert read_config(out / f"fold-{f}" / "run" / "best").int8 is not None
    ckpt = tmp_path / "final"
    shutil.copytree(out / "fold-short" / "run" / "best", ckpt)
    comparison = apply_int8_comparison(out, ckpt)
    change = comparison["measures"]["mean_heldout_eer"]
    assert change["float32"] == fp32["mean_heldout_eer"] and change["int8"] == int8["mean_heldout_eer"]
    cfg = read_config(ckpt)
    assert cfg.int8["protocol"] == comparison
    from tools.model_card import int8_protocol_sentence  # the model card says it in words

    words = int8_protocol_sentence(cfg.int8)[1]
    assert ("within 1 point" if comparison["within_tolerance"] else "outside 1 point") in words
    assert f"{100 * change['int8']:.2f}%" in words
    # --engine auto follows the recorded verdict, whichever it is on these crude models.
    order = engines.auto_order(cfg)
    assert ("onnx-int8" in order) == comparison["within_tolerance"]
    for verdict in (True, False):
        cfg.int8["protocol"]["within_tolerance"] = verdict
        assert ("onnx-int8" in engines.auto_order(cfg)) == verdict


def test_cli_errors_are_one_line(manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--manifest", str(manifest), "--out", str(tmp_path), "--folds", "long=rpv-long"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "rpv-short" in err and err.count("\n") == 1
    assert main(["--out", str(tmp_path / "none"), "--apply-threshold", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert main(["--out", str(tmp_path / "none"), "--apply-int8", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_students_distil_from_the_same_fold_of_a_teacher_run(protocol: tuple[Path, dict], manifest: Path,
                                                             tmp_path: Path) -> None:
    """--teachers: each fold's teacher is the teacher run's model of that fold (trained without the same
    families), a streaming student starting from its weights; a fixed teacher, which saw every family, is
    refused, and so is teacher_init without --teachers."""
    teachers, _ = protocol
    out = tmp_path / "students"
    student = _recipe(arch="specrnet_stream", teacher_init=True)
    run(ProtocolOptions(manifest=manifest, out=out, recipe=student, folds=FOLDS, only=("long",), threads=1,
                        progress=False, teachers=teachers))
    record = read_config(out / "fold-long" / "run" / "best").training_data["teacher"]
    assert record["checkpoint"] == str((teachers / "fold-long" / "run" / "best").resolve())
    assert record["init_tensors"] > 0  # started from its fold's teacher's weights
    with pytest.raises(ProtocolError, match="teacher_init needs a teacher per fold"):
        ProtocolOptions(manifest=manifest, out=out, recipe=student, folds=FOLDS)
    assert "each fold's model in" in json.loads((out / "recipe.json").read_text())["teacher"]
    with pytest.raises(ProtocolError, match="a fixed teacher has seen"):
        ProtocolOptions(manifest=manifest, out=out, recipe=_recipe(teacher=str(teachers / "fold-long" / "run" / "best")),
                        folds=FOLDS)
    with pytest.raises(ProtocolError, match="not a protocol run"):
        ProtocolOptions(manifest=manifest, out=out, recipe=_recipe(), folds=FOLDS, teachers=tmp_path)


def test_model_card_names_the_recipes_first_stage(protocol: tuple[Path, dict], tmp_path: Path) -> None:
    """The card's protocol line says how each fold trained: the curriculum's first stage when the
    recipe has one (a card that left it out would describe another recipe)."""
    from tools.model_card import protocol_section

    out, _ = protocol
    assert "with this recipe (specrnet, 1 epochs per fold)" in "\n".join(protocol_section(out / "matrix.json"))
    m = json.loads((out / "matrix.json").read_text())
    m["recipe"]["first_stage"] = {"families": ["rpv-long", "rpv-short"], "epochs": 8}
    curriculum = tmp_path / "matrix.json"
    curriculum.write_text(json.dumps(m))
    assert ("(specrnet, 8 epochs on bona fide and whichever of rpv-long, rpv-short the fold trains on, then 1 "
            "epochs per fold)") in "\n".join(protocol_section(curriculum))
