"""Find the mel analysis a pretrained vocoder expects, by how well it reproduces real speech.

A vocoder trained on one mel recipe garbles speech analysed with another, so the settings that
minimise the distance between the input and the vocoded speech are the vocoder's own. The
distance is measured with a fixed reference log-mel (n_fft 512, window 400, hop 160 at 16 kHz),
never with the candidate's own analysis, so no candidate is favoured by its own yardstick.

    python tools/fit_vocoder_mel.py --vocoder hifigan-16k --files 3 --win 256 320 400 512
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.synth.audio import load_audio  # noqa: E402
from training.synth.base import SynthInput, make_generator  # noqa: E402
from training.synth.neural_vocoder import HifiganCopySynthesis, mel_distance  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocoder", default="hifigan-16k", help="a neural-vocoder generator name")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "bonafide")
    p.add_argument("--files", type=int, default=3, help="speech files (the first of each source folder)")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--n-fft", type=int, nargs="+", default=[512, 1024])
    p.add_argument("--win", type=int, nargs="+", default=[320, 400, 512, 640, 1024])
    p.add_argument("--f-min", type=float, nargs="+", default=[0.0])
    p.add_argument("--f-max", type=float, nargs="+", default=[7600.0, 8000.0])
    p.add_argument("--power", type=float, nargs="+", default=[1.0, 2.0])
    p.add_argument("--out", type=Path, help="write the ranking as JSON")
    args = p.parse_args(argv)

    gen = make_generator(args.vocoder)
    if not isinstance(gen, HifiganCopySynthesis):
        p.error(f"{args.vocoder} is not a mel-driven neural vocoder")
    folders = sorted(d for d in args.data.iterdir() if d.is_dir())
    files = [next(iter(sorted(d.glob("*.flac")))) for d in folders][: args.files]
    speech = [load_audio(f, args.seconds) for f in files]
    net = gen.network()
    base = gen.mel
    rows = []
    for n_fft, win, f_min, f_max, power in itertools.product(args.n_fft, args.win, args.f_min, args.f_max, args.power):
        if win > n_fft:
            continue
        mel = dataclasses.replace(base, n_fft=n_fft, win_length=win, f_min=f_min, f_max=f_max, power=power)
        type(gen).mel = mel  # the generator reads its analysis from the class
        scores = [mel_distance(x, gen(SynthInput(rng=np.random.default_rng(0), audio=x))) for x in speech]
        rows.append({"n_fft": n_fft, "win_length": win, "f_min": f_min, "f_max": f_max, "power": power,
                     "distance": round(float(np.mean(scores)), 4)})
        print(json.dumps(rows[-1]), flush=True)
    type(gen).mel = base
    rows.sort(key=lambda r: r["distance"])
    print("best:", json.dumps(rows[0]), f"({len(files)} files: {', '.join(f.name for f in files)}; net {type(net).__name__})")
    if args.out:
        args.out.write_text(json.dumps({"vocoder": args.vocoder, "files": [str(f) for f in files], "ranking": rows},
                                       indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
