"""Rule train: one grid point on one dataset, resumable from its last.pth.

By hand: python scripts/train.py --config config/config.yaml --dataset spec --set lr=0.003
(add --quick for a 2-epoch smoke run into results/quick/).
"""

from pathlib import Path

from statetrain import scripting
from statetrain.config import dataset_spec, training_config, user_paths
from statetrain.runner import train_run

if "snakemake" in globals():
    sm = globals()["snakemake"]
    with scripting.rule_logging(sm.log[0]):
        train_run(
            {**sm.params.training, "threads": sm.threads},
            {"train": sm.input.train, "validation": sm.input.validation, "test": sm.input.test},
            Path(sm.output.model).parent,
            sm.params.frequencies,
            min_stream_length=sm.params.min_stream_length,
            labels=sm.params.labels,
            logging_cfg=sm.params.logging,
        )
elif __name__ == "__main__":
    p = scripting.parser(__doc__)
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
    args = p.parse_args()
    cfg = scripting.load(args)
    point = scripting.parse_assignments(args.set)
    if args.quick:
        point["epochs"] = 2
    training = training_config(cfg, point)
    spec = dataset_spec(cfg, args.dataset)
    paths = user_paths(spec) or {
        s: scripting.DATA.format(dataset=args.dataset, split=s)
        for s in ("train", "validation", "test")
    }
    # Named like the workflow's run of that grid point; epochs is left out of the name because
    # raising it continues the same run.
    named = {k: v for k, v in point.items() if k != "epochs"}
    name = scripting.grid_point_name(named or {"seed": training["seed"]})
    root = "results/quick/{dataset}/{grid_point}" if args.quick else scripting.RUN
    out = args.out or root.format(dataset=args.dataset, grid_point=name)
    with scripting.rule_logging(args.log, echo=True):
        train_run(
            training,
            paths,
            out,
            spec["frequencies"],
            min_stream_length=spec["min_stream_length"],
            labels={"dataset": args.dataset, "grid_point": name},
            progress=True,
            logging_cfg=cfg["logging"],
        )
