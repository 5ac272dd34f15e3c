"""Rule headline_table: the experiment's headline, one row per dataset (the selected grid point).

summary.csv has a row per grid point and every column; the report's landing page and a reader
want the answer first: which run was chosen, on what, and how it scores on the test split.

By hand: python scripts/headline_table.py --summary results/sweep/summary.csv
"""

import logging

import pandas as pd

from statetrain import scripting
from statetrain.io import write_text
from statetrain.tasks import task_info

log = logging.getLogger("statetrain")

FREQUENCY_COLUMNS = ["dataset", "technique", "phase_jitter", "grid_point", "best_epoch"]


def headline(summary: pd.DataFrame, metric: str = "mse") -> pd.DataFrame:
    """The selected rows, with the columns that answer 'how good is it': the selection metric on
    validation, then the test scores (and a batch task's baseline on the same metric)."""
    chosen = summary[summary["selected"].astype(str) == "True"]
    if metric == "mse":  # the frequency task: per-frequency test MSE after the overall one
        per_freq = [c for c in summary.columns if c.startswith("test_mse_")]
        columns = [*FREQUENCY_COLUMNS, "val_mse", "test_mse", *per_freq]
    else:
        tests = [c for c in summary.columns if c.startswith("test_") and c != f"test_{metric}"]
        columns = ["dataset", "grid_point", "best_epoch", f"val_{metric}", f"test_{metric}"]
        columns += [f"baseline_test_{metric}", *tests]
    return chosen[[c for c in columns if c in chosen.columns]].reset_index(drop=True)


def main(summary_csv: str, out_csv: str, metric: str = "mse") -> pd.DataFrame:
    table = headline(pd.read_csv(summary_csv), metric)
    write_text(table.to_csv(index=False, float_format="%.6g"), out_csv)
    log.info("wrote %s (%d selected runs)", out_csv, len(table))
    return table


if "snakemake" in globals():
    sm = globals()["snakemake"]
    with scripting.rule_logging(sm.log[0]):
        main(sm.input[0], sm.output[0], sm.params.metric)
elif __name__ == "__main__":
    p = scripting.parser(__doc__)
    p.add_argument("--summary", default="results/sweep/summary.csv")
    p.add_argument("--out", default="results/sweep/headline.csv")
    args = p.parse_args()
    with scripting.rule_logging(args.log, echo=True):
        main(args.summary, args.out, task_info(scripting.load(args)["task"]).selection_metric)
