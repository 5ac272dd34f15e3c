"""Per-frequency experts combined into one ExpertLSTM, through the workflow."""

import json
import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml

from statetrain.config import ConfigError, validate_config

from .conftest import PYTHON, snakemake

EXPERTS = {
    "data": {"frequencies": [1, 3], "duration_s": 0.5, "phase_jitter": "pi/8"},
    "datasets": {
        "f1": {"streams": [1]},
        "f1b": {"streams": [1], "training": {"seed": 5}},  # a rival 1 Hz expert
        "f3": {"streams": [3], "training": {"seed": 3}},
    },
    "training": {
        "mode": "window",
        "state_reset": "stream",
        "hidden_size": 8,
        "forget_bias": 2.0,
        "lr": 0.003,
        "epochs": 2,
        "window": {"draws": 2, "iterations": 3},
    },
    "experts": {"ens": ["f1", "f1b", "f3"]},
}


@pytest.mark.parametrize(
    ("experts", "datasets", "needle"),
    [
        ({"ens": ["f1", "nope"]}, {}, "not datasets"),
        ({"ens": ["f1", "all"]}, {"all": {}}, "exactly one stream"),
        ({"ens": ["f1", "f1b"]}, {"f1b": {"streams": [1]}}, "at least one member per frequency"),
        ({"f1": ["f1", "f3"]}, {}, "name of a dataset"),
        ({"ens": ["f1", "f3"]}, {"f3": {"streams": [3], "fs": 500}}, "differ only"),
    ],
)
def test_bad_expert_combinations_are_refused(experts, datasets, needle):
    cfg = {**EXPERTS, "datasets": {**EXPERTS["datasets"], **datasets}, "experts": experts}
    with pytest.raises(ConfigError, match=needle):
        validate_config(cfg)


@pytest.mark.workflow
def test_experts_combine_into_one_model_scored_on_all_streams(tmp_path):
    path = tmp_path / "experts.yaml"
    path.write_text(yaml.safe_dump(EXPERTS))
    # Only what this test reads (the per-run figures are the quick workflow test's business).
    targets = [
        "results/sweep/summary.csv",
        "results/plots/ens/graph1.png",
        "results/plots/ens/graph2.png",
    ]
    snakemake(tmp_path, *targets, "--configfile", str(path))
    res = tmp_path / "results"
    combined = json.loads((res / "best/ens/metrics.json").read_text())
    # Of the two 1 Hz experts, the one with the lower validation MSE on its own split serves.
    val = {m: combined["candidates"][m] for m in ("f1", "f1b")}
    chosen_1hz = min(val, key=val.get)
    assert combined["members"] == [chosen_1hz, "f3"]
    # f3's own training.seed names its run (an empty grid is named by the seed).
    assert (res / "runs/f3/seed~3/best_model.pth").is_file()
    # Each expert meets on the full test split exactly the rows of its own test split.
    for f, member in ((1, chosen_1hz), (3, "f3")):
        own = json.loads((res / f"best/{member}/metrics.json").read_text())["test"]["overall"][
            "mse"
        ]
        assert combined["test"][f"{f}hz"]["mse"] == pytest.approx(own, rel=1e-5)
    per_stream = [combined["test"][f"{f}hz"]["mse"] for f in (1, 3)]
    assert combined["test"]["overall"]["mse"] == pytest.approx(sum(per_stream) / 2, rel=1e-5)
    summary = pd.read_csv(res / "sweep/summary.csv")
    row = summary[summary["dataset"] == "ens"].iloc[0]
    assert row["selected"] and row["grid_point"] == "experts"
    for name in ("graph1.png", "graph2.png"):
        assert (res / "plots/ens" / name).stat().st_size > 10_000

    # The combined model through the console command: evaluate, predict, export.
    best, test = res / "best/ens/best_model.pth", res / "data/ens/test.npy"
    evaluated = json.loads(statetrain("evaluate", best, test).stdout)
    assert evaluated["overall"]["mse"] == pytest.approx(
        combined["test"]["overall"]["mse"], rel=1e-5
    )
    statetrain("predict", best, test, tmp_path / "pred.npy")
    assert np.load(tmp_path / "pred.npy").shape == (len(np.load(test)), 1)
    statetrain("export", best, tmp_path / "ens.onnx", "--data", test)
    assert json.loads((tmp_path / "ens.check.json").read_text())["passed"]


def statetrain(*args):
    proc = subprocess.run(
        [PYTHON, "-m", "statetrain.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc
