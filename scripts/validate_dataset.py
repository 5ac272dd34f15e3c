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


def main(path: str, report_path: str | None, min_stream_length: int, n_frequencies: int) -> dict:
    report = validate_dataset(
        path, min_stream_length=min_stream_length, n_frequencies=n_frequencies
    )
    if report_path:
        write_json(report, report_path)
    log.info("%s is valid: %d rows, %d streams", path, report["rows"], len(report["streams"]))
    return report


if "snakemake" in globals():
    sm = globals()["snakemake"]
    with scripting.rule_logging(sm.log[0]):
        main(sm.input[0], sm.output[0], sm.params.min_stream_length, sm.params.n_frequencies)
elif __name__ == "__main__":
    p = scripting.parser(__doc__)
    p.add_argument("--dataset", default="spec")
    p.add_argument("--path", help="validate this file instead of the dataset's splits")
    args = p.parse_args()
    cfg = scripting.load(args)
    spec = dataset_spec(cfg, args.dataset)
    with scripting.rule_logging(args.log, echo=True):
        n_freq = len(spec["frequencies"])
        if args.path:
            main(args.path, None, spec["min_stream_length"], n_freq)
        else:
            given = user_paths(spec)
            for split in SPLITS:
                path = given.get(split) or scripting.DATA.format(dataset=args.dataset, split=split)
                report = scripting.REPORT.format(dataset=args.dataset, split=split)
                main(path, report, spec["min_stream_length"], n_freq)
