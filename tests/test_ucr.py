"""The classifier on real benchmarks: multi-class labels of any values, the user's own test
split, `.ts` files read by aeon, variable lengths, the archive baselines, predictions named
by class (issue 18).

Small real data only: the archive datasets the pinned aeon wheel ships (BasicMotions: 40 + 40
sequences of 100 steps, 6 channels; JapaneseVowels: 7..29 steps, 12 channels), and small
`.npy` files written here. One CPU thread.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from statetrain import runner
from statetrain.batch import minibatch_epoch
from statetrain.config import ConfigError, dataset_spec, training_config, validate_config
from statetrain.export import session, write_onnx
from statetrain.inference import predict_checkpoint
from statetrain.tasks.base import load_split, save_split
from statetrain.tasks.classifier import (
    ClassifierTask,
    SequenceClassifier,
    class_order,
    class_probabilities,
)
from statetrain.tasks.ucr import Baselines, archive_paths, benchmark_table, read_ts
from statetrain.validation import DatasetError

torch.set_num_threads(1)
CPU = torch.device("cpu")


def _rows(x: np.ndarray) -> list[bytes]:
    return [row.tobytes() for row in np.ascontiguousarray(x)]


def _three_classes(tmp_path: Path, n: int = 90, n_test: int = 45, t_len: int = 30):
    """Three classes told apart by the sign and size of a level shift (learnable in seconds);
    labels are texts, as a benchmark's are."""
    rng = np.random.default_rng(7)
    names = np.array(["down", "flat", "up"])

    def make(count: int):
        y = names[np.arange(count) % 3]
        shift = np.where(y == "up", 2.0, np.where(y == "down", -2.0, 0.0))
        x = (
            rng.normal(size=(count, t_len, 2))
            + shift[:, None, None] * np.linspace(0, 1, t_len)[None, :, None]
        )
        return x.astype(np.float32), y

    x, y = make(n)
    tx, ty = make(n_test)
    for name, arr in (("x", x), ("y", y), ("tx", tx), ("ty", ty)):
        np.save(tmp_path / f"{name}.npy", arr)
    spec = {
        "path": str(tmp_path / "x.npy"),
        "labels_path": str(tmp_path / "y.npy"),
        "test_path": str(tmp_path / "tx.npy"),
        "test_labels_path": str(tmp_path / "ty.npy"),
        "split": {"validation": 0.2, "test": 0.15},
        "seed": 3,
    }
    return spec, (x, y, tx, ty)


# ============================================================================ labels, splits
def test_class_order_is_numeric_for_numbers():
    assert class_order(np.array(["1", "10", "2", "9"])) == ("1", "2", "9", "10")
    assert class_order(np.array(["walking", "badminton"])) == ("badminton", "walking")


def test_own_test_split_is_kept_whole_and_validation_is_carved_stratified(tmp_path):
    spec, (x, _y, tx, ty) = _three_classes(tmp_path)
    splits = ClassifierTask(spec).make_splits()
    # The test split is the user's file, in its order, untouched.
    assert np.array_equal(splits["test"]["x"], tx)
    assert splits["test"]["classes"].tolist() == ["down", "flat", "up"]
    assert [["down", "flat", "up"][int(i)] for i in splits["test"]["y"]] == ty.tolist()
    # Train and validation partition the training file, stratified (6 of 30 per class).
    keys = {s: _rows(splits[s]["x"]) for s in ("train", "validation")}
    assert set(keys["train"]).isdisjoint(keys["validation"])
    assert sorted(keys["train"] + keys["validation"]) == sorted(_rows(x))
    assert np.bincount(splits["validation"]["y"].astype(int)).tolist() == [6, 6, 6]
    # The same seed gives the same carving; the split files round-trip without pickles.
    again = ClassifierTask(spec).make_splits()
    assert np.array_equal(again["validation"]["x"], splits["validation"]["x"])
    path = save_split(splits["test"], tmp_path / "test.npz")
    report = ClassifierTask(spec).validate(load_split(path), path)
    assert report["classes"] == {"down": 15, "flat": 15, "up": 15}
    assert "positives" not in report


def test_integer_labels_of_any_values_and_declared_classes(tmp_path):
    spec, (_x, y, _tx, ty) = _three_classes(tmp_path)
    codes = {"down": 7, "flat": 10, "up": 30}
    np.save(tmp_path / "y.npy", np.array([codes[v] for v in y]))
    np.save(tmp_path / "ty.npy", np.array([codes[v] for v in ty]))
    splits = ClassifierTask(spec).make_splits()
    assert splits["train"]["classes"].tolist() == ["7", "10", "30"]
    # Declared classes fix the order; a label outside them is refused by row.
    declared = ClassifierTask({**spec, "classes": [30, 10, 7]}).make_splits()
    assert declared["test"]["classes"].tolist() == ["30", "10", "7"]
    with pytest.raises(DatasetError) as err:
        ClassifierTask({**spec, "classes": [7, 10]}).make_splits()
    assert err.value.check == "classes" and "label 2 is 30" in str(err.value)
    assert str(tmp_path / "y.npy") in str(err.value)


def test_a_test_class_never_seen_in_training_is_refused(tmp_path):
    spec, (_, _, _, ty) = _three_classes(tmp_path)
    ty = ty.astype("<U16")
    ty[4] = "sideways"
    np.save(tmp_path / "ty.npy", ty)
    with pytest.raises(DatasetError) as err:
        ClassifierTask(spec).make_splits()
    text = str(err.value)
    assert err.value.check == "classes"
    assert "ty.npy" in text and "label 4 is sideways" in text and "'sideways'" in text
    assert "\n" not in text  # one paragraph


@pytest.mark.parametrize(
    ("corrupt", "check", "words"),
    [
        (lambda p: np.save(p / "tx.npy", np.zeros((45, 30, 3), np.float32)), "channels", "3"),
        (lambda p: np.save(p / "ty.npy", np.array(["up"] * 44)), "label count", "44 labels"),
        (lambda p: (p / "ty.npy").unlink(), "exists", "labels file"),
        (lambda p: np.save(p / "y.npy", np.array(["a,b"] * 90)), "labels", "commas"),
    ],
)
def test_bad_test_files_are_refused_naming_file_and_fix(tmp_path, corrupt, check, words):
    spec, _ = _three_classes(tmp_path)
    corrupt(tmp_path)
    with pytest.raises(DatasetError) as err:
        ClassifierTask(spec).make_splits()
    assert err.value.check == check and words in str(err.value)


def test_a_ragged_npy_is_refused_with_the_ts_way_out(tmp_path):
    spec, _ = _three_classes(tmp_path)
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = np.zeros((3, 1)), np.zeros((5, 1))
    np.save(tmp_path / "x.npy", ragged, allow_pickle=True)
    with pytest.raises(DatasetError, match="object"):
        ClassifierTask(spec).make_splits()


def test_config_keys_of_outside_programs_validate():
    cfg = validate_config(
        {
            "task": "classifier",
            "data": {
                "path": "X_train.npy",
                "labels_path": "y_train.npy",
                "test_path": "X_test.npy",
                "test_labels_path": "y_test.npy",
            },
            "datasets": {"mine": {}},
        }
    )
    spec = dataset_spec(cfg, "mine")
    assert spec["test_path"] == "X_test.npy" and spec["baselines"] is None
    with pytest.raises(ConfigError, match="baselines"):
        validate_config({"task": "classifier", "data": {"baselines": ["knn"]}})


# ============================================================================ .ts, lengths
def test_ts_files_of_the_archive_are_read_by_aeon():
    x, lengths, labels = read_ts(archive_paths("BasicMotions")["train"])
    assert x.shape == (40, 100, 6) and x.dtype == np.float32
    assert (lengths == 100).all()
    assert sorted(set(labels)) == ["badminton", "running", "standing", "walking"]
    x, lengths, labels = read_ts(archive_paths("JapaneseVowels")["train"])
    assert x.shape == (270, 26, 12) and lengths.min() == 7 and lengths.max() == 26
    short = int(np.argmin(lengths))
    assert (x[short, lengths[short] :] == 0).all()  # zero padding past each length
    with pytest.raises(DatasetError, match="does not ship"):
        archive_paths("NoSuchArchive")


def test_variable_lengths_are_packed_exactly():
    """The padded batch's logits equal each sequence's own, unpadded forward pass: the
    padding is never read (packing), in both directions."""
    torch.manual_seed(0)
    model = SequenceClassifier(
        3, hidden_size=8, num_layers=2, bidirectional=True, classes=["a", "b", "c"]
    ).eval()
    rng = np.random.default_rng(0)
    lengths = np.array([5, 12, 1, 9])
    x = np.zeros((4, 12, 3), np.float32)
    for i, n in enumerate(lengths):
        x[i, :n] = rng.normal(size=(n, 3))
    with torch.no_grad():
        batch = model(torch.as_tensor(x), torch.as_tensor(lengths))
        alone = torch.cat([model(torch.as_tensor(x[i : i + 1, :n])) for i, n in enumerate(lengths)])
        garbage = x.copy()
        garbage[0, 5:] = 1e6
        again = model(torch.as_tensor(garbage), torch.as_tensor(lengths))
    assert torch.allclose(batch, alone, atol=1e-6)
    assert torch.equal(batch, again)


def test_variable_length_archive_trains_and_predicts(tmp_path):
    spec = {"archive": "JapaneseVowels", "split": {"validation": 0.2}, "baselines": []}
    task = ClassifierTask(spec, {"hidden_size": 16, "num_layers": 1, "batch_size": 32})
    splits = task.make_splits()
    assert "lengths" in splits["test"] and len(splits["test"]["y"]) == 370
    assert splits["train"]["x"].shape[1] == splits["test"]["x"].shape[1] == 29
    task.prepare(splits["train"])
    torch.manual_seed(0)
    model = task.build_model(splits["train"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for epoch in range(6):
        minibatch_epoch(
            task, model, opt, splits["train"], torch.Generator().manual_seed(epoch), CPU
        )
    # Exported: one ONNX call per sequence length, unpadded, equal to the packed PyTorch path.
    onnx_file = write_onnx(task.onnx_graph(model.eval()), tmp_path / "vowels.onnx")
    check = task.check_onnx(session(onnx_file), model, splits["test"], 1e-4)
    assert check["passed"] and check["rows"] == 370, check
    probe = task.check_onnx(session(onnx_file), model, None, 1e-4)  # no data: a random probe
    assert probe["passed"] and probe["rows"] == 32
    metrics = task.evaluate(model, splits["test"], CPU)
    assert set(metrics) == {
        "loss",
        "accuracy",
        "balanced_accuracy",
        "macro_f1",
        "auc_roc",
        "auc_pr",
    }
    assert metrics["accuracy"] > 0.5  # chance: 1/9
    proba = class_probabilities(model, splits["test"]["x"], CPU, splits["test"]["lengths"])
    assert proba.shape == (370, 9) and np.allclose(proba.sum(axis=1), 1.0)


def test_forget_bias_is_honoured_at_initialisation():
    """training.forget_bias (shared with the frequency task) opens the forget gates of every
    layer and direction; 0 leaves PyTorch's initialisation untouched."""
    spec = {"sequences": 60, "length": 20, "channels": 2, "positive_rate": 0.2}
    training = {"hidden_size": 4, "num_layers": 2, "bidirectional": True}
    train = ClassifierTask(spec).make_splits()["train"]
    torch.manual_seed(0)
    plain = ClassifierTask(spec, training).build_model(train)
    torch.manual_seed(0)
    biased = ClassifierTask(spec, {**training, "forget_bias": 2.0}).build_model(train)
    for name, value in plain.lstm.named_parameters():
        delta = dict(biased.lstm.named_parameters())[name] - value
        expected = torch.zeros_like(value)
        if name.startswith("bias_ih"):
            expected[4:8] = 2.0
        assert torch.allclose(delta, expected), name


# ============================================================================ baselines
def test_archive_baselines_score_the_same_splits():
    spec = {"archive": "BasicMotions", "split": {"validation": 0.25}}
    task = ClassifierTask(spec)
    splits = task.make_splits()
    task.prepare(splits["train"])
    base = task.baseline(splits["train"], splits["test"])
    for name in ("dtw", "minirocket"):
        for metric in ("accuracy", "balanced_accuracy", "macro_f1"):
            assert 0.0 <= base[f"{name}_{metric}"] <= 1.0
    # BasicMotions is easy for both (the archive's 1-NN DTW accuracy: 0.975).
    assert base["dtw_accuracy"] >= 0.9 and base["minirocket_accuracy"] >= 0.9
    assert base["accuracy"] == 0.25  # the majority class of four balanced ones
    # Fitted once per training split: validation and test share the fit.
    fitted = task._baselines
    task.baseline(splits["train"], splits["validation"])
    assert task._baselines is fitted
    # Generated data run no archive baselines unless asked.
    assert "dtw_accuracy" not in ClassifierTask({"sequences": 60, "length": 20}).baseline(
        *[
            ClassifierTask({"sequences": 60, "length": 20}).make_splits()[s]
            for s in ("train", "test")
        ]
    )


def test_baselines_accept_variable_lengths():
    x, lengths, labels = read_ts(archive_paths("JapaneseVowels")["train"])
    y = np.array([int(v) - 1 for v in labels])
    b = Baselines().fit(x[::3], y[::3], lengths[::3])
    scores = b.score(x[1::3], y[1::3], lengths[1::3])
    assert scores["dtw_accuracy"] > 0.8 and scores["minirocket_accuracy"] > 0.8


# ============================================================================ end to end
def test_multiclass_run_with_own_test_split_and_predict(tmp_path):
    """A user's (N, T, C) .npy with text labels and their own test split through the runner,
    then `statetrain predict`: one probability column per class, named by the label."""
    data_spec, (_, _, tx, ty) = _three_classes(tmp_path)
    cfg = validate_config(
        {
            "task": "classifier",
            "data": {**data_spec, "baselines": ["dtw"]},
            "datasets": {"d": {}},
            "training": {
                "hidden_size": 16,
                "num_layers": 1,
                "epochs": 15,
                "batch_size": 16,
                "lr": 0.01,
            },
        }
    )
    spec = dataset_spec(cfg, "d")
    splits = ClassifierTask(spec).make_splits()
    paths = {s: save_split(a, tmp_path / "data" / f"{s}.npz") for s, a in splits.items()}
    training = training_config(cfg, {}, "d")
    metrics = runner.run("classifier", spec, training, paths, tmp_path / "run")
    test = metrics["test"]["overall"]
    assert test["accuracy"] > 0.6 and test["macro_f1"] > 0.5
    assert 0.0 <= metrics["baseline"]["test"]["dtw_accuracy"] <= 1.0
    out = tmp_path / "pred.csv"
    predict_checkpoint(tmp_path / "run" / "best_model.pth", paths["test"], out)
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["down", "flat", "up"] and len(rows) == 1 + len(tx)
    proba = np.array(rows[1:], dtype=float)
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    hits = np.mean(np.array(rows[0])[proba.argmax(axis=1)] == ty)
    assert hits == pytest.approx(test["accuracy"])


def test_benchmark_table_says_who_wins(tmp_path):
    rows = [
        {
            "dataset": "A",
            "selected": True,
            "test_accuracy": 0.9,
            "test_balanced_accuracy": 0.9,
            "test_macro_f1": 0.9,
            "baseline_test_dtw_accuracy": 0.95,
            "baseline_test_dtw_balanced_accuracy": 0.95,
            "baseline_test_dtw_macro_f1": 0.95,
            "baseline_test_minirocket_accuracy": 0.8,
            "baseline_test_minirocket_balanced_accuracy": 0.8,
            "baseline_test_minirocket_macro_f1": 0.8,
        },
        {"dataset": "B", "selected": False, "test_accuracy": 0.1},
    ]
    import pandas as pd

    table = benchmark_table(pd.DataFrame(rows), {"A": "GunPoint"})
    assert "| `A` |" in table and "`B`" not in table
    assert "1-NN DTW (LSTM loses)" in table
    assert "| 1.000 |" in table  # HC2's published GunPoint accuracy from aeon's results file


@pytest.mark.workflow
def test_workflow_runs_a_users_multiclass_npy_with_own_test_split(tmp_path):
    """The keys outside programs write, through Snakemake end to end: summary.csv carries the
    LSTM's and the baseline's accuracy, balanced accuracy and macro-F1 side by side, and the
    console's `statetrain predict` names its columns by class."""
    import subprocess

    import pandas as pd
    import yaml

    from .conftest import PYTHON, snakemake

    data_spec, (_, _, tx, _) = _three_classes(tmp_path)
    cfg = {
        "task": "classifier",
        "data": {**data_spec, "baselines": ["dtw"]},
        "datasets": {"mine": {}},
        "training": {"hidden_size": 8, "num_layers": 1, "epochs": 3, "batch_size": 16},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(tmp_path, "--configfile", str(tmp_path / "c.yaml"))
    summary = pd.read_csv(next(tmp_path.glob("results/**/sweep/summary.csv")))
    for prefix in ("test_", "baseline_test_dtw_"):
        for metric in ("accuracy", "balanced_accuracy", "macro_f1"):
            assert 0.0 <= float(summary[prefix + metric].iloc[0]) <= 1.0, prefix + metric
    best = next(tmp_path.glob("results/**/best/mine/best_model.pth"))
    test = next(tmp_path.glob("results/**/data/mine/test.npz"))
    out = tmp_path / "probs.csv"
    proc = subprocess.run(
        [PYTHON, "-m", "statetrain.cli", "predict", str(best), str(test), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = out.read_text().splitlines()
    assert lines[0] == "down,flat,up" and len(lines) == 1 + len(tx)
    # The same model's frozen metrics, and its ONNX form checked against PyTorch.
    proc = subprocess.run(
        [PYTHON, "-m", "statetrain.cli", "evaluate", str(best), str(test)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["overall"]["accuracy"] == pytest.approx(
        float(summary["test_accuracy"].iloc[0]),
        rel=1e-5,  # summary.csv keeps 6 digits
    )
    onnx_file = tmp_path / "clf.onnx"
    proc = subprocess.run(
        [PYTHON, "-m", "statetrain.cli", "export", str(best), str(onnx_file), "--data", str(test)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    check = json.loads((tmp_path / "clf.check.json").read_text())
    assert check["passed"] and check["rows"] == len(tx) and check["classes"] == "down,flat,up"
