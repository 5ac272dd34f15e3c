"""Rule generate_data: write one split of one dataset scenario.

Frequency task: the assignment's generator, a float32 .npy file. Batch tasks (vae,
classifier): the task's generator, or the user's file named by `path`, split with a fixed
seed, as an .npz of plain arrays.
By hand: python scripts/generate_data.py --config config/config.yaml --dataset spec
"""

import logging

from statetrain import scripting
from statetrain.config import SPLITS, dataset_spec
from statetrain.data import generate_split, save_array

log = logging.getLogger("statetrain")


def main(spec: dict, split: str, out: str, task: str = "frequency") -> None:
    if task != "frequency":
        from statetrain.tasks import get_task
        from statetrain.tasks.base import save_split

        arrays = get_task(task, spec).make_splits()[split]
        save_split(arrays, out)
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in arrays.items())
        source = spec.get("path") or f"the {task} generator (seed {spec['seed']})"
        log.info("wrote %s from %s: %s", out, source, shapes)
        return
    array = generate_split(spec, split)
    save_array(array, out)
    log.info(
        "wrote %s: %d rows, phase_jitter %.4f rad, seed %d",
        out,
        len(array),
        spec["phase_jitter"],
        spec["seeds"][split],
    )


if "snakemake" in globals():
    sm = globals()["snakemake"]
    with scripting.rule_logging(sm.log[0]):
        main(sm.params.spec, sm.wildcards.split, sm.output[0], sm.params.task)
elif __name__ == "__main__":
    p = scripting.parser(__doc__)
    p.add_argument("--dataset", default="spec")
    p.add_argument("--split", choices=SPLITS, nargs="+", default=list(SPLITS))
    args = p.parse_args()
    cfg = scripting.load(args)
    with scripting.rule_logging(args.log, echo=True):
        for split in args.split:
            path = scripting.data_path(cfg, args.dataset, split)
            main(dataset_spec(cfg, args.dataset), split, path, cfg["task"])
