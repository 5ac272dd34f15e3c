"""Benchmark: the seed's per-step PyTorch loop against the native whole-epoch kernel.

    python scripts/bench.py [--out results/bench/bench.json] [--steps 3000] [--hidden 64]

In one process, on the full-size task (4 streams x 10,000 rows, the assignment's training
split), with torch pinned to one thread (the kernel is single-threaded too):

  (a) the assignment's reference loop as written (DataLoader batch_size=1, FrequencyLSTM, Adam lr
      1e-3, MSELoss, clip_grad_norm_ 1.0, per step forward/backward/step/detach): ``--steps``
      steps timed after a short warm-up, scaled to one epoch;
  (b) native.train_epoch on whole epochs, after native.warmup() (JIT compile excluded):
      the median of ``--epochs`` consecutive epochs of one run;
  (c) native.evaluate (frozen forward) on all rows, and torch's frozen whole-sequence forward
      for comparison: the median of 3.

Prints a table and writes the figures, the ratio, the thread count, versions, CPU model,
load average and date as JSON. A benchmark, not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

try:
    import statetrain  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from statetrain.io import write_json
from statetrain.scripting import cpu_model
from statetrain.tasks.frequency import native
from statetrain.tasks.frequency.model import FrequencyLSTM


def task_data(seed: int = 1) -> np.ndarray:
    """(40000, 6) float32 [S, C1..C4, target]: the library's generator, or the same inline."""
    try:
        from statetrain.tasks.frequency.data import generate_dataset

        return generate_dataset(seed=seed)
    except ImportError:
        freqs = np.array([1.0, 3.0, 5.0, 7.0])
        t = np.arange(10_000) / 1000.0
        rng = np.random.default_rng(seed)
        amp = rng.uniform(0.8, 1.2, size=(4, t.size))
        phase = rng.uniform(-np.pi, np.pi, size=(4, t.size))
        s = np.mean(amp * np.sin(2 * np.pi * freqs[:, None] * t + phase), axis=0)
        blocks = []
        for i, f in enumerate(freqs):
            block = np.zeros((t.size, 6))
            block[:, 0] = s
            block[:, 1 + i] = 1.0
            block[:, 5] = np.sin(2 * np.pi * f * t)
            blocks.append(block)
        return np.concatenate(blocks).astype(np.float32)


def seed_loader(data: np.ndarray, tmp: Path):
    """The assignment's DataLoader(batch_size=1, shuffle=False) over its FrequencyDataset."""
    from torch.utils.data import DataLoader, TensorDataset

    try:
        from statetrain.tasks.frequency.data import FrequencyDataset

        path = tmp / "train.npy"
        np.save(path, data)
        dataset, kind = FrequencyDataset(path), "FrequencyDataset"
    except ImportError:
        x, y = torch.from_numpy(data[:, :5].copy()), torch.from_numpy(data[:, 5:].copy())
        dataset, kind = TensorDataset(x, y), "TensorDataset"
    return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0), kind


def time_reference(data: np.ndarray, hidden: int, steps: int, warmup: int = 50) -> dict:
    torch.manual_seed(0)
    model = FrequencyLSTM(hidden_size=hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = torch.nn.MSELoss()
    model.train()
    with tempfile.TemporaryDirectory() as tmp:
        loader, kind = seed_loader(data, Path(tmp))
        state = None
        start = None
        for done, (inputs, targets) in enumerate(loader):
            if done == warmup:
                start = time.perf_counter()
            output, state = model(inputs.unsqueeze(1), state)
            loss = criterion(output, targets)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            state = tuple(s.detach() for s in state)
            _ = loss.item()  # the seed reads the loss every step
            if done + 1 == warmup + steps:
                break
        elapsed = time.perf_counter() - start
    per_step = elapsed / steps
    return {
        "dataset": kind,
        "steps_timed": steps,
        "warmup_steps": warmup,
        "s_per_step": per_step,
        "s_per_epoch": per_step * len(data),
    }


def time_native(data: np.ndarray, hidden: int, epochs: int) -> dict:
    x = np.ascontiguousarray(data[:, :5])
    y = np.ascontiguousarray(data[:, 5])
    starts = np.arange(0, len(data), len(data) // 4)
    t0 = time.perf_counter()
    native.warmup()
    warmup_s = time.perf_counter() - t0
    torch.manual_seed(0)
    model = FrequencyLSTM(hidden_size=hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_times, losses = [], []
    for _ in range(epochs):
        t0 = time.perf_counter()
        res = native.train_epoch(
            model, optimizer, x, y, starts, tbptt_steps=1, state_reset="epoch", clip_grad_norm=1.0
        )
        train_times.append(time.perf_counter() - t0)
        losses.append(res.loss)
    eval_times, torch_eval_times = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        pred = native.evaluate(model, x, starts, state_reset="epoch")
        eval_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with torch.no_grad():
            expected, _ = model(torch.from_numpy(x)[None], None)
        torch_eval_times.append(time.perf_counter() - t0)
    return {
        "warmup_s": warmup_s,
        "train_epoch_s": train_times,
        "train_s_per_epoch": statistics.median(train_times),
        "online_loss": losses,
        "evaluate_s": eval_times,
        "evaluate_s_median": statistics.median(eval_times),
        "torch_forward_s_median": statistics.median(torch_eval_times),
        "evaluate_max_abs_diff_vs_torch": float(np.abs(pred - expected[0].numpy()).max()),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/bench/bench.json")
    parser.add_argument("--steps", type=int, default=3000, help="reference-loop steps timed")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3, help="native epochs timed")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    import numba

    data = task_data()
    ref = time_reference(data, args.hidden, args.steps)
    nat = time_native(data, args.hidden, args.epochs)
    ratio = ref["s_per_epoch"] / nat["train_s_per_epoch"]
    result = {
        "rows_per_epoch": len(data),
        "hidden_size": args.hidden,
        "options": "tbptt_steps=1, state_reset=epoch, clip_grad_norm=1.0, Adam lr 1e-3",
        "reference_loop": ref,
        "native": nat,
        "speedup": ratio,
        "torch_threads": torch.get_num_threads(),
        "native_threads": 1,
        "load_average_after": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numba": numba.__version__,
            "numpy": np.__version__,
        },
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(
            [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
        ),
    }
    rows = [
        ("seed reference loop (train)", ref["s_per_epoch"], f"{ref['steps_timed']} steps scaled"),
        ("native train_epoch", nat["train_s_per_epoch"], f"median of {args.epochs} epochs"),
        ("native evaluate (frozen)", nat["evaluate_s_median"], "median of 3"),
        ("torch forward (frozen)", nat["torch_forward_s_median"], "median of 3"),
    ]
    print(f"{len(data):,} rows/epoch, hidden {args.hidden}, torch threads 1, {cpu_model()}")
    print(f"{'':32s}{'s/epoch':>10s}")
    for name, seconds, note in rows:
        print(f"{name:32s}{seconds:10.3f}   {note}")
    print(f"speedup native vs reference: {ratio:.0f}x (native JIT warm-up {nat['warmup_s']:.1f} s)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(result, out)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
