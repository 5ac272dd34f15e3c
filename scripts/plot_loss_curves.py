"""Rule plot_sweep_curves: every grid point's frozen validation curve on one dataset. By hand
also one run's online loss vs frozen validation (each train job draws its own loss_curves.png).

By hand:
  python scripts/plot_loss_curves.py --out curves.png \
      --history results/runs/spec/lr~0.001/training_history.json
"""

from statetrain import plots, scripting
from statetrain.io import read_json


def main(histories: dict[str, str], out: str, title: str, monitor: str = "val_mse") -> None:
    loaded = {name: read_json(path) for name, path in histories.items()}
    if len(loaded) == 1 and monitor == "per-run":
        plots.loss_curves(next(iter(loaded.values())), out, title)
    else:
        plots.sweep_curves(loaded, out, title, monitor)


if "snakemake" in globals():
    sm = globals()["snakemake"]
    with scripting.rule_logging(sm.log[0]):
        main(
            dict(zip(sm.params.names, sm.input, strict=True)),
            sm.output[0],
            sm.params.title,
            sm.params.monitor,
        )
elif __name__ == "__main__":
    p = scripting.parser(__doc__)
    p.add_argument("--history", nargs="+", required=True, help="training_history.json file(s)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    with scripting.rule_logging(args.log, echo=True):
        main(
            {h: h for h in args.history},
            args.out,
            "",
            "per-run" if len(args.history) == 1 else "val_mse",
        )
