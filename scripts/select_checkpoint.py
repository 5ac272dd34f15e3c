"""Rule select_checkpoint: the best grid point of one dataset, by a frozen validation metric
(the task's: MSE for frequency, the total loss for vae, AUC-PR for classifier).

The test split plays no part in the choice: its score is reported for the chosen run only
after the choice is made. By hand: python scripts/select_checkpoint.py --dataset spec
"""

import logging
import math

from statetrain import scripting
from statetrain.config import grid_points
from statetrain.io import copy_file, read_json, write_json
from statetrain.tasks import task_info

log = logging.getLogger("statetrain")


def main(
    dataset: str,
    names: list[str],
    metrics_paths: list[str],
    model_paths: list[str],
    out_model: str,
    out_selection: str,
    out_metrics: str,
    metric: str = "mse",
    mode: str = "min",
) -> dict:
    key = f"val_{metric}"
    candidates = []
    for name, path in zip(names, metrics_paths, strict=True):
        m = read_json(path)
        score = m["validation"]["overall"][metric]
        candidates.append({"grid_point": name, key: score, "best_epoch": m["best_epoch"]})
    finite = [i for i, c in enumerate(candidates) if c[key] is not None and math.isfinite(c[key])]
    if not finite:
        raise RuntimeError(
            f"dataset {dataset}: no grid point has a finite validation {metric}; see the train "
            "logs under results/logs/train/ for why."
        )
    pick = min if mode == "min" else max
    best = pick(finite, key=lambda i: candidates[i][key])
    chosen = read_json(metrics_paths[best])
    copy_file(model_paths[best], out_model)
    selection = {
        "dataset": dataset,
        "criterion": f"{'lowest' if mode == 'min' else 'highest'} frozen validation {metric} "
        "(the test split is not used to choose)",
        "selected": names[best],
        "source": model_paths[best],
        "candidates": candidates,
    }
    write_json(selection, out_selection)
    write_json({**chosen, "selected": names[best]}, out_metrics)
    log.info(
        "%s: selected %s (validation %s %.6f, test %s %.6f)",
        dataset,
        names[best],
        metric,
        chosen["validation"]["overall"][metric],
        metric,
        chosen["test"]["overall"][metric],
    )
    return selection


if "snakemake" in globals():
    sm = globals()["snakemake"]
    with scripting.rule_logging(sm.log[0]):
        main(
            sm.wildcards.dataset,
            sm.params.names,
            list(sm.input.metrics),
            list(sm.input.models),
            sm.output.model,
            sm.output.selection,
            sm.output.metrics,
            sm.params.metric,
            sm.params.mode,
        )
elif __name__ == "__main__":
    p = scripting.parser(__doc__)
    p.add_argument("--dataset", default="spec")
    args = p.parse_args()
    cfg = scripting.load(args)
    info = task_info(cfg["task"])
    names = [scripting.grid_point_name(pt) for pt in grid_points(cfg, args.dataset)]
    runs = [scripting.RUN.format(dataset=args.dataset, grid_point=n) for n in names]
    best = scripting.BEST.format(dataset=args.dataset)
    with scripting.rule_logging(args.log, echo=True):
        main(
            args.dataset,
            names,
            [f"{r}/metrics.json" for r in runs],
            [f"{r}/best_model.pth" for r in runs],
            f"{best}/best_model.pth",
            f"{best}/selection.json",
            f"{best}/metrics.json",
            info.selection_metric,
            info.mode,
        )
