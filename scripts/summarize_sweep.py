"""Rule summarize_sweep: one CSV row per dataset × grid point, the selected ones marked."""

import logging

import pandas as pd

from statetrain import scripting
from statetrain.io import read_json, write_text

log = logging.getLogger("statetrain")


def technique(m: dict) -> str:
    """How a run was trained, in words: the learnability table's row label."""
    if m["grid_point"] == "experts":
        return "window training, one expert per frequency"
    training = m["training"]
    if training.get("mode") == "window":
        if len(m["test"]) == 2:  # overall + one frequency: an expert's own dataset
            return "window training, one-frequency expert"
        return "window training, one shared model"
    steps = training.get("tbptt_steps", 1)
    return "seed's online loop" + (f", TBPTT {steps}" if steps > 1 else "")


def main(
    metrics_paths: list[str],
    selection_paths: list[str],
    phase_jitter: dict,
    out_csv: str,
    metric: str = "mse",
) -> pd.DataFrame:
    selected = {}
    for path in selection_paths:
        sel = read_json(path)
        selected[sel["dataset"]] = sel["selected"]
    rows = []
    for path in metrics_paths:
        m = read_json(path)
        row = {
            "dataset": m["dataset"],
            "grid_point": m["grid_point"],
            "selected": selected.get(m["dataset"]) == m["grid_point"],
            "engine": m["engine"],
            "epochs": m["epochs"],
            "best_epoch": m["best_epoch"],
            "train_seconds": m["train_seconds"],
        }
        if metric != "mse":  # a batch task: every frozen metric, and the trivial baseline's
            for split in ("validation", "test"):
                prefix = "val" if split == "validation" else "test"
                for key, value in m[split]["overall"].items():
                    row[f"{prefix}_{key}"] = value
                for key, value in m.get("baseline", {}).get(split, {}).items():
                    row[f"baseline_{prefix}_{key}"] = value
            rows.append(row)
            continue
        row.update(
            {
                "technique": technique(m),
                "phase_jitter": phase_jitter[m["dataset"]],
                # an expert's dataset keeps some streams: its scores cover those only
                "streams": "+".join(k for k in m["test"] if k != "overall"),
                "val_mse": m["validation"]["overall"]["mse"],
                "test_mse": m["test"]["overall"]["mse"],
                "test_r2": m["test"]["overall"]["r2"],
                "test_snr_db": m["test"]["overall"]["snr_db"],
            }
        )
        for key, value in m["test"].items():
            if key != "overall":
                row[f"test_mse_{key}"] = value["mse"]
        rows.append(row)
    df = pd.DataFrame(rows)
    write_text(df.to_csv(index=False, float_format="%.6g"), out_csv)
    log.info("wrote %s (%d runs)", out_csv, len(df))
    return df


if "snakemake" in globals():
    sm = globals()["snakemake"]
    with scripting.rule_logging(sm.log[0]):
        main(
            list(sm.input.metrics),
            list(sm.input.selections),
            sm.params.phase_jitter,
            sm.output[0],
            sm.params.metric,
        )
