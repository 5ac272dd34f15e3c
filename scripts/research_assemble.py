"""Research: small experts → one LSTM(5, 64) → joint fine-tune (docs/research/assemble.md).

Three steps, each its own command so that every attempt is one line of the results table
(appended to results/research/assemble/runs.jsonl with the exact command) and runs on ONE core:

  python scripts/research_assemble.py expert --freq 1 --seed 1 --hidden 16
  python scripts/research_assemble.py assemble --experts E1 E3 E5 E7 --hidden 64 --name A
  python scripts/research_assemble.py finetune --model A.pth --iterations 900 --name F

The data are config/config.yaml's literal task (w = π): validation seed 3 selects, test seed 2
(and 7, 11 for the final models) only reports. Expert training is the workflow's window recipe
(training.mode: window) through StatefulTrainer and WindowCurriculum; its stopping rule is in
iterations, not seconds, so a run is the same on every machine: stop `--patience` iterations
after the best frozen validation once it is below `--lock`, or at `--max-iterations`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
from torch import nn

from statetrain.checkpoint import save_checkpoint_file
from statetrain.config import dataset_spec, load_config
from statetrain.runner import load_model
from statetrain.tasks.frequency.assemble import assemble_experts, fine_tune
from statetrain.tasks.frequency.data import generate_dataset, generate_split
from statetrain.tasks.frequency.metrics import evaluate_streams
from statetrain.tasks.frequency.model import FrequencyLSTM
from statetrain.tasks.frequency.trainer import Split, StatefulTrainer, predict, set_seed
from statetrain.tasks.frequency.window import WindowCurriculum

OUT = Path("results/research/assemble")
log = logging.getLogger("statetrain")


def full_spec() -> dict[str, Any]:
    return dataset_spec(load_config("config/config.yaml"), "spec")


def record(row: dict[str, Any]) -> None:
    row = {"command": "python " + " ".join(sys.argv), **row}
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "runs.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps(row, indent=1))


def scores(model: nn.Module, spec: dict[str, Any], seed: int, reset: str) -> dict[str, float]:
    data = generate_dataset(
        frequencies=spec["frequencies"],
        fs=spec["fs"],
        duration_s=spec["duration_s"],
        amplitude_range=spec["amplitude_range"],
        phase_jitter=spec["phase_jitter"],
        seed=seed,
        streams=spec.get("streams"),
    )
    split = Split.from_array(data)
    m = evaluate_streams(
        split.y, predict(model, split, reset), split.starts, split.columns, spec["frequencies"]
    )
    return {k: round(v["mse"], 7) for k, v in m.items()}


def expert(args: argparse.Namespace) -> None:
    """Train one expert on one stream with the window recipe; keep the best validation."""
    spec = {**full_spec(), "streams": [args.freq]}
    column = spec["frequencies"].index(args.freq)
    train = Split.from_array(generate_split(spec, "train"))  # names the stream; batches: spec
    val = Split.from_array(generate_split(spec, "validation"))
    set_seed(args.seed)
    model = FrequencyLSTM(len(spec["frequencies"]) + 1, args.hidden, forget_bias=2.0)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    curriculum = WindowCurriculum(
        first=args.first,
        growth=1.25,
        streak=5,
        threshold=0.005,
        draws=args.draws,
        iterations=args.check_every,
        lr_floor=2e-4,
        seed=args.seed,
        spec=spec,
    )
    trainer = StatefulTrainer(
        model,
        train,
        nn.MSELoss(),
        opt,
        clip_grad_norm=1.0,
        val_loader=val,
        state_reset="stream",
        frequencies=spec["frequencies"],
        progress=False,
        window=curriculum,
        engine=args.engine,
    )
    t0 = time.perf_counter()
    best, best_it, best_t, best_window, best_state = np.inf, 0, 0.0, 0, None
    first_01 = first_lock = None
    it = 0
    stop = {"why": "max-iterations"}
    # SIGTERM (kill PID) ends the run cleanly: the best snapshot is saved and recorded.
    signal.signal(signal.SIGTERM, lambda *_: stop.update(why="SIGTERM"))
    while it < args.max_iterations and stop["why"] == "max-iterations":
        row = trainer.run_epoch()
        it += args.check_every
        now = time.perf_counter() - t0
        val_mse = row["val_mse"]
        if first_01 is None and val_mse < 0.01:
            first_01 = (it, round(now, 1))
        if first_lock is None and val_mse < args.lock:
            first_lock = (it, round(now, 1))
        if val_mse < best:
            best, best_it, best_t, best_window = val_mse, it, now, row["window"]
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        if it % 1000 == 0:
            log.info(
                "%g Hz seed %d it %d %.0fs window %d train %.5f val %.5f best %.6f@%d",
                args.freq,
                args.seed,
                it,
                now,
                row["window"],
                row["train_loss"],
                val_mse,
                best,
                best_it,
            )
        if best < args.lock and it - best_it >= args.patience:
            stop["why"] = "patience"
        if args.max_seconds and now >= args.max_seconds:
            stop["why"] = "max-seconds"
    seconds = time.perf_counter() - t0
    model.load_state_dict(best_state)
    path = Path(args.out or OUT / f"experts/f{args.freq:g}_s{args.seed}_h{args.hidden}.pth")
    save_checkpoint_file(
        {
            "model_state_dict": model.state_dict(),
            "model_args": {"input_size": model.input_size, "hidden_size": args.hidden},
            "freq": args.freq,
            "column": column,
            "seed": args.seed,
        },
        path,
    )
    record(
        {
            "step": "expert",
            "freq": args.freq,
            "seed": args.seed,
            "hidden": args.hidden,
            "lr": args.lr,
            "first": args.first,
            "draws": args.draws,
            "engine": trainer.engine,
            "iterations": it,
            "stopped_by": stop["why"],
            "seconds": round(seconds, 1),
            "ms_per_iteration": round(1000 * seconds / it, 1),
            "first_val_below_0.01": first_01,
            f"first_val_below_{args.lock:g}": first_lock,
            "best_val": round(float(best), 7),
            "best_iteration": best_it,
            "best_seconds": round(best_t, 1),
            "window_at_best": best_window,
            "final_window": curriculum.window,
            "test_seed2": scores(model, spec, 2, "stream")["overall"],
            "path": str(path),
        }
    )


def assemble(args: argparse.Namespace) -> None:
    """Experts → one model; scored per stream (reset) and carried through the file."""
    spec = full_spec()
    # Several experts for one frequency (e.g. 1 Hz from three seeds): the lowest frozen
    # validation MSE (seed 3) on its own stream wins; the test split plays no part.
    experts, chosen = {}, {}
    for p in args.experts:
        model, ckpt = load_model(p)
        k = int(ckpt["column"])
        own = {**spec, "streams": [spec["frequencies"][k]]}
        val = scores(model, own, 3, "stream")["overall"]
        log.info("%s: validation %.6f", p, val)
        if k not in chosen or val < chosen[k][1]:
            experts[k], chosen[k] = model, (p, val)
    t0 = time.perf_counter()
    model = assemble_experts(
        experts, args.hidden, closing_weight=args.closing_weight, close_forget=not args.no_forget
    )
    seconds = time.perf_counter() - t0
    path = OUT / f"{args.name}.pth"
    save_checkpoint_file(
        {
            "model_state_dict": model.state_dict(),
            "model_args": {"input_size": model.input_size, "hidden_size": model.hidden_size},
            "experts": list(args.experts),
        },
        path,
    )
    record(
        {
            "step": "assemble",
            "name": args.name,
            "experts": list(args.experts),
            "chosen": {spec["frequencies"][k]: chosen[k] for k in sorted(chosen)},
            "parameters": model.count_parameters(),
            "seconds": round(seconds, 2),
            "val_seed3": scores(model, spec, 3, "stream"),
            "test_seed2": scores(model, spec, 2, "stream"),
            "test_seed2_carried": scores(model, spec, 2, "epoch")["overall"],
            "path": str(path),
        }
    )


def finetune(args: argparse.Namespace) -> None:
    """Joint fine-tune of an assembled model; the best frozen validation is kept."""
    spec = full_spec()
    model, _ = load_model(args.model)
    val = Split.from_array(generate_split(spec, "validation"))
    result = fine_tune(
        model,
        spec,
        val,
        spec["frequencies"],
        iterations=args.iterations,
        check_every=args.check_every,
        lr=args.lr,
        draws=args.draws,
        seed=args.seed,
    )
    path = OUT / f"{args.name}.pth"
    save_checkpoint_file(
        {
            "model_state_dict": result.model.state_dict(),
            "model_args": {"input_size": model.input_size, "hidden_size": model.hidden_size},
            "from": args.model,
        },
        path,
    )
    curve = [(h["iteration"], round(h["val_mse"], 6)) for h in result.history]
    record(
        {
            "step": "finetune",
            "name": args.name,
            "from": args.model,
            "lr": args.lr,
            "seed": args.seed,
            "iterations": result.iterations,
            "seconds": round(result.seconds, 1),
            "start_val": round(result.start_val, 7),
            "best_val": round(result.best_val, 7),
            "best_iteration": result.best_iteration,
            "val_seed3": scores(result.model, spec, 3, "stream"),
            "test_seed2": scores(result.model, spec, 2, "stream"),
            "test_seed2_carried": scores(result.model, spec, 2, "epoch")["overall"],
            "test_seed7": scores(result.model, spec, 7, "stream")["overall"],
            "test_seed11": scores(result.model, spec, 11, "stream")["overall"],
            "val_curve_every_10th": curve[::10],
            "path": str(path),
        }
    )


def table(_: argparse.Namespace) -> None:
    """Every recorded attempt as markdown rows (docs/research/assemble.md)."""
    rows = [json.loads(line) for line in (OUT / "runs.jsonl").read_text().splitlines()]
    print("| # | step | what | core-s | result (val seed 3 / test seed 2) | command |")
    print("|---|---|---|---|---|---|")
    for i, r in enumerate(rows, 1):
        if r["step"] == "expert":
            lock = r.get("first_val_below_0.001")
            what = f"{r['freq']:g} Hz, seed {r['seed']}, {r['hidden']} units"
            if r.get("first"):
                what += f", first window {r['first']}"
            if r.get("lr", 3e-3) != 3e-3:
                what += f", lr {r['lr']:g}"
            res = (
                f"best val {r['best_val']:.5f} at it {r['best_iteration']} "
                f"({r['best_seconds']:.0f} s, window {r['window_at_best']}); test "
                f"{r['test_seed2']:.5f}; val<0.001 first at "
                + (f"it {lock[0]} ({lock[1]:.0f} s)" if lock else "never")
                + f"; ran {r['iterations']} it"
                + (f", stopped by {r['stopped_by']}" if "stopped_by" in r else "")
            )
        else:
            what = r["name"]
            test = r["test_seed2"]
            per = " / ".join(f"{test[k]:.5f}" for k in test if k != "overall")
            res = (
                f"val {r['val_seed3']['overall']:.5f}, test {test['overall']:.5f} ({per}), "
                f"carried {r['test_seed2_carried']:.5f}"
            )
            if r["step"] == "finetune":
                res += (
                    f"; start val {r['start_val']:.5f}, best at it {r['best_iteration']}"
                    f"/{r['iterations']}; test seed 7 {r['test_seed7']:.5f}, "
                    f"seed 11 {r['test_seed11']:.5f}"
                )
        print(f"| {i} | {r['step']} | {what} | {r['seconds']:.0f} | {res} | `{r['command']}` |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="step", required=True)
    e = sub.add_parser("expert")
    e.add_argument("--freq", type=float, required=True)
    e.add_argument("--seed", type=int, required=True)
    e.add_argument("--hidden", type=int, default=16)
    e.add_argument("--lr", type=float, default=3e-3)
    e.add_argument("--first", type=int, default=0, help="first window; 0 = max(300, 2 periods)")
    e.add_argument("--check-every", type=int, default=20)
    e.add_argument("--draws", type=int, default=8, help="fresh noise draws per iteration")
    e.add_argument("--engine", default="torch", choices=["torch", "native", "auto"])
    e.add_argument("--max-iterations", type=int, default=30000)
    e.add_argument("--lock", type=float, default=0.001)
    e.add_argument("--patience", type=int, default=3000)
    e.add_argument("--max-seconds", type=float, help="wall-clock cap (not reproducible)")
    e.add_argument("--out")
    a = sub.add_parser("assemble")
    a.add_argument("--experts", nargs="+", required=True)
    a.add_argument("--hidden", type=int, default=64)
    a.add_argument("--closing-weight", type=float, default=-30.0)
    a.add_argument("--no-forget", action="store_true", help="close the input gates only")
    a.add_argument("--name", required=True)
    f = sub.add_parser("finetune")
    f.add_argument("--model", required=True)
    f.add_argument("--iterations", type=int, default=900)
    f.add_argument("--check-every", type=int, default=10)
    f.add_argument("--lr", type=float, default=3e-5)
    f.add_argument("--draws", type=int, default=2)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--name", required=True)
    sub.add_parser("table")
    args = p.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    steps = {"expert": expert, "assemble": assemble, "finetune": finetune, "table": table}
    steps[args.step](args)


if __name__ == "__main__":
    main()
