"""The `statetrain` command: the rules' code, run by hand, for every task.

    statetrain data --config config/config.yaml --dataset spec    prepare and check splits
    statetrain train --config config/config.yaml --dataset spec --set lr=0.003 [--quick]
    statetrain evaluate CHECKPOINT DATA           frozen metrics, one JSON object on stdout
    statetrain export CHECKPOINT OUT.onnx         ONNX export, checked with onnxruntime
    statetrain predict CHECKPOINT DATA OUT        predictions, .npy or .csv by OUT's suffix

`train` is exactly `python scripts/train.py` (the train rule's script run by hand). Every
error is one paragraph (what is wrong, where, the fix) on stderr with exit status 1; add
`--debug` for the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import __version__, scripting
from .config import dataset_spec, training_config


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="spec", help="dataset scenario of the config to train")
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="training keys for this run (a grid point), e.g. lr=0.003 hidden_size=32",
    )
    p.add_argument("--quick", action="store_true", help="2 epochs into results/quick/")
    p.add_argument("--out", help="run directory (default: the workflow's results/runs/...)")


def data(args: argparse.Namespace) -> dict:
    """Prepare and check a dataset's splits where the workflow keeps them."""
    from .experiment import prepare_data

    cfg = scripting.load(args)
    with scripting.rule_logging(args.log, echo=True):
        return prepare_data(cfg, args.dataset)


def train(args: argparse.Namespace) -> dict:
    """One run, resumable, into the directory the workflow would use for that grid point."""
    from .experiment import split_paths
    from .layout import Layout
    from .runner import run

    cfg = scripting.load(args)
    point = scripting.parse_assignments(args.set)
    if args.quick:
        point["epochs"] = 2
    training = training_config(cfg, point, args.dataset)
    spec = dataset_spec(cfg, args.dataset)
    task = cfg["task"]
    paths = split_paths(cfg, args.dataset)
    # Named like the workflow's run of that grid point; epochs is left out of the name because
    # raising it continues the same run.
    named = {k: v for k, v in point.items() if k != "epochs"}
    name = scripting.grid_point_name(named or {"seed": training["seed"]})
    layout = Layout.of(cfg)
    root = layout.quick if args.quick else layout.runs
    out = args.out or root.format(dataset=args.dataset, grid_point=name)
    labels = {"dataset": args.dataset, "grid_point": name}
    with scripting.rule_logging(args.log, echo=True):
        return run(
            task,
            spec,
            training,
            paths,
            out,
            labels=labels,
            logging_cfg=cfg["logging"],
            progress=True,
        )


def evaluate(args: argparse.Namespace) -> dict:
    """Frozen-weight metrics of a checkpoint on a split file of its task."""
    from .inference import evaluate_checkpoint
    from .io import jsonable, refuse_overwrite, write_json

    if args.out:  # refused before any work, not after
        refuse_overwrite(args.out, [args.checkpoint, args.data])
    metrics = evaluate_checkpoint(args.checkpoint, args.data, state_reset=args.state_reset)
    if args.out:
        write_json(metrics, args.out, protect=[args.checkpoint, args.data])
    # Strict JSON on stdout: a metric that is not a number (NaN) is null.
    print(json.dumps(jsonable(metrics), indent=2, allow_nan=False, default=str))
    return metrics


def predict(args: argparse.Namespace) -> dict:
    """The frozen model's predictions for every row (or sequence) of DATA, written to OUT."""
    from .inference import predict_checkpoint

    with scripting.rule_logging(None):
        return predict_checkpoint(
            args.checkpoint, args.data, args.out, state_reset=args.state_reset
        )


def export(args: argparse.Namespace) -> dict:
    from .export import export_checkpoint

    report = args.check_out or str(args.out).removesuffix(".onnx") + ".check.json"
    with scripting.rule_logging(args.log, echo=True):
        return export_checkpoint(
            args.checkpoint, args.out, args.data, opset=args.opset, report_path=report
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="statetrain",
        description="Train stateful recurrent models one step at a time; evaluate, export "
        "and predict with any trained statetrain checkpoint.",
    )
    parser.add_argument("--version", action="version", version=f"statetrain {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p_train = sub.add_parser("train", help="train (or resume) one run of a config's grid")
    p_train.add_argument(
        "--config",
        nargs="+",
        default=["config/config.yaml"],
        help="config file(s), merged in order (default: config/config.yaml)",
    )
    p_train.add_argument("--log", default=None, help="also write the log to this file")
    add_train_arguments(p_train)
    p_train.set_defaults(func=train)

    p_data = sub.add_parser(
        "data", help="prepare and check a dataset's splits (what the workflow trains on)"
    )
    p_data.add_argument(
        "--config",
        nargs="+",
        default=["config/config.yaml"],
        help="config file(s), merged in order (default: config/config.yaml)",
    )
    p_data.add_argument("--dataset", default="spec", help="dataset scenario of the config")
    p_data.add_argument("--log", default=None, help="also write the log to this file")
    p_data.set_defaults(func=data)

    reset_help = (
        "stateful models: where the state restarts from zero (default for evaluate: as the "
        "checkpoint was trained and scored; for predict: each stream's start)"
    )
    p_eval = sub.add_parser(
        "evaluate", help="frozen metrics of a checkpoint on a split, as JSON on stdout"
    )
    p_eval.add_argument("checkpoint", metavar="CHECKPOINT", help="a statetrain .pth file")
    p_eval.add_argument(
        "data", metavar="DATA", help="a split file of the checkpoint's task (.npy or .npz)"
    )
    p_eval.add_argument("--state-reset", choices=("epoch", "stream"), help=reset_help)
    p_eval.add_argument("--out", help="also write the metrics as JSON to this file")
    p_eval.set_defaults(func=evaluate)

    p_pred = sub.add_parser("predict", help="write a checkpoint's predictions for a data file")
    p_pred.add_argument("checkpoint", metavar="CHECKPOINT", help="a statetrain .pth file")
    p_pred.add_argument(
        "data", metavar="DATA", help="a split file of the checkpoint's task (.npy or .npz)"
    )
    p_pred.add_argument("out", metavar="OUT", help="output file: .npy or .csv")
    p_pred.add_argument("--state-reset", choices=("epoch", "stream"), help=reset_help)
    p_pred.set_defaults(func=predict)

    p_exp = sub.add_parser("export", help="export a checkpoint to ONNX (no training)")
    p_exp.add_argument("checkpoint", metavar="CHECKPOINT", help="a statetrain .pth file")
    p_exp.add_argument("out", metavar="OUT.onnx", help="the ONNX file to write")
    p_exp.add_argument(
        "--data",
        help="a split file of the checkpoint's task to check the export on (onnxruntime vs "
        "PyTorch, ≤ 1e-4; default: a fixed random probe of the model's input shape)",
    )
    p_exp.add_argument("--check-out", help="check report (default: <out>.check.json)")
    p_exp.add_argument("--opset", type=int, default=17, help="ONNX opset (9-20, default 17)")
    p_exp.add_argument("--log", default=None, help="also write the log to this file")
    p_exp.set_defaults(func=export)
    return parser


def error_paragraph(exc: BaseException) -> str:
    """The one paragraph a user sees: the library's own message, or for anything unexpected
    what happened and how to get the traceback."""
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .validation import DatasetError

    known = (CheckpointError, ConfigError, DatasetError, OSError)
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, known) or type(exc).__module__.startswith("statetrain"):
        return text
    return (
        f"unexpected {type(exc).__name__}: {text}. Run the same command with --debug for the "
        "traceback; if the input is valid, this is a bug worth reporting."
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt:
        print(f"statetrain {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"statetrain {args.command}: error: {error_paragraph(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
