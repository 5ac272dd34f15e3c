"""Rule plot_learnability: frozen test MSE against phase jitter, from the sweep summary, as
a figure and as a markdown table (technique × phase jitter, the selected model of each).

By hand: python scripts/plot_learnability.py --summary results/sweep/summary.csv --out l.png
"""

import pandas as pd

from statetrain import scripting
from statetrain.io import write_text
from statetrain.tasks.frequency import plots


def main(summary: str, out: str, table: str | None = None) -> None:
    df = pd.read_csv(summary)
    plots.learnability(df, out)
    if table:
        write_text(plots.learnability_table(df), table)


if "snakemake" in globals():
    sm = globals()["snakemake"]
    with scripting.rule_logging(sm.log[0]):
        main(sm.input[0], sm.output.figure, sm.output.table)
elif __name__ == "__main__":
    p = scripting.parser(__doc__)
    p.add_argument("--summary", default="results/sweep/summary.csv")
    p.add_argument("--out", default="results/plots/learnability.png")
    p.add_argument("--table", default="results/sweep/learnability.md")
    args = p.parse_args()
    with scripting.rule_logging(args.log, echo=True):
        main(args.summary, args.out, args.table)
