"""What a front end can carry, before any network is trained: a linear probe on per-band statistics.

Each file's first 4 s become one vector (per band: mean over time, standard deviation, mean
absolute frame-to-frame change); a logistic regression is trained on the train split and scored on
the eval split, bona fide against spoofs. Two modes:

    pairwise  bona fide vs each family alone (train and test on that family): can the features
              tell this vocoder from genuine speech at all?
    folds     bona fide vs all families but a fold's (the folds of training.generalization);
              test on every family: does the cue carry to unseen families?

    python tools/feature_probe.py --manifest corpus/manifest.csv --per-family 250 \\
        --frontend '{"kind": "logmel"}' --frontend '{"kind": "loglinear", "n_mels": 120}'

A cheap screen (minutes on the CPU), not an accuracy claim: the network sees local
time-frequency patterns that these statistics do not.
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

from engines.features import log_features  # noqa: E402
from engines.frontend_config import FrontEndConfig  # noqa: E402
from engines.audio_io import read_mono  # noqa: E402
from training.generalization import DEFAULT_FOLDS  # noqa: E402
from training.metrics import eer_from_spoof_scores  # noqa: E402

BONAFIDE = "-"
SECONDS = 4.0


def band_statistics(wave: np.ndarray, cfg: FrontEndConfig) -> np.ndarray:
    f = log_features(wave[: int(SECONDS * cfg.sample_rate)], cfg)
    return np.concatenate([f.mean(axis=1), f.std(axis=1), np.abs(np.diff(f, axis=1)).mean(axis=1)])


def _probe_eer(train: dict[str, np.ndarray], test_bona: np.ndarray, test_spoof: np.ndarray, spoof_keys: list[str]) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    xs = np.concatenate([train[k] for k in spoof_keys])
    x = np.r_[train[BONAFIDE], xs]
    y = np.r_[np.zeros(len(train[BONAFIDE])), np.ones(len(xs))]
    scaler = StandardScaler().fit(x)
    model = LogisticRegression(C=0.1, max_iter=5000, class_weight="balanced").fit(scaler.transform(x), y)
    sb = model.decision_function(scaler.transform(test_bona))
    ss = model.decision_function(scaler.transform(test_spoof))
    return eer_from_spoof_scores(np.r_[np.zeros(len(sb)), np.ones(len(ss))], np.r_[sb, ss])[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", type=Path, required=True, help="corpus manifest (path,label,...,attack,...,split)")
    ap.add_argument("--frontend", action="append", type=json.loads, required=True,
                    help="FrontEndConfig fields as JSON; repeat to compare")
    ap.add_argument("--mode", choices=("pairwise", "folds"), default="pairwise")
    ap.add_argument("--per-family", type=int, default=250, help="files per family and split (bona fide: 4x in folds mode)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        configs = [FrontEndConfig.from_dict(d) for d in args.frontend]
        with open(args.manifest, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        print(f"error: {args.manifest}: cannot read the manifest ({e.strerror or e})", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as e:
        print(f"error: --frontend: {e}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    families = sorted({r["attack"] for r in rows if r["label"] == "spoof"})
    n_bona = args.per_family * (4 if args.mode == "folds" else 1)

    def pick(split: str, attack: str, k: int) -> list[np.ndarray]:
        matching = [r for r in rows if r["split"] == split and r["attack"] == attack]
        chosen = [matching[i] for i in rng.permutation(len(matching))[:k]]
        return [read_mono(args.manifest.parent / r["path"]) for r in chosen]

    waves = {(s, a): pick(s, a, n_bona if a == BONAFIDE else args.per_family)
             for s in ("train", "eval") for a in [BONAFIDE, *families]}
    counts = ", ".join(f"{a if a != BONAFIDE else 'bonafide'} {len(waves[('eval', a)])}" for a in [BONAFIDE, *families])
    print(f"eval files: {counts}")
    for cfg in configs:
        feats = {k: np.stack([band_statistics(w, cfg) for w in v]) for k, v in waves.items()}
        train = {a: feats[("train", a)] for a in [BONAFIDE, *families]}
        name = f"{cfg.kind}/{cfg.n_features}"
        if args.mode == "pairwise":
            cells = [f"{fam} {100 * _probe_eer(train, feats[('eval', BONAFIDE)], feats[('eval', fam)], [fam]):.1f}%"
                     for fam in families]
            print(f"{name}: " + "; ".join(cells))
            continue
        for fold, held in DEFAULT_FOLDS.items():
            seen = [f for f in families if f not in held]
            cells = [f"{fam}{'*' if fam in held else ''} "
                     f"{100 * _probe_eer(train, feats[('eval', BONAFIDE)], feats[('eval', fam)], seen):.0f}%"
                     for fam in families]
            print(f"{name} without {fold} (* held out): " + "; ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
