"""Rule plot_task: a batch task's figures from its selected model (task.figures).

By hand: python scripts/plot_task.py --config config/vae.yaml --dataset vae
"""

from pathlib import Path

from statetrain import scripting
from statetrain.checkpoint import load_checkpoint_file
from statetrain.config import SPLITS, dataset_spec
from statetrain.tasks import get_task
from statetrain.tasks.base import load_split


def main(
    task_name: str,
    spec: dict,
    model_path: str,
    split_paths: list[str],
    outputs: dict[str, str],
    title: str,
) -> None:
    ckpt = load_checkpoint_file(model_path)
    task = get_task(task_name, spec, ckpt.get("config") or {})
    model = task.model_from_args(ckpt["model_args"])
    model.load_state_dict(ckpt["model_state_dict"])
    model.eval()
    splits = {s: load_split(p) for s, p in zip(SPLITS, split_paths, strict=True)}
    task.prepare(splits["train"])
    task.plot(model, splits, ckpt.get("history") or {}, outputs, title)


if "snakemake" in globals():
    sm = globals()["snakemake"]
    with scripting.rule_logging(sm.log[0]):
        main(
            sm.params.task,
            sm.params.spec,
            sm.input.model,
            list(sm.input.splits),
            dict(zip(sm.params.figures, sm.output, strict=True)),
            sm.params.title,
        )
elif __name__ == "__main__":
    from statetrain.tasks import task_info

    p = scripting.parser(__doc__)
    p.add_argument("--dataset", required=True)
    args = p.parse_args()
    cfg = scripting.load(args)
    info = task_info(cfg["task"])
    plots_dir = Path(scripting.PLOTS.format(dataset=args.dataset))
    with scripting.rule_logging(args.log, echo=True):
        main(
            cfg["task"],
            dataset_spec(cfg, args.dataset),
            f"{scripting.BEST.format(dataset=args.dataset)}/best_model.pth",
            [scripting.data_path(cfg, args.dataset, s) for s in SPLITS],
            {name: str(plots_dir / name) for name in info.figures},
            f"{cfg['task']}, dataset {args.dataset}",
        )
