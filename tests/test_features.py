"""The seed trainers' features, each exercised on real (small) training."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from statetrain import runner
from statetrain.callbacks import EarlyStopping, ModelCheckpoint
from statetrain.checkpoint import load_checkpoint_file
from statetrain.metrics import MetricsTracker
from statetrain.tasks.frequency.trainer import Split, get_device

from .conftest import small

FREQ = {"frequencies": [1, 3, 5, 7]}


def test_metrics_tracker():
    t = MetricsTracker()
    for v in (0.5, 0.4, 0.45, 0.39, 0.41):
        t.update("val_mse", v)
    assert t.get_latest("val_mse") == 0.41
    assert t.get_best("val_mse") == 0.39 and t.get_best_epoch("val_mse") == 4
    assert t.get_best_epoch("val_mse", min_delta=0.02) == 2  # 0.39 beats 0.4 by only 0.01
    assert not t.has_improved("val_mse")
    t.update("val_mse", 0.1)
    assert t.has_improved("val_mse") and t.has_improved("val_mse", min_delta=0.2)
    assert t.get_best("val_mse", mode="max") == 0.5
    assert t.get_running_average("val_mse", window=2) == pytest.approx(0.255)
    summary = t.get_summary()["val_mse"]
    assert summary["best_epoch"] == 6 and summary["max"] == 0.5
    assert t.rows()[0] == {"val_mse": 0.5}


def train(training_cfg, small_paths, out, **overrides):
    cfg = {**training_cfg}
    for key, value in overrides.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) else value
    return runner.run("frequency", FREQ, cfg, small_paths, out, labels={"dataset": "t"})


def history(out):
    return json.loads((out / "training_history.json").read_text())


def test_early_stopping_stops_restores_and_stays_stopped(training_cfg, small_paths, tmp_path):
    out = tmp_path / "es"
    train(
        training_cfg,
        small_paths,
        out,
        epochs=30,
        lr=0.05,
        early_stopping={"enabled": True, "patience": 2},
    )
    h = history(out)
    n = len(h["val_mse"])
    best = int(np.argmin(h["val_mse"])) + 1
    assert n < 30 and n == best + 2  # stopped exactly `patience` epochs after the best
    assert load_checkpoint_file(out / "best_model.pth")["epoch"] == best
    # Re-running (e.g. after raising epochs) does not train past the stopping point.
    train(
        training_cfg,
        small_paths,
        out,
        epochs=40,
        lr=0.05,
        early_stopping={"enabled": True, "patience": 2},
    )
    assert len(history(out)["val_mse"]) == n


def test_restore_best_weights_through_the_trainer():
    split, val = Split.from_array(small(1)), Split.from_array(small(3))
    torch.manual_seed(0)
    from statetrain import FrequencyLSTM, StatefulTrainer

    model = FrequencyLSTM(hidden_size=8)
    stop = EarlyStopping(patience=1, restore_best_weights=True)
    trainer = StatefulTrainer(
        model,
        split,
        torch.nn.MSELoss(),
        torch.optim.Adam(model.parameters(), lr=0.05),
        val_loader=val,
        callbacks=[stop],
        progress=False,
    )
    trainer.train(30, save_dir=None)
    assert stop.stopped_epoch == trainer.epoch < 30
    for key, value in trainer.best_state.items():
        assert torch.equal(model.state_dict()[key], value)


@pytest.mark.parametrize(
    ("scheduler", "expected"),
    [
        ({"type": "step", "step_size": 2, "gamma": 0.5}, [1e-2, 1e-2, 5e-3, 5e-3]),
        ({"type": "cosine", "t_max": 4}, [1e-2, 1e-2 * (1 + np.cos(np.pi / 4)) / 2, 5e-3]),
    ],
)
def test_lr_schedulers_change_the_lr_each_epoch(
    training_cfg, small_paths, tmp_path, scheduler, expected
):
    out = tmp_path / "s"
    train(training_cfg, small_paths, out, epochs=4, lr=1e-2, scheduler=scheduler, engine="native")
    np.testing.assert_allclose(history(out)["lr"][: len(expected)], expected, rtol=1e-6)


def test_plateau_scheduler_reduces_when_validation_stalls(training_cfg, small_paths, tmp_path):
    out = tmp_path / "p"
    train(
        training_cfg,
        small_paths,
        out,
        epochs=8,
        lr=0.05,
        scheduler={"type": "plateau", "patience": 0, "factor": 0.5},
    )
    h = history(out)
    lrs, val = h["lr"], h["val_mse"]
    # lr of epoch e+1 is halved exactly when epoch e did not improve on the best so far.
    for e in range(1, len(lrs)):
        improved = val[e - 1] < min(val[: e - 1], default=np.inf)
        assert lrs[e] == pytest.approx(lrs[e - 1] * (1 if improved else 0.5))
    assert min(lrs) < 0.05


@pytest.mark.parametrize(
    ("optimizer", "loss"), [("sgd", "l1"), ("rmsprop", "huber"), ("adamw", "smooth_l1")]
)
def test_optimizers_and_losses(training_cfg, small_paths, tmp_path, optimizer, loss):
    out = tmp_path / optimizer
    metrics = train(
        training_cfg,
        small_paths,
        out,
        epochs=2,
        optimizer=optimizer,
        loss=loss,
        momentum=0.9,
        engine="auto",
    )
    assert metrics["engine"] == "torch" and "native" in metrics["engine_reason"]
    state = load_checkpoint_file(out / "last.pth")["optimizer_state_dict"]["param_groups"][0]
    assert ("momentum" in state) == (optimizer in ("sgd", "rmsprop"))
    assert np.isfinite(metrics["validation"]["overall"]["mse"])


def test_native_engine_is_chosen_for_adamw(training_cfg, small_paths, tmp_path):
    metrics = train(
        training_cfg,
        small_paths,
        tmp_path / "n",
        epochs=1,
        optimizer="adamw",
        weight_decay=0.01,
        engine="auto",
    )
    assert metrics["engine"] == "native"


def test_checkpoints_every_n_and_top_k(training_cfg, small_paths, tmp_path):
    out = tmp_path / "ck"
    train(
        training_cfg, small_paths, out, epochs=5, checkpoint={"every_n_epochs": 2, "save_top_k": 3}
    )
    assert sorted(p.name for p in out.glob("epoch_*.pth")) == ["epoch_0002.pth", "epoch_0004.pth"]
    val = history(out)["val_mse"]
    ranked = [int(e) + 1 for e in np.argsort(val, kind="stable")[:3]]
    for rank, epoch in enumerate(ranked, start=1):
        assert load_checkpoint_file(out / f"top_{rank}.pth")["epoch"] == epoch
    best = load_checkpoint_file(out / "best_model.pth")["model_state_dict"]
    top1 = load_checkpoint_file(out / "top_1.pth")["model_state_dict"]
    assert all(torch.equal(best[k], top1[k]) for k in best)


def test_model_checkpoint_monitors_any_metric_in_max_mode(tmp_path):
    split, val = Split.from_array(small(1)), Split.from_array(small(3))
    torch.manual_seed(0)
    from statetrain import FrequencyLSTM, StatefulTrainer

    model = FrequencyLSTM(hidden_size=8)
    trainer = StatefulTrainer(
        model,
        split,
        torch.nn.MSELoss(),
        torch.optim.Adam(model.parameters(), lr=0.01),
        val_loader=val,
        monitor="h_norm",
        monitor_mode="max",
        progress=False,
        callbacks=[ModelCheckpoint(tmp_path, monitor="h_norm", mode="max")],
    )
    trainer.train(3, save_dir=None)
    best = int(np.argmax(trainer.history["h_norm"])) + 1
    assert load_checkpoint_file(tmp_path / "best_model.pth")["epoch"] == best


def test_csv_logger_has_one_row_per_epoch(training_cfg, small_paths, tmp_path):
    out = tmp_path / "csv"
    train(training_cfg, small_paths, out, epochs=3)
    with open(out / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[2]["val_mse"]) == pytest.approx(history(out)["val_mse"][2])


def test_tensorboard_logger_writes_scalars_and_the_figure(training_cfg, small_paths, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    runner.run(
        "frequency",
        FREQ,
        {**training_cfg, "epochs": 3},
        small_paths,
        out,
        logging_cfg={"tensorboard": True},
    )
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert [e.step for e in acc.Scalars("val_mse")] == [1, 2, 3]
    assert acc.Scalars("train_loss")[2].value == pytest.approx(history(out)["train_loss"][2])
    assert "val_mse/3hz" in tags["scalars"]
    assert "figures/validation_predictions" in tags["images"]
    # The grid point's settings for TensorBoard's HParams view (a plugin event of its own).
    plugins = acc.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in plugins, plugins.keys()


def test_mlflow_logger_records_params_metrics_and_artifacts(
    training_cfg, small_paths, tmp_path, monkeypatch
):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "ml"
    runner.run(
        "frequency",
        FREQ,
        {**training_cfg, "epochs": 2},
        small_paths,
        out,
        labels={"dataset": "t", "grid_point": "lr~0.001"},
        logging_cfg={"mlflow": True, "mlflow_experiment": "test"},
    )
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["test"])
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["params.training.lr"] == str(training_cfg["lr"])
    assert run["tags.mlflow.runName"] == "t/lr~0.001"
    client = mlflow.MlflowClient(uri)
    values = client.get_metric_history(run["run_id"], "val_mse")
    assert [m.step for m in values] == [1, 2]
    assert values[1].value == pytest.approx(history(out)["val_mse"][1])
    names = {a.path for a in client.list_artifacts(run["run_id"])}
    assert {"best_model.pth", "metrics.json", "validation_predictions.png"} <= names
    assert run["status"] == "FINISHED" and run["tags.statetrain.dataset"] == "t"
    experiment = mlflow.get_experiment_by_name("test").experiment_id
    models = mlflow.search_logged_models(experiment_ids=[experiment], output_format="list")
    assert [m.source_run_id for m in models] == [run["run_id"]]  # the model, as an MLflow model

    # Raising the epochs resumes the same training run: the same MLflow run, continued.
    runner.run(
        "frequency",
        FREQ,
        {**training_cfg, "epochs": 3},
        small_paths,
        out,
        labels={"dataset": "t", "grid_point": "lr~0.001"},
        logging_cfg={"mlflow": True, "mlflow_experiment": "test"},
    )
    runs = mlflow.search_runs(experiment_names=["test"])
    assert len(runs) == 1 and runs.iloc[0]["status"] == "FINISHED"
    assert [m.step for m in client.get_metric_history(run["run_id"], "val_mse")] == [1, 2, 3]


def test_a_failed_run_is_marked_failed_in_mlflow(training_cfg, small_paths, tmp_path, monkeypatch):
    import mlflow

    from statetrain.tasks.frequency.trainer import StatefulTrainer

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)

    def crash(self):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(StatefulTrainer, "run_epoch", crash)
    with pytest.raises(RuntimeError, match="simulated failure"):
        runner.run(
            "frequency",
            FREQ,
            {**training_cfg, "epochs": 2},
            small_paths,
            tmp_path / "failed",
            logging_cfg={"mlflow": True, "mlflow_experiment": "fail"},
        )
    mlflow.set_tracking_uri(uri)
    assert list(mlflow.search_runs(experiment_names=["fail"])["status"]) == ["FAILED"]


def test_device_selection():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if expected == "cpu" and torch.backends.mps.is_available():
        expected = "mps"
    assert get_device("auto").type == expected
    assert get_device("cpu").type == "cpu"


def test_parallel_jobs_share_a_new_sqlite_store_safely(tmp_path):
    """Four jobs of a grid start at once on a store that does not exist yet (a cluster's first
    wave): every run is recorded, none fails in MLflow's schema migration."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    job = (
        "import sys\n"
        "from statetrain.callbacks import MLflowLogger\n"
        "class T:\n"
        "    tracking = {}\n"
        "    history = {}\n"
        "t = T()\n"
        "logger = MLflowLogger(sys.argv[1], 'grid', 'run' + sys.argv[2], {'lr': 0.1})\n"
        "logger.on_train_begin(t)\n"
        "for epoch in range(1, 21):\n"
        "    logger.on_epoch_end(t, epoch, {'epoch': epoch, 'val_mse': 1.0 / epoch})\n"
        "logger.on_train_end(t)\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", job, uri, str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(4)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, "\n".join(o[-1500:] for o in outputs)
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["grid"])
    assert sorted(runs["tags.mlflow.runName"]) == [f"run{i}" for i in range(4)]
    assert set(runs["status"]) == {"FINISHED"} and set(runs["metrics.val_mse"]) == {0.05}
