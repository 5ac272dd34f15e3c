"""Rule validate_dataset: check a split before anything trains on it; write the report.

A bad file stops the workflow here, with a message naming the check, the row/column and
what was expected. By hand: python scripts/validate_dataset.py --path my_train.npy
"""

import logging

from statetrain import scripting
from statetrain.config import SPLITS, dataset_spec, user_paths
from statetrain.io import write_json
from statetrain.validation import validate_dataset

log = logging.getLogger("statetrain")


def main(
    path: str,
    report_path: str | None,
    min_stream_length: int,
    n_frequencies: int,
    task: str = "frequency",
    spec: dict | None = None,
) -> dict:
    if task != "frequency":
        from statetrain.tasks import get_task
        from statetrain.tasks.base import load_split

        report = get_task(task, spec or {}).validate(load_split(path), path)
        summary = ", ".join(f"{k} {v}" for k, v in report.items())
    else:
        report = validate_dataset(
            path, min_stream_length=min_stream_length, n_frequencies=n_frequencies
        )
        summary = f"{report['rows']} rows, {len(report['streams'])} streams"
    if report_path:
        write_json(report, report_path)
    log.info("%s is valid: %s", path, summary)
    return report


if "snakemake" in globals():
    sm = globals()["snakemake"]
    with scripting.rule_logging(sm.log[0]):
        main(
            sm.input[0],
            sm.output[0],
            sm.params.min_stream_length,
            sm.params.n_frequencies,
            sm.params.task,
            sm.params.spec,
        )
elif __name__ == "__main__":
    p = scripting.parser(__doc__)
    p.add_argument("--dataset", default="spec")
    p.add_argument("--path", help="validate this file instead of the dataset's splits")
    args = p.parse_args()
    cfg = scripting.load(args)
    spec = dataset_spec(cfg, args.dataset)
    task = cfg["task"]
    with scripting.rule_logging(args.log, echo=True):
        n_freq = len(spec.get("frequencies", []))
        min_len = spec.get("min_stream_length", 1)
        if args.path:
            main(args.path, None, min_len, n_freq, task, spec)
        else:
            given = user_paths(spec) if task == "frequency" else {}
            for split in SPLITS:
                path = given.get(split) or scripting.data_path(cfg, args.dataset, split)
                report = scripting.REPORT.format(dataset=args.dataset, split=split)
                main(path, report, min_len, n_freq, task, spec)
