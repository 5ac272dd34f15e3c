"""Research: how much of a frequency model's test MSE is the one noise draw it was tested on.

A test split is one draw of the phase and amplitude noise. This scores a checkpoint on
`--draws` fresh draws of the literal task's data (config/config.yaml's generator; `--streams`
the frequencies an expert was trained on; generator seeds 100, 101, ..., none a workflow
split) and splits the mean squared error into the bias² of the mean prediction and the variance
across draws (docs/research/assemble.md, session 7):

  python scripts/research_noise_draws.py results/runs/f5/seed~3/best_model.pth --streams 5

A model whose error is variance is driven by the noise (its weights on S); one whose error is
bias² is a deterministic oscillator that is slightly off.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from statetrain.inference import load_model
from statetrain.tasks.frequency.data import generate_dataset
from statetrain.tasks.frequency.trainer import Split, predict


def noise_draws(checkpoint: str, draws: int, streams: list[float] | None) -> dict[str, float]:
    """MSE over `draws` fresh noise draws of the literal task, and its bias² and variance."""
    model, ckpt = load_model(checkpoint)
    preds, target = [], None
    for k in range(draws):
        data = generate_dataset(
            frequencies=ckpt.get("frequencies") or (1, 3, 5, 7), streams=streams, seed=100 + k
        )
        split = Split.from_array(data)
        preds.append(predict(model, split, "stream"))
        target = split.y
    p = np.stack(preds)
    mean = p.mean(axis=0)
    return {
        "mse": float(((p - target) ** 2).mean()),
        "bias2": float(((mean - target) ** 2).mean()),
        "variance": float(((p - mean) ** 2).mean() * draws / max(draws - 1, 1)),
        "worst_draw": float(((p - target) ** 2).mean(axis=1).max()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--draws", type=int, default=8)
    parser.add_argument("--streams", type=float, nargs="*", help="an expert's frequencies")
    args = parser.parse_args(argv)
    for path in args.checkpoints:
        r = noise_draws(path, args.draws, args.streams)
        print(
            f"{path}: mse {r['mse']:.5f} = bias² {r['bias2']:.5f} + variance "
            f"{r['variance']:.5f}; worst of {args.draws} draws {r['worst_draw']:.5f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
