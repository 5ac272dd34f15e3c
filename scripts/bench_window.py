"""Benchmark: one whole-window training iteration, PyTorch's sequence LSTM against the native
window kernel (statetrain/tasks/frequency/native_window.py).

    python scripts/bench_window.py [--out results/bench/window.json] [--repeats 5]

One iteration = B sequences of L rows from a zero state, MSE, backward through the whole
window, clip_grad_norm_ 1.0, Adam: what `training.mode: window` does per optimizer step. The
shapes are the issue-19 recipe's: 16-unit experts on one stream with 2 or 8 fresh draws, at
the first 1 Hz window (2,000 rows) and at the full stream (10,000), and the assembled
LSTM(5, 64) fine-tuned on 2 draws × 4 streams. Both engines run interleaved in one process
(torch pinned to one thread, like the kernel), each configuration `--repeats` times; the
medians and their ratio are printed and written as JSON. A benchmark, not a test: numbers
depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

try:
    import statetrain  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from statetrain.io import write_json
from statetrain.scripting import cpu_model
from statetrain.tasks.frequency.model import FrequencyLSTM
from statetrain.tasks.frequency.native_window import WindowSession

SHAPES = [(16, 2_000, 2), (16, 2_000, 8), (16, 10_000, 2), (16, 10_000, 8), (64, 10_000, 8)]


def _batch(n_b: int, n_t: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n_b, n_t, 5)).astype(np.float32)
    t = np.arange(n_t, dtype=np.float32) / 1000
    y = np.sin(2 * np.pi * t + rng.uniform(0, 6, (n_b, 1))).astype(np.float32)
    return x, y


def time_shape(hidden: int, n_t: int, n_b: int, repeats: int) -> dict:
    x, y = _batch(n_b, n_t)
    torch.manual_seed(0)
    a = FrequencyLSTM(5, hidden, forget_bias=2.0)
    b = FrequencyLSTM(5, hidden, forget_bias=2.0)
    b.load_state_dict(a.state_dict())
    opt_a = torch.optim.Adam(a.parameters(), lr=1e-4)
    opt_b = torch.optim.Adam(b.parameters(), lr=1e-4)
    crit = nn.MSELoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    params = list(a.parameters())

    def torch_step() -> None:
        out, _ = a(xt, None)
        loss = crit(out, yt)
        opt_a.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt_a.step()

    session = WindowSession(b, opt_b, 1.0)
    session.step(x, y, 1e-4)  # compile (or load the cached kernel)
    torch_step()
    t_torch, t_native = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch_step()
        t_torch.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        session.step(x, y, 1e-4)
        t_native.append(time.perf_counter() - t0)
    session.close()
    torch_ms = 1000 * statistics.median(t_torch)
    native_ms = 1000 * statistics.median(t_native)
    return {
        "hidden_size": hidden,
        "rows": n_t,
        "sequences": n_b,
        "torch_ms": round(torch_ms, 2),
        "native_ms": round(native_ms, 2),
        "speedup": round(torch_ms / native_ms, 2),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/bench/window.json")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = [time_shape(h, n_t, n_b, args.repeats) for h, n_t, n_b in SHAPES]
    print(f"one window iteration (forward, backward, clip, Adam), torch 1 thread, {cpu_model()}")
    print(f"{'hidden':>7s}{'rows':>8s}{'seqs':>6s}{'torch ms':>10s}{'native ms':>11s}{'ratio':>7s}")
    for r in rows:
        print(
            f"{r['hidden_size']:7d}{r['rows']:8d}{r['sequences']:6d}{r['torch_ms']:10.1f}"
            f"{r['native_ms']:11.1f}{r['speedup']:7.2f}"
        )
    result = {
        "iterations": rows,
        "repeats": args.repeats,
        "cpu_model": cpu_model(),
        "load_average_after": os.getloadavg(),
        "torch": torch.__version__,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(result, out)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
