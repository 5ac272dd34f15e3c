"""The `statetrain` command: the rules' code, run by hand.

    statetrain train --config config/config.yaml --dataset spec --set lr=0.003 [--quick]
    statetrain evaluate --checkpoint results/best/spec/best_model.pth --data test.npy
    statetrain export --checkpoint results/best/spec/best_model.pth --out model.onnx [--data ...]

`train` is exactly `python scripts/train.py` (the train rule's script run by hand); `export`
is the export-only mode of the export_onnx rule.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import __version__, scripting
from .config import dataset_spec, training_config, user_paths
from .io import write_json


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="spec")
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="training keys for this run (a grid point), e.g. lr=0.003 hidden_size=32",
    )
    p.add_argument("--quick", action="store_true", help="2 epochs into results/quick/")
    p.add_argument("--out", help="run directory (default: the workflow's results/runs/...)")


def train(args: argparse.Namespace) -> dict:
    """One run, resumable, into the directory the workflow would use for that grid point."""
    from .runner import train_run

    cfg = scripting.load(args)
    point = scripting.parse_assignments(args.set)
    if args.quick:
        point["epochs"] = 2
    training = training_config(cfg, point, args.dataset)
    spec = dataset_spec(cfg, args.dataset)
    task = cfg["task"]
    given = user_paths(spec) if task == "frequency" else {}
    paths = given or {
        s: scripting.data_path(cfg, args.dataset, s) for s in ("train", "validation", "test")
    }
    # Named like the workflow's run of that grid point; epochs is left out of the name because
    # raising it continues the same run.
    named = {k: v for k, v in point.items() if k != "epochs"}
    name = scripting.grid_point_name(named or {"seed": training["seed"]})
    root = "results/quick/{dataset}/{grid_point}" if args.quick else scripting.RUN
    out = args.out or root.format(dataset=args.dataset, grid_point=name)
    labels = {"dataset": args.dataset, "grid_point": name}
    with scripting.rule_logging(args.log, echo=True):
        if task != "frequency":
            from .runner import train_batch_run

            return train_batch_run(
                task, training, paths, out, spec, labels=labels, logging_cfg=cfg["logging"]
            )
        return train_run(
            training,
            paths,
            out,
            spec["frequencies"],
            min_stream_length=spec["min_stream_length"],
            labels=labels,
            progress=True,
            logging_cfg=cfg["logging"],
            data_spec=spec,
        )


def evaluate(args: argparse.Namespace) -> dict:
    """Frozen-weight metrics of a checkpoint on a split, state carried as in training."""
    from .metrics import evaluate_streams
    from .runner import load_model
    from .trainer import Split, predict
    from .validation import load_array, validate_array

    model, ckpt = load_model(args.checkpoint)
    array = load_array(args.data)
    validate_array(array, path=args.data)
    split = Split.from_array(array)
    state_reset = args.state_reset or ckpt.get("state_reset", "epoch")
    pred = predict(model, split, state_reset)
    freqs = ckpt.get("frequencies") or list(range(1, 1 + len(split.starts)))
    metrics = evaluate_streams(split.y, pred, split.starts, split.columns, freqs)
    if args.out:
        write_json(metrics, args.out)
    print(json.dumps(metrics, indent=2))
    return metrics


def export(args: argparse.Namespace) -> dict:
    from .export import export_checkpoint

    report = args.check_out
    if args.data and not report:
        report = args.out.removesuffix(".onnx") + ".check.json"
    with scripting.rule_logging(args.log, echo=True):
        return export_checkpoint(
            args.checkpoint, args.out, args.data, opset=args.opset, report_path=report
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="statetrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p_train = sub.add_parser("train", help="train (or resume) one run")
    p_train.add_argument("--config", nargs="+", default=["config/config.yaml"])
    p_train.add_argument("--log", default=None)
    add_train_arguments(p_train)
    p_train.set_defaults(func=train)

    p_eval = sub.add_parser("evaluate", help="frozen metrics of a checkpoint on a .npy split")
    p_eval.add_argument("--checkpoint", required=True)
    p_eval.add_argument("--data", required=True)
    p_eval.add_argument("--state-reset", choices=("epoch", "stream"))
    p_eval.add_argument("--out", help="also write the metrics as JSON here")
    p_eval.set_defaults(func=evaluate)

    p_exp = sub.add_parser("export", help="export a checkpoint to ONNX (no training)")
    p_exp.add_argument("--checkpoint", required=True)
    p_exp.add_argument("--out", required=True)
    p_exp.add_argument("--data", help="a .npy split to check the export on")
    p_exp.add_argument("--check-out", help="check report (default: <out>.check.json)")
    p_exp.add_argument("--opset", type=int, default=17)
    p_exp.add_argument("--log", default=None)
    p_exp.set_defaults(func=export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
