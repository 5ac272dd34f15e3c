"""The defect classifier task: generator, stratified splits, user data, training, figures.

Everything runs on small real data (a few hundred short sequences) on one CPU thread.
Multi-class labels, the user's own test split, .ts files and the archive baselines:
tests/test_ucr.py.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import nn

from statetrain.batch import minibatch_epoch
from statetrain.tasks.base import SPLITS, load_split, save_split
from statetrain.tasks.classifier import (
    ClassifierTask,
    SequenceClassifier,
    generate_sequences,
)
from statetrain.validation import DatasetError

torch.set_num_threads(1)
CPU = torch.device("cpu")

SMALL = {"sequences": 400, "length": 40, "channels": 3, "positive_rate": 0.08, "seed": 5}


def _rows(x: np.ndarray) -> list[bytes]:
    """One hashable key per sequence (continuous values: no two sequences coincide)."""
    return [row.tobytes() for row in np.ascontiguousarray(x)]


def _auc_of(stat: np.ndarray, y: np.ndarray) -> float:
    return float(roc_auc_score(y, stat))


# ============================================================================ generator
def test_generator_is_deterministic_with_exact_positive_count():
    spec = {"sequences": 300, "length": 50, "channels": 5, "positive_rate": 0.07, "seed": 11}
    x1, y1 = generate_sequences(spec)
    x2, y2 = generate_sequences(spec)
    x3, _ = generate_sequences({**spec, "seed": 12})
    assert x1.shape == (300, 50, 5) and x1.dtype == np.float32
    assert y1.shape == (300,) and y1.dtype == np.float32
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.allclose(x1, x3)
    assert set(np.unique(y1)) == {0.0, 1.0}
    assert int(y1.sum()) == round(300 * 0.07) == 21
    # A tiny rate still yields one positive, so a split never has nothing to learn from.
    _, y_tiny = generate_sequences({**spec, "positive_rate": 0.001})
    assert int(y_tiny.sum()) == 1


def test_defect_signature_is_real_but_not_trivial():
    spec = {"sequences": 1000, "length": 80, "channels": 6, "positive_rate": 0.07, "seed": 0}
    x, y = generate_sequences(spec)
    z = (x - x.mean(axis=(0, 1))) / x.std(axis=(0, 1))
    # High-frequency content (chatter) and a late level change (ramp) against the middle.
    jump = np.abs(np.diff(z, axis=1)).max(axis=(1, 2))
    shift = np.abs(z[:, -8:].mean(axis=1) - z[:, 30:50].mean(axis=1)).max(axis=1)
    assert _auc_of(jump, y) > 0.65
    assert _auc_of(shift, y) > 0.65
    # A naive per-sequence std threshold separates them only partly.
    naive_std = z.std(axis=1).mean(axis=1)
    assert 0.5 < _auc_of(naive_std, y) < 0.99
    assert 0.4 < _auc_of(z.mean(axis=(1, 2)), y) < 0.6
    # Without a defect the same statistics see nothing: the difference is the signature.
    x0, y0 = generate_sequences({**spec, "defect_strength": 0.0})
    z0 = (x0 - x0.mean(axis=(0, 1))) / x0.std(axis=(0, 1))
    assert _auc_of(np.abs(np.diff(z0, axis=1)).max(axis=(1, 2)), y0) < 0.6


# ============================================================================ splits
def test_splits_are_stratified_disjoint_and_complete(tmp_path: Path):
    spec = {**SMALL, "sequences": 600, "split": {"validation": 0.2, "test": 0.2}}
    task = ClassifierTask(spec)
    splits = task.make_splits()
    x, y = generate_sequences(spec)
    total_rate = float(y.mean())
    keys = {s: _rows(splits[s]["x"]) for s in SPLITS}
    for s in SPLITS:
        assert splits[s]["x"].dtype == np.float32 and splits[s]["y"].dtype == np.float32
        assert abs(float(splits[s]["y"].mean()) - total_rate) < 0.02, s
        assert splits[s]["y"].sum() >= 1
    assert sum(len(k) for k in keys.values()) == len(x)
    assert set(keys["train"]).isdisjoint(keys["validation"])
    assert set(keys["train"]).isdisjoint(keys["test"])
    assert set(keys["validation"]).isdisjoint(keys["test"])
    assert set().union(*keys.values()) == set(_rows(x))
    # Labels travel with their sequences.
    label_of = dict(zip(_rows(x), y, strict=True))
    assert all(label_of[k] == v for k, v in zip(keys["test"], splits["test"]["y"], strict=True))
    # Same spec → same splits.
    again = ClassifierTask(spec).make_splits()
    assert np.array_equal(again["validation"]["x"], splits["validation"]["x"])

    path = save_split(splits["validation"], tmp_path / "data" / "validation.npz")
    loaded = load_split(path, ("x", "y"))
    assert np.array_equal(loaded["x"], splits["validation"]["x"])
    assert np.array_equal(loaded["y"], splits["validation"]["y"])
    report = task.validate(loaded, path)
    n = len(splits["validation"]["y"])
    assert report == {
        "sequences": n,
        "length": 40,
        "channels": 3,
        "positives": int(splits["validation"]["y"].sum()),
        "positive_rate": pytest.approx(float(splits["validation"]["y"].mean())),
    }


def test_validate_refuses_a_bad_split(tmp_path: Path):
    task = ClassifierTask(SMALL)
    split = task.make_splits()["test"]
    with pytest.raises(DatasetError) as err:
        task.validate({"x": split["x"]}, tmp_path / "t.npz")
    assert err.value.check == "arrays"
    bad = split["y"].copy()
    bad[3] = 2
    with pytest.raises(DatasetError) as err:
        task.validate({"x": split["x"], "y": bad}, tmp_path / "t.npz")
    assert err.value.check == "binary labels" and "label 3" in str(err.value)
    x = split["x"].copy()
    x[4, 2, 1] = np.inf
    with pytest.raises(DatasetError, match="sequence 4, time step 2, channel 1") as err:
        task.validate({"x": x, "y": split["y"]}, tmp_path / "t.npz")
    assert err.value.check == "finite"
    # A split without positives is legal; the report says so.
    negatives = split["y"] == 0
    report = task.validate({"x": split["x"][negatives], "y": split["y"][negatives]}, "t.npz")
    assert report["positives"] == 0 and report["positive_rate"] == 0.0


# ============================================================================ pos_weight
def test_pos_weight_is_n_neg_over_n_pos_unless_overridden():
    task = ClassifierTask(SMALL)
    train = task.make_splits()["train"]
    n_pos = int(train["y"].sum())
    n_neg = len(train["y"]) - n_pos
    task.prepare(train)
    assert task.pos_weight == pytest.approx(n_neg / n_pos)
    model = task.build_model(train)
    assert float(model.pos_weight) == pytest.approx(n_neg / n_pos)

    forced = ClassifierTask(SMALL, {"pos_weight": 3.0})
    forced.prepare(train)
    assert forced.pos_weight == 3.0
    # The loss really uses it: evaluate's loss is the weighted BCE of the logits.
    torch.manual_seed(0)
    model = forced.build_model(train)
    metrics = forced.evaluate(model, train, CPU)
    with torch.no_grad():
        logits = model(torch.as_tensor(train["x"]))
        expected = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(3.0))(
            logits, torch.as_tensor(train["y"])
        )
    assert metrics["loss"] == pytest.approx(float(expected), rel=1e-5)
    # A model loaded elsewhere (no prepare) evaluates with the weight it was trained with.
    fresh = ClassifierTask(SMALL)
    assert fresh.evaluate(model, train, CPU)["loss"] == pytest.approx(metrics["loss"], rel=1e-6)


# ============================================================================ user data
def _user_files(tmp_path: Path, n: int = 60, labels: np.ndarray | None = None):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, 20, 2)).astype(np.float32)
    y = np.zeros(n, dtype=np.int64) if labels is None else labels
    if labels is None:
        y[::6] = 1
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return x, y


def test_user_npy_loads_with_labels(tmp_path: Path):
    x, y = _user_files(tmp_path)
    spec = {"path": str(tmp_path / "x.npy"), "labels_path": str(tmp_path / "y.npy"), "seed": 1}
    splits = ClassifierTask(spec).make_splits()
    got = np.concatenate([splits[s]["x"] for s in SPLITS])
    assert sorted(_rows(got)) == sorted(_rows(x))
    assert sum(int(splits[s]["y"].sum()) for s in SPLITS) == int(y.sum())
    label_of = dict(zip(_rows(x), y.astype(np.float32), strict=True))
    for s in SPLITS:
        assert all(
            label_of[k] == v for k, v in zip(_rows(splits[s]["x"]), splits[s]["y"], strict=True)
        )


def _bad_2d(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((60, 20), np.float32))


def _bad_nan(tmp_path):
    x = np.load(tmp_path / "x.npy")
    x[7, 3, 1] = np.nan
    np.save(tmp_path / "x.npy", x)


def _bad_label(tmp_path):
    y = np.load(tmp_path / "y.npy")
    y[5] = 2
    np.save(tmp_path / "y.npy", y)


def _bad_count(tmp_path):
    np.save(tmp_path / "y.npy", np.load(tmp_path / "y.npy")[:-3])


def _bad_pickle(tmp_path):
    (tmp_path / "x.npy").write_bytes(pickle.dumps({"x": [1, 2, 3]}))


def _bad_one_class(tmp_path):
    np.save(tmp_path / "y.npy", np.zeros(60, np.int64))


def _bad_few(tmp_path):
    np.save(tmp_path / "x.npy", np.load(tmp_path / "x.npy")[:6])
    np.save(tmp_path / "y.npy", np.array([0, 1, 0, 1, 0, 0]))


@pytest.mark.parametrize(
    ("corrupt", "check", "words"),
    [
        (_bad_2d, "3-D", "shape (60, 20)"),
        (_bad_nan, "finite", "sequence 7, time step 3, channel 1"),
        (_bad_label, "class size", "label 5 is 2"),  # a third class of one sequence
        (_bad_count, "label count", "57 labels for 60 sequences"),
        (_bad_pickle, "readable", "pickle"),
        (_bad_one_class, "both classes", "no positive"),
        (_bad_few, "sequence count", "only 6 sequences"),
    ],
)
def test_bad_user_data_is_refused_with_the_check_named(tmp_path, corrupt, check, words):
    _user_files(tmp_path)
    corrupt(tmp_path)
    spec = {"path": str(tmp_path / "x.npy"), "labels_path": str(tmp_path / "y.npy")}
    with pytest.raises(DatasetError) as err:
        ClassifierTask(spec).make_splits()
    assert err.value.check == check
    assert words in str(err.value)


def test_missing_labels_path_is_refused(tmp_path: Path):
    _user_files(tmp_path)
    with pytest.raises(DatasetError) as err:
        ClassifierTask({"path": str(tmp_path / "x.npy")}).make_splits()
    assert err.value.check == "labels_path"
    assert "data.labels_path" in str(err.value)


# ============================================================================ model
def test_model_shapes_buffers_and_rebuild():
    task = ClassifierTask(SMALL, {"hidden_size": 8, "num_layers": 2, "bidirectional": True})
    train = task.make_splits()["train"]
    torch.manual_seed(0)
    model = task.build_model(train)
    assert isinstance(model, SequenceClassifier)
    assert np.allclose(model.mean.numpy(), train["x"].mean(axis=(0, 1)), rtol=1e-4, atol=1e-4)
    assert np.allclose(model.std.numpy(), train["x"].std(axis=(0, 1)), rtol=1e-4)
    x = torch.as_tensor(train["x"][:5])
    model.eval()
    assert model(x).shape == (5,)
    args = task.model_args(model)
    assert args == {
        "input_size": 3,
        "hidden_size": 8,
        "num_layers": 2,
        "dropout": 0.2,
        "bidirectional": True,
    }
    clone = task.model_from_args(args)
    clone.load_state_dict(model.state_dict())
    clone.eval()
    assert torch.equal(clone(x), model(x))
    assert torch.equal(clone.mean, model.mean) and torch.equal(clone.std, model.std)
    # A constant channel's std is floored, so normalising never divides by zero.
    flat = dict(train, x=train["x"].copy())
    flat["x"][..., 0] = 5.0
    assert float(task.build_model(flat).std[0]) == pytest.approx(1e-6)


def test_evaluate_and_baseline_values():
    task = ClassifierTask(SMALL, {"hidden_size": 8, "num_layers": 1, "threshold": 0.7})
    splits = task.make_splits()
    task.prepare(splits["train"])
    torch.manual_seed(0)
    model = task.build_model(splits["train"])
    metrics = task.evaluate(model, splits["test"], CPU)
    expected = {
        "loss",
        "accuracy",
        "balanced_accuracy",
        "macro_f1",
        "precision",
        "recall",
        "f1",
        "auc_roc",
        "auc_pr",
        "positive_rate",
        "threshold",
    }
    assert set(metrics) == expected
    assert all(type(v) is float for v in metrics.values())
    assert metrics["threshold"] == 0.7
    assert metrics["positive_rate"] == pytest.approx(float(splits["test"]["y"].mean()))
    # One class only: the AUCs are undefined (nan), not a crash.
    neg = splits["test"]["y"] == 0
    one = task.evaluate(model, {"x": splits["test"]["x"][neg], "y": splits["test"]["y"][neg]}, CPU)
    assert np.isnan(one["auc_roc"]) and np.isnan(one["auc_pr"])
    assert one["precision"] == 0.0 and one["recall"] == 0.0

    base = task.baseline(splits["train"], splits["test"])
    rate = float(splits["test"]["y"].mean())
    assert base["auc_pr"] == pytest.approx(rate)
    assert base["accuracy"] == pytest.approx(1 - rate)  # always "normal"
    # Under pos_weight w = n_neg/n_pos the best constant is p = 0.5, which costs log 2 per
    # negative and w·log 2 per positive.
    w = task.pos_weight
    assert base["loss"] == pytest.approx(np.log(2) * (w * rate + 1 - rate), rel=1e-6)


def test_minibatch_epoch_skips_non_finite_batches():
    task = ClassifierTask(SMALL, {"hidden_size": 8, "num_layers": 1, "batch_size": 50})
    train = task.make_splits()["train"]
    task.prepare(train)
    torch.manual_seed(0)
    model = task.build_model(train)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    poisoned = dict(train, x=np.full_like(train["x"], np.nan))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    out = minibatch_epoch(task, model, opt, poisoned, torch.Generator().manual_seed(0), CPU)
    assert np.isnan(out["train_loss"])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # A normal epoch moves the weights and reports finite numbers (clipping on).
    task.training["clip_grad_norm"] = 0.5
    out = minibatch_epoch(task, model, opt, train, torch.Generator().manual_seed(0), CPU)
    assert set(out) == {"train_loss", "train_accuracy", "grad_norm_mean", "skipped_batches"}
    assert all(np.isfinite(v) for v in out.values())
    assert out["grad_norm_mean"] > 0
    assert not torch.equal(before["head.weight"], model.state_dict()["head.weight"])


# ============================================================================ learning
TRAIN_SPEC = {
    "sequences": 800,
    "length": 60,
    "channels": 4,
    "positive_rate": 0.1,
    "seed": 0,
    "split": {"validation": 0.25, "test": 0.25},
}
TRAINING = {
    "hidden_size": 32,
    "num_layers": 1,
    "dropout": 0.0,
    "batch_size": 32,
    "clip_grad_norm": 1.0,
    "lr": 3e-3,
    "weight_decay": 1e-4,
}


def _train(epochs: int = 12, seed: int = 0):
    """The trainer's contract in miniature: build, prepare, Adam, one seeded generator/epoch."""
    task = ClassifierTask(TRAIN_SPEC, TRAINING)
    splits = task.make_splits()
    task.prepare(splits["train"])
    torch.manual_seed(seed)
    model = task.build_model(splits["train"])
    opt = torch.optim.Adam(
        model.parameters(), lr=TRAINING["lr"], weight_decay=TRAINING["weight_decay"]
    )
    history = {"epoch": [], "train_loss": []}
    for epoch in range(epochs):
        gen = torch.Generator().manual_seed(seed * 1000 + epoch)
        out = minibatch_epoch(task, model, opt, splits["train"], gen, CPU)
        history["epoch"].append(epoch + 1)
        history["train_loss"].append(out["train_loss"])
    return task, splits, model, history


@pytest.fixture(scope="module")
def trained():
    return _train()


def test_small_lstm_learns_the_defects(trained):
    task, splits, model, history = trained
    assert history["train_loss"][-1] < 0.7 * history["train_loss"][0]
    val = task.evaluate(model, splits["validation"], CPU)
    test = task.evaluate(model, splits["test"], CPU)
    for metrics, split in ((val, "validation"), (test, "test")):
        base = task.baseline(splits["train"], splits[split])
        assert metrics["auc_pr"] >= 3 * metrics["positive_rate"], (split, metrics)
        assert metrics["auc_pr"] > base["auc_pr"]
        assert metrics["auc_roc"] > 0.8, (split, metrics)
        assert metrics["recall"] >= 0.4
        # ... and beats the naive per-sequence std score, which a defect also raises.
        x = (splits[split]["x"] - model.mean.numpy()) / model.std.numpy()
        naive = average_precision_score(splits[split]["y"], x.std(axis=1).mean(axis=1))
        assert metrics["auc_pr"] > naive + 0.2, (split, metrics["auc_pr"], naive)


def test_same_seed_gives_identical_weights(trained):
    _, _, model, _ = trained
    _, _, again, _ = _train()
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    _, _, other, _ = _train(epochs=1, seed=1)
    assert not torch.equal(other.state_dict()["head.weight"], model.state_dict()["head.weight"])


def test_plot_writes_three_figures(trained, tmp_path: Path):
    task, splits, model, history = trained
    out = {name: tmp_path / "figs" / name for name in task.figures}
    task.plot(model, splits, history, out, title="small run")
    for path in out.values():
        assert path.is_file() and path.stat().st_size > 5000
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
