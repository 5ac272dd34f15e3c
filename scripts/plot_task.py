"""Rule plot_task: a batch task's figures from its selected model (task.figures)."""

from statetrain import scripting
from statetrain.checkpoint import load_model
from statetrain.config import SPLITS
from statetrain.tasks import get_task


def main(
    task_name: str,
    spec: dict,
    model_path: str,
    split_paths: list[str],
    outputs: dict[str, str],
    title: str,
) -> None:
    model, ckpt = load_model(model_path)
    task = get_task(task_name, spec, ckpt.get("config") or {})
    splits = {s: task.read_split(p) for s, p in zip(SPLITS, split_paths, strict=True)}
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
