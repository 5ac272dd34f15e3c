"""The README's real-data tables, from an experiment's summary.csv (selected runs only).

    python -m statetrain.tasks.sequence.tables results/sequence/sweep/summary.csv

Regression: per dataset and target, the frozen test RMSE, MAE and R² of the LSTM beside
each baseline's, and which is best on RMSE. Classification: balanced accuracy, macro-F1,
AUC-PR and AUC-ROC of the LSTM beside each baseline's.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

REGRESSION_BASELINES = ("persistence", "ar", "seasonal")
CLASSIFICATION_BASELINES = ("prevalence", "logistic")


def _fmt(value: float) -> str:
    return "—" if pd.isna(value) else f"{value:.4g}"


def regression_table(summary: pd.DataFrame) -> str:
    """One row per dataset × target: LSTM and baselines' test RMSE / MAE / R², best."""
    rows = ["| dataset | target | model | RMSE | MAE | R² |", "|---|---|---|---|---|---|"]
    for _, run in summary[summary["selected"].astype(str) == "True"].iterrows():
        targets = [c[len("test_rmse_") :] for c in summary.columns if c.startswith("test_rmse_")]
        for target in targets:
            if pd.isna(run.get(f"test_rmse_{target}")):
                continue
            scores = {"LSTM": [run[f"test_{m}_{target}"] for m in ("rmse", "mae", "r2")]}
            for name in REGRESSION_BASELINES:
                key = f"baseline_test_{name}_rmse_{target}"
                if key in run and not pd.isna(run[key]):
                    scores[name] = [
                        run[f"baseline_test_{name}_{m}_{target}"] for m in ("rmse", "mae", "r2")
                    ]
            best = min(scores, key=lambda n: scores[n][0])
            for name, (rmse, mae, r2) in scores.items():
                label = f"**{name}**" if name == best else name
                rows.append(
                    f"| `{run['dataset']}` | {target} | {label} | {_fmt(rmse)} | {_fmt(mae)} | "
                    f"{_fmt(r2)} |"
                )
    return "\n".join(rows)


def classification_table(summary: pd.DataFrame) -> str:
    """One row per dataset × model: balanced accuracy, macro-F1, AUC-PR, AUC-ROC."""
    rows = [
        "| dataset | model | balanced accuracy | macro-F1 | AUC-PR | AUC-ROC |",
        "|---|---|---|---|---|---|",
    ]
    for _, run in summary[summary["selected"].astype(str) == "True"].iterrows():
        prefixes = {"LSTM": "test_"}
        prefixes.update({n: f"baseline_test_{n}_" for n in CLASSIFICATION_BASELINES})
        for name, p in prefixes.items():
            f1 = [c for c in summary.columns if c.startswith(f"{p}f1_")]
            if not f1:
                continue
            macro = float(run[f1].astype(float).mean())
            rows.append(
                f"| `{run['dataset']}` | {name} | {_fmt(run[f'{p}balanced_accuracy'])} | "
                f"{_fmt(macro)} | {_fmt(run[f'{p}auc_pr'])} | {_fmt(run[f'{p}auc_roc'])} |"
            )
    return "\n".join(rows)


def table(summary_csv: str | Path) -> str:
    """The table that suits the summary's objective."""
    summary = pd.read_csv(summary_csv)
    if any(c.startswith("test_balanced_accuracy") for c in summary.columns):
        return classification_table(summary)
    return regression_table(summary)


if __name__ == "__main__":  # pragma: no cover - a convenience for the README
    print(table(sys.argv[1]))
