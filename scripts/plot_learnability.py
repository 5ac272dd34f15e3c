"""Rule plot_learnability: frozen test MSE against phase jitter, from the sweep summary.

By hand: python scripts/plot_learnability.py --summary results/sweep/summary.csv --out l.png
"""

import pandas as pd

from statetrain import plots, scripting


def main(summary: str, out: str) -> None:
    plots.learnability(pd.read_csv(summary), out)


if "snakemake" in globals():
    sm = globals()["snakemake"]
    with scripting.rule_logging(sm.log[0]):
        main(sm.input[0], sm.output[0])
elif __name__ == "__main__":
    p = scripting.parser(__doc__)
    p.add_argument("--summary", default="results/sweep/summary.csv")
    p.add_argument("--out", default="results/plots/learnability.png")
    args = p.parse_args()
    with scripting.rule_logging(args.log, echo=True):
        main(args.summary, args.out)
