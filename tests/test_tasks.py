"""The batch tasks (vae, classifier) through the shared machinery: config, runner, workflow."""

from __future__ import annotations

import json
import math
import subprocess

import numpy as np
import pytest
import yaml

from statetrain import runner
from statetrain.config import ConfigError, dataset_spec, training_config, validate_config
from statetrain.tasks import get_task, task_info
from statetrain.tasks.base import save_split

from .conftest import PYTHON, snakemake
from .test_runner import assert_same_weights, weights

VAE_DATA = {"sites": 400, "species": 160, "min_species_observations": 10, "seed": 4}
VAE_TRAINING = {"hidden_size": 256, "latent_dim": 8, "batch_size": 32, "epochs": 20}


def prepare(task: str, data: dict, tmp_path, training: dict | None = None):
    """A validated config, the training section and the three split files of dataset 'd'."""
    cfg = validate_config(
        {"task": task, "data": data, "datasets": {"d": {}}, "training": training or {}}
    )
    spec = dataset_spec(cfg, "d")
    splits = get_task(task, spec).make_splits()
    paths = {s: save_split(a, tmp_path / "data" / f"{s}.npz") for s, a in splits.items()}
    return cfg, training_config(cfg, {}, "d"), spec, paths


def test_task_defaults_and_identity_are_per_task():
    vae = validate_config({"task": "vae"})
    assert vae["training"]["monitor"] == "val_loss" and vae["training"]["monitor_mode"] == "min"
    assert vae["training"]["hidden_size"] == 512  # the VAE's default, not the LSTM's 64
    assert vae["data"]["sites"] == 1500 and "frequencies" not in vae["data"]
    clf = validate_config({"task": "classifier"})
    assert (clf["training"]["monitor"], clf["training"]["monitor_mode"]) == ("val_auc_pr", "max")
    freq = validate_config({})
    assert (freq["training"]["monitor"], freq["training"]["monitor_mode"]) == ("val_mse", "min")
    assert task_info("classifier").figures == (
        "roc_curve.png",
        "pr_curve.png",
        "confusion_matrix.png",
    )


@pytest.mark.parametrize(
    ("cfg", "needle"),
    [
        ({"task": "regression"}, "'task': 'regression' is not a known task"),
        ({"task": "vae", "data": {"frequencies": [1]}}, "'frequencies' was unexpected"),
        ({"task": "vae", "data": {"sites": 3}}, "data.sites"),
        ({"task": "vae", "data": {"split": {"validation": 0.5, "test": 0.45}}}, "keep their sum"),
        ({"task": "classifier", "data": {"positive_rate": 1.5}}, "data.positive_rate"),
        ({"task": "classifier", "datasets": {"d": {"labels_path": "y.npy"}}}, "without path"),
        ({"task": "vae", "grid": {"dropout": [1.5]}}, "dropout"),
    ],
)
def test_bad_task_configs_name_the_key(cfg, needle):
    with pytest.raises(ConfigError, match="(?s).*" + needle.replace("(", r"\(")):
        validate_config(cfg)


def test_vae_run_beats_the_trivial_baseline_and_resumes_exactly(tmp_path):
    _, training, spec, paths = prepare("vae", VAE_DATA, tmp_path, VAE_TRAINING)
    labels = {"dataset": "d", "grid_point": "g"}
    straight = runner.run("vae", spec, training, paths, tmp_path / "a", labels=labels)
    test, base = straight["test"]["overall"], straight["baseline"]["test"]
    # Frozen test reconstruction better than the per-species frequency, and held-out
    # presences ranked better than by prevalence.
    assert test["recon"] < base["recon"] - 1.0
    assert test["auc"] > base["auc"] + 0.02
    history = json.loads((tmp_path / "a" / "training_history.json").read_text())
    assert {"train_recon", "train_kl", "val_recon", "val_kl", "val_auc", "rss_mb"} <= set(history)
    assert straight["best_epoch"] == 1 + int(np.argmin(history["val_loss"]))

    # Interrupted after 5 epochs, then resumed to 20: the same weights and history.
    runner.run("vae", spec, {**training, "epochs": 5}, paths, tmp_path / "b", labels=labels)
    resumed = runner.run("vae", spec, training, paths, tmp_path / "b", labels=labels)
    assert_same_weights(
        weights(tmp_path / "a/best_model.pth"), weights(tmp_path / "b/best_model.pth")
    )
    assert resumed["test"] == straight["test"]
    again = json.loads((tmp_path / "b" / "training_history.json").read_text())
    assert again["val_loss"] == history["val_loss"]

    # A change that shapes the weights starts afresh, the old state set aside.
    runner.run(
        "vae", spec, {**training, "beta": 0.5, "epochs": 1}, paths, tmp_path / "b", labels=labels
    )
    assert (tmp_path / "b" / "last.pth.previous").is_file()


def test_a_corrupt_batch_split_is_refused(tmp_path):
    _, training, spec, paths = prepare("vae", VAE_DATA, tmp_path, {**VAE_TRAINING, "epochs": 1})
    paths["train"].write_bytes(b"not an npz archive")
    from statetrain.validation import DatasetError

    with pytest.raises(DatasetError, match="readable"):
        runner.run("vae", spec, training, paths, tmp_path / "r")
    assert not (tmp_path / "r" / "best_model.pth").exists()


def write_config(tmp_path, cfg: dict):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.workflow
def test_vae_workflow_selects_on_validation_and_plots(tmp_path):
    cfg = {
        "task": "vae",
        "data": VAE_DATA,
        "datasets": {"birds": {}},
        "training": {**VAE_TRAINING, "hidden_size": 64, "epochs": 4},
        "grid": {"beta": [0.5, 1.0]},
        "logging": {"tensorboard": True},
    }
    targets = [
        "results/sweep/summary.csv",
        *(f"results/plots/birds/{n}" for n in ("vae_losses.png", "latent_space.png")),
        "results/plots/birds/sweep_loss_curves.png",
    ]
    snakemake(tmp_path, *targets, "--configfile", str(write_config(tmp_path, cfg)))
    res = tmp_path / "results"
    selection = json.loads((res / "best/birds/selection.json").read_text())
    scores = {c["grid_point"]: c["val_loss"] for c in selection["candidates"]}
    assert selection["selected"] == min(scores, key=scores.get)
    metrics = json.loads((res / "best/birds/metrics.json").read_text())
    assert metrics["selected"] == selection["selected"] and metrics["epochs"] == 4
    for name in ("vae_losses.png", "latent_space.png", "sweep_loss_curves.png"):
        assert (res / "plots/birds" / name).stat().st_size > 10_000, name
    assert list((res / "runs/birds/beta~1.0/tensorboard").glob("events.out.tfevents.*"))
    summary = (res / "sweep/summary.csv").read_text().splitlines()
    assert len(summary) == 3 and "baseline_test_auc" in summary[0]

    # The selected VAE through the console command: frozen metrics and predictions.
    best, test = res / "best/birds/best_model.pth", res / "data/birds/test.npz"
    proc = subprocess.run(
        [PYTHON, "-m", "statetrain.cli", "evaluate", str(best), str(test)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["overall"]["auc"] == pytest.approx(
        metrics["test"]["overall"]["auc"], rel=1e-6
    )
    proc = subprocess.run(
        [PYTHON, "-m", "statetrain.cli", "predict", str(best), str(test), str(tmp_path / "p.csv")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    header, *rows = (tmp_path / "p.csv").read_text().splitlines()
    assert len(rows) == len(np.load(test)["x"]) and header.startswith("p_")
    # ... and as ONNX, checked in onnxruntime against PyTorch on the test split.
    proc = subprocess.run(
        [PYTHON, "-m", "statetrain.cli", "export", best, tmp_path / "vae.onnx", "--data", test],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    check = json.loads((tmp_path / "vae.check.json").read_text())
    assert check["passed"] and check["max_abs_diff"] <= 1e-4 and check["task"] == "vae"
    assert check["rows"] == len(rows) and check["outputs"]["probabilities"][1] == len(
        header.split(",")
    )


def test_a_bad_user_matrix_is_refused_with_a_clear_error(tmp_path):
    """`statetrain data` (the generate_data rule's library call, by hand) refuses the user's
    file and says where and why; the workflow's rule chain stops there, as the frequency
    task's test shows."""
    matrix = np.random.default_rng(0).integers(0, 2, size=(40, 12))
    matrix[:, 0] = 1
    matrix[5, 3] = 2  # not presence/absence
    csv = tmp_path / "sites.csv"
    header = ",".join(f"sp{i}" for i in range(12))
    np.savetxt(csv, matrix, fmt="%d", delimiter=",", header=header, comments="")
    before = csv.read_bytes()
    cfg = {"task": "vae", "datasets": {"mine": {"path": str(csv)}}, "training": {"epochs": 1}}
    proc = subprocess.run(
        [
            PYTHON,
            "-m",
            "statetrain.cli",
            "data",
            "--config",
            str(write_config(tmp_path, cfg)),
            "--dataset",
            "mine",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "failed check 'binary'" in proc.stderr and "5" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results/data/mine").exists() or not list(
        (tmp_path / "results/data/mine").glob("*.npz")
    )
    assert csv.read_bytes() == before  # the user's file is untouched


def test_classifier_run_beats_the_positive_rate(tmp_path):
    data = {"sequences": 600, "length": 60, "channels": 4, "seed": 1}
    training = {"hidden_size": 32, "num_layers": 1, "epochs": 10, "batch_size": 32}
    _, training, spec, paths = prepare("classifier", data, tmp_path, training)
    metrics = runner.run("classifier", spec, training, paths, tmp_path / "c")
    test = metrics["test"]["overall"]
    assert test["auc_pr"] >= 3 * test["positive_rate"]
    assert test["auc_roc"] > 0.8
    assert metrics["baseline"]["test"]["auc_pr"] == pytest.approx(test["positive_rate"])
    history = json.loads((tmp_path / "c" / "training_history.json").read_text())
    for key in (
        "val_auc_pr",
        "val_f1",
        "val_precision",
        "val_recall",
        "grad_norm_mean",
        "lr",
        "rss_mb",
    ):
        assert key in history and all(math.isfinite(v) for v in history[key]), key
    assert metrics["best_epoch"] == 1 + int(np.argmax(history["val_auc_pr"]))


@pytest.mark.parametrize(
    ("extra", "panels"),
    [
        ({"val_r2_load": [0.1, 0.5], "val_mse_load": [0.9, 0.5]}, 2),  # sequence regression
        ({"val_auc_pr": [0.2, 0.4], "val_accuracy": [0.6, 0.7]}, 2),  # classifier
        ({"val_mse_load": [0.9, 0.5]}, 1),  # nothing bounded to draw: no empty second panel
    ],
)
def test_batch_loss_curves_draw_the_metrics_a_task_logs(monkeypatch, tmp_path, extra, panels):
    from statetrain import plots

    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: drawn.append(fig))
    history = {"epoch": [1, 2], "train_loss": [1.0, 0.8], "val_loss": [1.1, 0.9], **extra}
    plots.loss_curves(history, tmp_path / "c.png")
    (fig,) = drawn
    assert len(fig.axes) == panels
    if panels == 2:
        curves = {line.get_label() for line in fig.axes[1].get_lines()}
        assert curves == {k.removeprefix("val_") for k in extra if "mse" not in k}
