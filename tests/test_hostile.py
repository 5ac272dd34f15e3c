"""Hostile and faulty input: every case is refused with one clear paragraph and destroys
nothing (issue 15's classes, each with the smallest input that showed it)."""

from __future__ import annotations

import json
import logging
import re
import resource
import subprocess
import zipfile

import numpy as np
import pytest
import torch

from statetrain import runner
from statetrain.checkpoint import CheckpointError, load_checkpoint_file, load_model
from statetrain.config import ConfigError, load_config, training_config, validate_config
from statetrain.io import WriteError, atomic_write
from statetrain.validation import DatasetError, load_array, read_csv_strict

from .conftest import PYTHON

LABELS = {"dataset": "t", "grid_point": "g"}


def run(training_cfg, paths, out, **overrides):
    return runner.run(
        "frequency",
        {"frequencies": [1, 3, 5, 7]},
        {**training_cfg, **overrides},
        paths,
        out,
        labels=LABELS,
    )


@pytest.fixture
def trained(training_cfg, small_paths, tmp_path):
    """A finished one-epoch run: (run directory, its training section)."""
    out = tmp_path / "run"
    cfg = {**training_cfg, "epochs": 1}
    run(cfg, small_paths, out)
    return out, cfg


def cli(*args, cwd=None):
    return subprocess.run(
        [PYTHON, "-m", "statetrain.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


# ---------------------------------------------------------------- config values
@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        ({"training": {"lr": float("nan")}}, "training.lr"),
        ({"training": {"forget_bias": float("inf")}}, "training.forget_bias"),
        ({"data": {"phase_jitter": float("nan")}}, "data.phase_jitter"),
        ({"data": {"duration_s": float("inf")}}, "data.duration_s"),
        ({"task": "classifier", "training": {"threshold": float("nan")}}, "training.threshold"),
        ({"grid": {"lr": [0.001, float("nan")]}}, "grid.lr[1]"),
        ({"datasets": {"a": {"training": {"lr": float("-inf")}}}}, "datasets.a.training.lr"),
    ],
)
def test_non_finite_config_values_are_refused_by_key(cfg, key):
    with pytest.raises(ConfigError, match=re.escape(f"'{key}'")):
        validate_config(cfg)


def test_a_non_finite_grid_point_from_the_command_line_is_refused():
    cfg = validate_config({})
    with pytest.raises(ConfigError, match=r"training\.lr"):
        training_config(cfg, {"lr": float("nan")})


@pytest.mark.parametrize(
    ("training", "key"),
    [({"hidden_size": 10**8}, "hidden_size"), ({"num_layers": 10_000}, "num_layers")],
)
def test_sizes_have_upper_bounds(training, key):
    with pytest.raises(ConfigError, match=rf"training.{key}.*maximum"):
        validate_config({"training": training})


def test_a_yaml_alias_bomb_is_refused_quickly_and_small(tmp_path):
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\ndata: {frequencies: *a8}\n")
    assert path.stat().st_size < 1000  # 10^9 values once expanded
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ConfigError, match="expands to more than"):
        load_config(path)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"training": {"seed": 10**30}}, "maximum of 4294967295"),
        ({"data": {"frequencies": [1, 700]}}, "alias"),
        ({"data": {"duration_s": 10**6}}, "rows per stream"),
        ({"grid": {"seed": list(range(400)), "lr": [1e-4 * (i + 1) for i in range(300)]}}, "grid"),
        ({"data": {"fs": "1.0e3"}}, r"write exponents with a sign"),
        ([1, 2], "not a mapping"),
    ],
)
def test_values_the_code_cannot_run_are_refused(cfg, match):
    with pytest.raises(ConfigError, match=match):
        validate_config(cfg)


def test_a_config_file_that_is_not_text_is_refused(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not valid YAML text"):
        load_config(path)


@pytest.mark.parametrize("name", ["spec\n", "a/b", "../x", "1abc", "a b"])
def test_dataset_names_must_match_in_full(name):
    with pytest.raises(ConfigError, match="datasets"):
        validate_config({"datasets": {name: {}}})


def test_a_wrong_nested_type_names_the_deepest_key():
    with pytest.raises(ConfigError, match=r"'datasets\.spec\.seeds': 5 is not of type 'object'"):
        validate_config({"datasets": {"spec": {"seeds": 5}}})


def test_one_file_for_two_splits_is_refused(small_paths):
    data = {
        "train_path": str(small_paths["train"]),
        "validation_path": str(small_paths["train"]),
        "test_path": str(small_paths["test"]),
    }
    with pytest.raises(ConfigError, match="name the same file"):
        validate_config({"data": data})


# ---------------------------------------------------------------- checkpoints on read
def _poison(path, key="lstm.weight_hh_l0", field="model_state_dict"):
    ckpt = torch.load(path, weights_only=True)
    ckpt[field][key][0, 0] = float("nan")
    torch.save(ckpt, path)


def test_nan_weights_are_refused_by_evaluate_and_export(trained, small_paths):
    out, _ = trained
    _poison(out / "best_model.pth")
    with pytest.raises(CheckpointError, match=r"NaN or Inf in tensor 'model_state_dict\.lstm"):
        load_model(out / "best_model.pth")
    for args in (
        ("evaluate", out / "best_model.pth", small_paths["test"]),
        ("export", out / "best_model.pth", out / "m.onnx"),
        ("predict", out / "best_model.pth", small_paths["test"], out / "p.npy"),
    ):
        proc = cli(*args)
        assert proc.returncode == 1, args
        assert "NaN or Inf" in proc.stderr and "Traceback" not in proc.stderr, args
    assert not (out / "m.onnx").exists() and not (out / "p.npy").exists()


@pytest.mark.parametrize(
    "damage",
    ["nan_weights", "epoch_not_a_number", "stray_key", "best_state_mismatch"],
)
def test_an_unresumable_last_checkpoint_is_set_aside_and_the_run_starts_truly_fresh(
    trained, small_paths, tmp_path, caplog, damage
):
    out, cfg = trained
    fresh = tmp_path / "fresh"
    run(cfg, small_paths, fresh)  # the reference: the same run from the seed
    last = out / "last.pth"
    ckpt = torch.load(last, weights_only=True)
    if damage == "nan_weights":
        ckpt["model_state_dict"]["fc.weight"][0, 0] = float("inf")
    elif damage == "epoch_not_a_number":
        ckpt["epoch"] = "one"
    elif damage == "stray_key":
        ckpt["model_state_dict"]["stray"] = torch.zeros(1)
        ckpt["model_state_dict"]["fc.weight"] += 5.0  # would leak in if loading were partial
        ckpt["epoch"] = 0
    else:
        ckpt["best_state_dict"] = {"nonsense": torch.zeros(2)}
    torch.save(ckpt, last)
    for name in ("best_model.pth", "metrics.json"):
        (out / name).unlink()
    with caplog.at_level(logging.INFO, logger="statetrain"):
        run(cfg, small_paths, out)
    assert "starting a fresh run from its random seed" in caplog.text
    assert (out / "last.pth.corrupt").is_file()
    a = load_checkpoint_file(out / "best_model.pth")["model_state_dict"]
    b = load_checkpoint_file(fresh / "best_model.pth")["model_state_dict"]
    for key in b:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    # and the next run resumes normally from the new last.pth instead of failing again
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="statetrain"):
        run(cfg, small_paths, out)
    assert "resuming from last.pth" in caplog.text


def test_hostile_model_args_are_refused_before_allocation(trained):
    out, _ = trained
    path = out / "best_model.pth"
    ckpt = torch.load(path, weights_only=True)
    for args, match in (
        ({"input_size": 5, "hidden_size": 10**9, "num_layers": 1}, "hidden_size"),
        ({"input_size": 5, "hidden_size": 64, "num_layers": 1}, "do not match"),
        ({"input_size": 5, "hidden_size": 8, "evil": 1}, "unknown model_args"),
        ({"input_size": 5, "hidden_size": "8"}, "hidden_size"),
    ):
        torch.save({**ckpt, "model_args": args}, path)
        with pytest.raises(CheckpointError, match=match):
            load_model(path)
    torch.save({**ckpt, "task": "rm -rf"}, path)
    with pytest.raises(CheckpointError, match="does not know"):
        load_model(path)


def test_a_compressed_checkpoint_is_refused_before_it_inflates(trained, tmp_path):
    out, _ = trained
    src = out / "best_model.pth"
    packed = tmp_path / "packed.pth"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))
    with pytest.raises(CheckpointError, match="compressed"):
        load_checkpoint_file(packed)


def test_a_checkpoint_of_another_task_is_refused_clearly(trained, tmp_path):
    out, _ = trained
    path = tmp_path / "vae.pth"
    torch.save({**torch.load(out / "best_model.pth", weights_only=True), "task": "vae"}, path)
    with pytest.raises(CheckpointError, match="do not build a vae model"):
        load_model(path)


# ---------------------------------------------------------------- outputs never destroy inputs
def test_commands_never_write_over_their_own_inputs(trained, small_paths):
    out, _ = trained
    ckpt = out / "best_model.pth"
    before = {p: p.read_bytes() for p in (ckpt, small_paths["test"])}
    for args in (
        ("export", ckpt, ckpt),
        ("evaluate", ckpt, small_paths["test"], "--out", small_paths["test"]),
        ("predict", ckpt, small_paths["test"], ckpt.with_suffix(".csv").with_name(ckpt.name)),
    ):
        proc = cli(*args)
        assert proc.returncode == 1, (args, proc.stderr)
        assert "would destroy it" in proc.stderr or "suffix" in proc.stderr, proc.stderr
    for path, data in before.items():
        assert path.read_bytes() == data


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    def boom(fh):
        fh.write(b"half")
        raise RuntimeError("writer failed")

    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    with pytest.raises(WriteError, match="would destroy"):
        atomic_write(target, lambda fh: fh.write(b"x"), protect=[target])


# ---------------------------------------------------------------- one trainer per run directory
def test_a_second_trainer_in_the_same_run_directory_is_refused(training_cfg, small_paths, tmp_path):
    out = tmp_path / "run"
    with runner.run_lock(out), pytest.raises(runner.RunLockedError, match=r"pid \d+ on"):
        run(training_cfg, small_paths, out, epochs=1)
    assert not (out / "last.pth").exists()  # the refused trainer wrote nothing
    run(training_cfg, small_paths, out, epochs=1)  # the lock is gone with its holder
    assert load_checkpoint_file(out / "last.pth")["epoch"] == 1


# ---------------------------------------------------------------- CLI errors
def test_cli_errors_are_one_paragraph_and_debug_shows_the_traceback(tmp_path):
    proc = cli("evaluate", tmp_path / "missing.pth", tmp_path / "x.npy")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not exist" in lines[0] and "Traceback" not in proc.stderr
    debug = cli("--debug", "evaluate", tmp_path / "missing.pth", tmp_path / "x.npy")
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("training: {lr: .nan}\n")
    proc = cli("train", "--config", cfg, cwd=tmp_path)
    assert proc.returncode == 1 and "training.lr" in proc.stderr and "Traceback" not in proc.stderr
    version = cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("statetrain ")


# ---------------------------------------------------------------- every task's data
def _npy_with_header(path, shape, dtype="<f4"):
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        fh.write(b"\0" * 64)


def test_a_lying_npy_header_is_refused_for_every_task(tmp_path):
    from statetrain.tasks.classifier import _load_labels
    from statetrain.tasks.vae import load_matrix

    lying = tmp_path / "lying.npy"
    _npy_with_header(lying, (10**7, 10**6))
    for read in (load_array, load_matrix, _load_labels):
        with pytest.raises(DatasetError, match="header claims shape"):
            read(lying)


def test_complex_and_object_arrays_are_refused(tmp_path):
    from statetrain.tasks.vae import load_matrix

    path = tmp_path / "complex.npy"
    np.save(path, np.ones((20, 6), dtype=np.complex64))
    with pytest.raises(DatasetError, match="complex"):
        load_matrix(path)
    with pytest.raises(DatasetError, match="complex"):
        load_array(path)


@pytest.mark.parametrize(
    ("text", "check"),
    [
        ("a;b;c\n0;1;0\n", "separator"),
        ("a,b,a\n0,1,0\n", "header"),
        ("a,b,c\n0,1,0\n0,1\n", "row length"),
        ("", "header"),
    ],
)
def test_csv_is_parsed_strictly(tmp_path, text, check):
    path = tmp_path / "m.csv"
    path.write_text(text)
    with pytest.raises(DatasetError, match=f"failed check '{check}'"):
        read_csv_strict(path)


def test_a_classifier_split_without_positives_is_refused_before_training():
    from statetrain.tasks import get_task

    spec = validate_config(
        {"task": "classifier", "data": {"sequences": 60, "positive_rate": 0.05, "length": 20}}
    )["data"]
    spec["split"] = {"validation": 0.1, "test": 0.1}
    with pytest.raises(DatasetError, match=r"(validation|test) split holds 0 positive"):
        get_task("classifier", spec).make_splits()


def test_metrics_json_stays_strict_json(trained):
    """metrics.json never holds NaN or Infinity (not JSON): a reader sees null."""
    out, _ = trained
    text = (out / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    metrics = json.loads(text)
    assert metrics["test"]["overall"]["mse"] > 0


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("frequencies", "1357", "frequencies"),
        ("frequencies", [1, float("nan")], "frequencies"),
        ("state_reset", "sideways", "state_reset"),
    ],
)
def test_hostile_checkpoint_fields_are_refused_clearly(trained, field, value, match):
    out, _ = trained
    path = out / "best_model.pth"
    torch.save({**torch.load(path, weights_only=True), field: value}, path)
    with pytest.raises(CheckpointError, match=match):
        load_model(path)


def test_weights_of_another_dtype_are_refused(trained):
    out, _ = trained
    path = out / "best_model.pth"
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_state_dict"] = {k: v.to(torch.float64) for k, v in ckpt["model_state_dict"].items()}
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="dtype"):
        load_model(path)


def test_a_batch_checkpoint_with_a_hostile_training_value_is_refused(tmp_path):
    from statetrain.tasks.classifier import ClassifierTask

    with pytest.raises(ValueError, match="threshold"):
        ClassifierTask.from_checkpoint({"config": {"threshold": "high"}})
    # keys from another statetrain version are tolerated
    task = ClassifierTask.from_checkpoint({"config": {"threshold": 0.4, "retired_key": 1}})
    assert task.training["threshold"] == 0.4


def test_a_split_archive_that_unpacks_too_large_is_refused(tmp_path, monkeypatch):
    from statetrain.tasks import base

    path = tmp_path / "split.npz"
    np.savez_compressed(path, x=np.zeros((2000, 100), dtype=np.float32))
    monkeypatch.setattr(base, "MAX_SPLIT_BYTES", 100_000)  # the file unpacks to 800 kB
    with pytest.raises(DatasetError, match="unpacks to"):
        base.load_split(path)


def test_a_complex_split_archive_is_refused(tmp_path):
    from statetrain.tasks.base import load_split

    path = tmp_path / "split.npz"
    np.savez(path, x=np.ones((4, 3), dtype=np.complex64))
    with pytest.raises(DatasetError, match="complex"):
        load_split(path)


def test_names_are_bounded_in_length():
    with pytest.raises(ConfigError, match="datasets"):
        validate_config({"datasets": {"a" * 65: {}}})
    with pytest.raises(ConfigError, match="experiment"):
        validate_config({"experiment": "e" * 65})


def test_evaluate_prints_strict_json_even_when_a_metric_is_not_a_number(trained, small_paths):
    """A metric that is NaN (e.g. a correlation of a constant prediction) is printed as null:
    programs outside the project parse stdout as JSON."""
    out, _ = trained
    data = np.load(small_paths["test"])
    data[:, -1] = 0.0  # a constant target: R² and Pearson's r are undefined
    flat = out / "flat.npy"
    np.save(flat, data)
    proc = cli("evaluate", out / "best_model.pth", flat)
    assert proc.returncode == 0, proc.stderr
    parsed = json.loads(proc.stdout, parse_constant=pytest.fail)  # no NaN literal anywhere
    assert parsed["overall"]["r2"] is None and parsed["overall"]["mse"] > 0
