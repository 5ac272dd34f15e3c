"""The sequence task: a user's multichannel series read, checked, split, trained and scored."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from statetrain.config import dataset_spec, grid_points, training_config, validate_config
from statetrain.experiment import prepare_data, split_paths
from statetrain.inference import evaluate_checkpoint, predict_checkpoint
from statetrain.runner import run
from statetrain.tasks.sequence.data import (
    Columns,
    Normaliser,
    SeriesTable,
    read_table,
    split_table,
)
from statetrain.tasks.sequence.metrics import baseline_scores, classification_metrics
from statetrain.validation import DatasetError

from .conftest import snakemake


def recording(streams: int = 4, rows: int = 80, seed: int = 0) -> pd.DataFrame:
    """Streams of two noisy oscillating channels, a target that lags them, and a label."""
    rng = np.random.default_rng(seed)
    parts = []
    for s in range(streams):
        t = np.arange(rows)
        ax = np.sin(2 * np.pi * t / 16 + s) + 0.1 * rng.standard_normal(rows)
        ay = np.cos(2 * np.pi * t / 23) + 0.1 * rng.standard_normal(rows)
        load = 0.5 * np.roll(ax, 2) + 0.3 * ay
        state = np.where(ax > 0, "up", "down")
        parts.append(
            pd.DataFrame(
                {
                    "episode": s,
                    "timestamp": t * 0.5,
                    "ax": ax,
                    "ay": ay,
                    "load": load,
                    "state": state,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def config(tmp_path, csv, **data):
    base = {
        "path": str(csv),
        "inputs": ["ax", "ay"],
        "targets": ["load"],
        "stream": "episode",
        "time": "timestamp",
    }
    base.update(data)
    return validate_config(
        {
            "task": "sequence",
            "experiment": "seq",
            "data": base,
            "datasets": {"mine": {}},
            "training": {"epochs": 2, "hidden_size": 6, "engine": "torch"},
        }
    )


def train_one(cfg, tmp_path, name="run", **training):
    spec = dataset_spec(cfg, "mine")
    tr = training_config(cfg, grid_points(cfg)[0], "mine")
    tr.update(training)
    return run("sequence", spec, tr, split_paths(cfg, "mine"), tmp_path / name)


@pytest.fixture
def csv(tmp_path):
    path = tmp_path / "rec.csv"
    recording().to_csv(path, index=False)
    return path


@pytest.fixture
def prepared(tmp_path, csv, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config(tmp_path, csv, horizon=1, period=16)
    prepare_data(cfg, "mine")
    return cfg


# ------------------------------------------------------------------------ validation
COLUMNS = Columns(("ax", "ay"), ("load",), stream="episode", time="timestamp")


def _broken(change):
    frame = recording(3, 20)
    frame["ax"] = frame["ax"].astype(object)
    change(frame)
    return frame


@pytest.mark.parametrize(
    ("change", "columns", "words"),
    [
        (lambda f: f.drop(columns="ay", inplace=True), COLUMNS, ["column 'ay' is missing"]),
        (
            lambda f: f.__setitem__("ax", f["ax"].where(f.index != 7, "oops")),
            COLUMNS,
            ["column 'ax'", "data row 8 (line 9", "'oops'", "not a number"],
        ),
        (
            lambda f: f.__setitem__("load", f["load"].where(f.index != 5, np.inf)),
            COLUMNS,
            ["column 'load'", "data row 6", "NaN or Inf", "interpolate"],
        ),
        (
            lambda f: f.__setitem__("timestamp", f["timestamp"].where(f.index != 4, 0.0)),
            COLUMNS,
            ["column 'timestamp'", "data row 5", "does not increase", "Sort"],
        ),
        (
            lambda f: f.__setitem__("episode", np.r_[np.zeros(20), np.ones(20), np.zeros(20)]),
            COLUMNS,
            ["stream 0.0 starts again", "data row 41", "contiguous"],
        ),
        (
            lambda f: None,
            Columns(("ax",), ("load",), stream="episode", horizon=25),
            ["stream 0", "20 rows, fewer than 26", "horizon 25"],
        ),
    ],
)
def test_a_broken_file_is_refused_naming_file_column_row_and_fix(tmp_path, change, columns, words):
    path = tmp_path / "bad.csv"
    _broken(change).to_csv(path, index=False)
    with pytest.raises(DatasetError) as err:
        SeriesTable.from_frame(read_table(path), columns, path)
    text = str(err.value)
    assert "bad.csv" in text
    for word in words:
        assert word in text, text


def test_a_label_outside_the_classes_and_a_constant_column_are_refused(tmp_path):
    frame = recording(3, 20)
    frame.loc[9, "state"] = "sideways"
    cols = Columns(("ax", "ay"), ("state",), stream="episode", objective="classification")
    with pytest.raises(DatasetError, match=r"data row 10 .*'sideways' is not one of the classes"):
        SeriesTable.from_frame(frame, cols, "x.csv", classes=["down", "up"])
    frame = recording(3, 20)
    frame["ay"] = 2.5
    table = SeriesTable.from_frame(frame, COLUMNS, "train.csv")
    with pytest.raises(DatasetError, match=r"column 'ay' is constant .* Drop it"):
        Normaliser.fit(table)


def test_parquet_and_npy_read_like_csv(tmp_path):
    frame = recording(3, 20)[["episode", "ax", "ay", "load"]]
    frame.to_parquet(tmp_path / "a.parquet")
    np.save(tmp_path / "a.npy", frame.to_numpy(dtype=np.float64))
    a = SeriesTable.from_frame(
        read_table(tmp_path / "a.parquet"),
        COLUMNS.__class__(("ax", "ay"), ("load",), stream="episode"),
        "a.parquet",
    )
    b = SeriesTable.from_frame(
        read_table(tmp_path / "a.npy"), Columns(("1", "2"), ("3",), stream="0"), "a.npy"
    )
    assert np.array_equal(a.x, b.x) and np.array_equal(a.targets, b.targets)
    assert list(a.starts) == list(b.starts) == [0, 20, 40]


def test_splits_take_whole_streams_or_time_blocks_in_order():
    many = SeriesTable.from_frame(recording(7, 10), COLUMNS, "r.csv")
    parts = split_table(many, {"validation": 0.15, "test": 0.15})
    assert parts == {"train": [0, 1, 2, 3, 4], "validation": [5], "test": [6]}
    one = SeriesTable.from_frame(recording(1, 100), Columns(("ax",), ("load",)), "r.csv")
    blocks = split_table(one, {"validation": 0.2, "test": 0.1})
    assert blocks == {"train": (0, 70), "validation": (70, 90), "test": (90, 100)}


# ------------------------------------------------------------------------ training
def test_regression_run_scores_model_and_baselines_and_predicts_every_row(tmp_path, prepared):
    metrics = train_one(prepared, tmp_path)
    test = metrics["test"]["overall"]
    base = metrics["baseline"]["test"]
    for key in ("mse_load", "rmse_load", "mae_load", "r2_load"):
        assert np.isfinite(test[key])
        for name in ("persistence", "ar", "seasonal"):
            assert np.isfinite(base[f"{name}_{key}"])
    assert test["rmse_load"] == pytest.approx(np.sqrt(test["mse_load"]))
    # normalisation: fitted on the training split only, saved in the model
    ckpt = torch.load(tmp_path / "run" / "best_model.pth", weights_only=True)
    train = pd.read_csv(tmp_path / "results/seq/data/mine/train.csv")
    assert np.allclose(ckpt["model_state_dict"]["in_mean"].numpy(), train[["ax", "ay"]].mean())
    # the statetrain commands: same frozen metrics; one prediction row per input row
    paths = split_paths(prepared, "mine")
    again = evaluate_checkpoint(tmp_path / "run" / "best_model.pth", paths["test"])
    assert again["overall"]["mse_load"] == pytest.approx(test["mse_load"], rel=1e-6)
    out = predict_checkpoint(tmp_path / "run" / "best_model.pth", paths["test"], tmp_path / "p.csv")
    assert out["rows"] == len(pd.read_csv(paths["test"])) and out["columns"] == ["load_t+1"]
    # A new file in another format the task reads (Parquet, without the target column)
    # predicts the same rows the same way.
    frame = pd.read_csv(paths["test"])
    frame.drop(columns=["load"]).to_parquet(tmp_path / "new.parquet")
    predict_checkpoint(
        tmp_path / "run" / "best_model.pth", tmp_path / "new.parquet", tmp_path / "q.csv"
    )
    assert (tmp_path / "q.csv").read_text() == (tmp_path / "p.csv").read_text()


def test_onnx_export_takes_raw_inputs_and_matches_pytorch(tmp_path, prepared):
    """The exported step folds the normalisation in: stepped through onnxruntime over the test
    split it reproduces PyTorch, and its outputs are the predictions `statetrain predict`
    writes, in the target's units."""
    import onnxruntime

    from statetrain.export import export_checkpoint

    train_one(prepared, tmp_path)
    test = split_paths(prepared, "mine")["test"]
    ckpt = tmp_path / "run" / "best_model.pth"
    report = export_checkpoint(ckpt, tmp_path / "m.onnx", test, report_path=tmp_path / "r.json")
    assert report["passed"] and report["rows"] == 80 and report["output_size"] == 1
    assert export_checkpoint(ckpt, tmp_path / "probe.onnx")["passed"]  # random probe
    predict_checkpoint(ckpt, test, tmp_path / "p.csv")
    sess = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
    x = pd.read_csv(test)[["ax", "ay"]].to_numpy(np.float32)
    h = c = np.zeros((1, 1, 6), np.float32)
    first = []
    for row in x[:5]:
        y, h, c = sess.run(None, {"x": row.reshape(1, 1, 2), "h0": h, "c0": c})
        first.append(y[0, 0, 0])
    expected = pd.read_csv(tmp_path / "p.csv")["load_t+1"].to_numpy()[:5]
    assert np.allclose(first, expected, rtol=1e-4, atol=1e-5)


def test_same_seed_same_weights_and_resume_equals_an_uninterrupted_run(tmp_path, prepared):
    train_one(prepared, tmp_path, "a", epochs=3)
    train_one(prepared, tmp_path, "b", epochs=3)
    train_one(prepared, tmp_path, "c", epochs=2)
    train_one(prepared, tmp_path, "c", epochs=3)  # continues from c/last.pth
    weights = [
        torch.load(tmp_path / r / "best_model.pth", weights_only=True)["model_state_dict"]
        for r in "abc"
    ]
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]) and torch.equal(value, weights[2][key])
    history = json.loads((tmp_path / "c" / "training_history.json").read_text())
    assert len(history["val_loss"]) == 3


def test_classification_run_with_class_weights_and_prevalence_baseline(tmp_path, csv, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config(tmp_path, csv, targets=["state"], objective="classification")
    prepare_data(cfg, "mine")
    metrics = train_one(cfg, tmp_path, tbptt_steps=4)
    test = metrics["test"]["overall"]
    for key in ("precision_up", "recall_down", "f1_up", "auc_pr", "auc_roc", "balanced_accuracy"):
        assert 0.0 <= test[key] <= 1.0
    assert metrics["baseline"]["test"]["prevalence_auc_roc"] == pytest.approx(0.5)
    # the memoryless logistic regression on the current inputs: sign(ax) decides the label
    assert metrics["baseline"]["test"]["logistic_balanced_accuracy"] > 0.9
    ckpt = torch.load(tmp_path / "run" / "best_model.pth", weights_only=True)
    assert ckpt["sequence"]["classes"] == ["down", "up"]
    assert len(ckpt["sequence"]["class_weights"]) == 2
    out = predict_checkpoint(
        tmp_path / "run" / "best_model.pth", split_paths(cfg, "mine")["test"], tmp_path / "p.csv"
    )
    probs = pd.read_csv(tmp_path / "p.csv")["probability_up"]
    assert out["columns"] == ["probability_up"] and probs.between(0, 1).all()


def test_window_training_runs_on_a_users_streams(tmp_path, csv, monkeypatch):
    """Whole-window BPTT from each stream's start (windows of the training file), two targets
    and a horizon; the window longer than a stream is refused before training."""
    monkeypatch.chdir(tmp_path)
    cfg = config(tmp_path, csv, targets=["load", "ay"], horizon=2)
    prepare_data(cfg, "mine")
    window = {**cfg["training"]["window"], "first": 30, "iterations": 3}
    metrics = train_one(cfg, tmp_path, mode="window", window=window, epochs=1)
    assert metrics["engine"] == "torch" and np.isfinite(metrics["test"]["overall"]["mse_ay"])
    with pytest.raises(DatasetError, match="fewer than the first window"):
        train_one(cfg, tmp_path, "long", mode="window", window={**window, "first": 500})


def test_engine_auto_falls_back_to_the_reference_loop_loudly(tmp_path, prepared, caplog):
    """A loss the native kernel does not implement (L1) runs the torch reference loop, with a
    warning that says why; MSE runs natively."""
    with caplog.at_level("WARNING", logger="statetrain"):
        metrics = train_one(prepared, tmp_path, "l1", engine="auto", loss="l1", epochs=1)
    assert metrics["engine"] == "torch"
    assert any("reference loop" in r.message and "MSELoss" in r.message for r in caplog.records)
    assert train_one(prepared, tmp_path, "mse", engine="auto", epochs=1)["engine"] == "native"


def test_baselines_are_exact_on_series_they_model(tmp_path):
    """Persistence is perfect on a step-held series; AR(1) on a noiseless geometric decay."""
    t = np.arange(60)
    frame = pd.DataFrame({"x": np.sin(t / 3.0), "y": 0.9**t + 1.0})
    cols = Columns(("x",), ("y",), horizon=1)
    table = SeriesTable.from_frame(frame, cols, "s.csv")
    scores = baseline_scores(table, table, {"ar_order": 1}, None)
    assert scores["ar_mse_y"] < 1e-20
    assert scores["persistence_mae_y"] == pytest.approx(np.mean(np.abs(np.diff(frame["y"]))))
    perfect = classification_metrics(np.array([0, 1, 1, 0]), np.eye(2)[[0, 1, 1, 0]], ["a", "b"])
    assert perfect["balanced_accuracy"] == perfect["auc_pr"] == perfect["auc_roc"] == 1.0


@pytest.mark.workflow
def test_workflow_end_to_end_on_a_users_csv(tmp_path):
    """The ten-line config a user writes: validated data, training, selection, figures."""
    recording(4, 60).to_csv(tmp_path / "rec.csv", index=False)
    (tmp_path / "c.yaml").write_text(
        "task: sequence\nexperiment: mine\ndata:\n  path: rec.csv\n  inputs: [ax, ay]\n"
        "  targets: [load]\n  horizon: 1\n  stream: episode\n  time: timestamp\n"
        "datasets: {rec: {}}\ntraining: {epochs: 1, hidden_size: 4}\n"
    )
    snakemake(tmp_path, "--configfile", str(tmp_path / "c.yaml"))
    res = tmp_path / "results" / "mine"
    summary = pd.read_csv(res / "sweep" / "summary.csv")
    assert summary["selected"].all() and summary["engine"].iloc[0] == "native"
    assert {
        "test_mse_load",
        "baseline_test_ar_mse_load",
        "baseline_test_persistence_mse_load",
    } <= set(summary.columns)
    assert (res / "plots" / "rec" / "predictions.png").read_bytes().startswith(b"\x89PNG")
    from statetrain.tasks.sequence.tables import table

    rows = table(res / "sweep" / "summary.csv").splitlines()
    models = [r.split("|")[3].strip(" *") for r in rows if r.startswith("| `rec` | load |")]
    assert models == ["LSTM", "persistence", "ar"]
    assert json.loads((res / "data" / "rec" / "train.validation.json").read_text())["streams"] == 2


# ------------------------------------------------------------------------ real recordings
def aeon_config(tmp_path, monkeypatch, **data):
    monkeypatch.chdir(tmp_path)
    return validate_config(
        {
            "task": "sequence",
            "experiment": "real",
            "data": data,
            "datasets": {"mine": {}},
            "training": {"epochs": 2, "hidden_size": 8},
        }
    )


def test_real_multichannel_recording_trains_natively_exact_to_the_reference_loop(
    tmp_path, monkeypatch
):
    """aeon's Uschange (187 quarters, five channels, two targets): the native engine and the
    torch reference loop reach the same weights (to float32 rounding) through the task."""
    cfg = aeon_config(
        tmp_path,
        monkeypatch,
        aeon="Uschange",
        inputs=["Consumption", "Income", "Production", "Savings", "Unemployment"],
        targets=["Consumption", "Income"],
        horizon=1,
        period=4,
    )
    reports = prepare_data(cfg, "mine")
    assert [reports[s]["rows"] for s in ("train", "validation", "test")] == [131, 28, 28]
    native_run = train_one(cfg, tmp_path, "native", engine="native")
    torch_run = train_one(cfg, tmp_path, "torch", engine="torch")
    assert native_run["engine"] == "native" and torch_run["engine"] == "torch"
    a = torch.load(tmp_path / "native" / "best_model.pth", weights_only=True)
    b = torch.load(tmp_path / "torch" / "best_model.pth", weights_only=True)
    for key, value in b["model_state_dict"].items():
        assert torch.allclose(a["model_state_dict"][key], value, rtol=1e-5, atol=1e-5), key
    # resumed from last.pth after one epoch: the weights of the uninterrupted two-epoch run
    train_one(cfg, tmp_path, "resumed", engine="native", epochs=1)
    train_one(cfg, tmp_path, "resumed", engine="native")
    c = torch.load(tmp_path / "resumed" / "best_model.pth", weights_only=True)
    for key, value in a["model_state_dict"].items():
        assert torch.equal(c["model_state_dict"][key], value), key
    for key in ("rmse_Consumption", "r2_Income", "seasonal_mae_Income"):
        where = native_run["baseline"] if key.startswith("seasonal") else native_run
        assert np.isfinite(
            where["test"][key] if "seasonal" in key else where["test"]["overall"][key]
        )


def test_basic_motions_is_a_labelled_stream_of_whole_recordings():
    from statetrain.tasks.sequence.data import aeon_table

    frame = aeon_table("BasicMotions", seed=0)
    assert frame.shape == (8000, 9)
    sizes = frame.groupby("recording")["activity"].agg(["size", "nunique"])
    assert (sizes["size"] == 100).all() and (sizes["nunique"] == 1).all()
    assert sorted(frame["activity"].unique()) == ["badminton", "running", "standing", "walking"]
    assert not frame.equals(aeon_table("BasicMotions", seed=1))  # the seed orders recordings
