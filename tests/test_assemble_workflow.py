"""Issue 19's recipe as workflow rules: experts → rule assemble_experts → a fine-tune started
from the assembly (`training.init_from`) → selection; resume, and what is refused."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from statetrain import runner
from statetrain.checkpoint import load_checkpoint_file, load_model, save_checkpoint_file
from statetrain.config import (
    ConfigError,
    dataset_spec,
    grid_points,
    training_config,
    validate_config,
)
from statetrain.tasks import get_task
from statetrain.tasks.frequency import recipe
from statetrain.tasks.frequency.assemble import assemble_experts
from statetrain.tasks.frequency.experts import score_splits
from statetrain.tasks.frequency.init_from import InitFromError, weights_digest
from statetrain.tasks.frequency.model import ExpertLSTM, FrequencyLSTM

from .conftest import ROOT, snakemake

# ------------------------------------------------------------------ library: init_from


def _fine_tune_cfg(init: Path | str, **training) -> dict:
    """A validated config whose run starts from `init`: full-length windows (a first window
    longer than the 250-row streams), a flat lr, the data of conftest's small_paths."""
    return validate_config(
        {
            "data": {"duration_s": 0.25},
            "datasets": {"spec": {}},
            "training": {
                "mode": "window",
                "state_reset": "stream",
                "hidden_size": 8,
                "lr": 1e-3,
                "epochs": 2,
                "init_from": str(init),
                "window": {"first": 100_000, "draws": 1, "iterations": 2, "lr_floor": 0},
                **training,
            },
        }
    )


def _run(cfg: dict, paths: dict, out: Path) -> dict:
    training = training_config(cfg, grid_points(cfg)[0], "spec")
    return runner.run("frequency", dataset_spec(cfg, "spec"), training, paths, out)


def _save(model: FrequencyLSTM, path: Path) -> Path:
    args = {"input_size": model.input_size, "hidden_size": model.hidden_size, "num_layers": 1}
    save_checkpoint_file({"model_state_dict": model.state_dict(), "model_args": args}, path)
    return path


def _assembled(seed: int) -> FrequencyLSTM:
    """Four untrained 2-unit experts in one LSTM(5, 8): an assembly's shape and structure."""
    torch.manual_seed(seed)
    return assemble_experts({k: FrequencyLSTM(5, 2, forget_bias=2.0) for k in range(4)}, 8)


def test_init_from_starts_from_the_checkpoints_weights(tmp_path, small_paths):
    init = _assembled(0)
    cfg = _fine_tune_cfg(_save(init, tmp_path / "init.pth"))
    training = training_config(cfg, grid_points(cfg)[0], "spec")
    task = get_task("frequency", dataset_spec(cfg, "spec"), training)
    splits = {s: task.read_split(small_paths[s]) for s in ("train", "validation")}
    trainer = task.build_trainer(splits, metadata={}, callbacks=[])
    got, want = trainer.model.state_dict(), init.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert trainer.metadata["init_from"]["weights_sha256"] == weights_digest(want)
    # ... and not from the seed's random weights, which differ
    torch.manual_seed(int(training["seed"]))
    fresh = FrequencyLSTM(5, 8).state_dict()
    assert not torch.equal(got["lstm.weight_hh_l0"], fresh["lstm.weight_hh_l0"])


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint_file(path)["model_state_dict"]


def _same(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_a_killed_fine_tune_resumes_bit_identical_and_new_init_weights_restart(
    tmp_path, small_paths
):
    init = _save(_assembled(0), tmp_path / "init.pth")
    straight = tmp_path / "straight"
    _run(_fine_tune_cfg(init, epochs=3), small_paths, straight)
    # "Killed" after epoch 1: its last.pth holds epoch 1; the same run again continues it.
    resumed = tmp_path / "resumed"
    _run(_fine_tune_cfg(init, epochs=1), small_paths, resumed)
    _run(_fine_tune_cfg(init, epochs=3), small_paths, resumed)
    assert _same(_weights(straight / "last.pth"), _weights(resumed / "last.pth"))
    assert _same(_weights(straight / "best_model.pth"), _weights(resumed / "best_model.pth"))
    assert json.loads((resumed / "metrics.json").read_text())["epochs"] == 3

    # Other weights under the same path (the experts were retrained): the stale last.pth is
    # set aside and the run starts afresh from the new weights, as a straight run does.
    _save(_assembled(1), init)
    _run(_fine_tune_cfg(init, epochs=3), small_paths, resumed)
    assert (resumed / "last.pth.previous").is_file()  # a sound run of the old start: kept
    assert not (resumed / "last.pth.corrupt").exists()
    fresh = tmp_path / "fresh"
    _run(_fine_tune_cfg(init, epochs=3), small_paths, fresh)
    assert _same(_weights(fresh / "last.pth"), _weights(resumed / "last.pth"))
    assert not _same(_weights(fresh / "last.pth"), _weights(straight / "last.pth"))


def test_a_checkpoint_of_another_shape_is_refused_in_one_paragraph(tmp_path, small_paths):
    def build(init: Path | str, **training):
        cfg = _fine_tune_cfg(init, **training)
        training = training_config(cfg, grid_points(cfg)[0], "spec")
        task = get_task("frequency", dataset_spec(cfg, "spec"), training)
        splits = {s: task.read_split(small_paths[s]) for s in ("train", "validation")}
        return task.build_trainer(splits, metadata={}, callbacks=[])

    init = _save(_assembled(0), tmp_path / "init.pth")
    with pytest.raises(InitFromError, match=r"hidden_size': 8.*hidden_size': 16") as exc:
        build(init, hidden_size=16)
    assert "\n" not in str(exc.value) and str(init) in str(exc.value)
    with pytest.raises(InitFromError, match="is not a file"):
        build(tmp_path / "missing.pth")
    experts = ExpertLSTM([FrequencyLSTM(5, 2) for _ in range(4)])
    ens = tmp_path / "ens.pth"
    save_checkpoint_file(
        {
            "model_state_dict": experts.state_dict(),
            "model_args": {"experts": [{"input_size": 5, "hidden_size": 2}] * 4},
        },
        ens,
    )
    with pytest.raises(InitFromError, match="ExpertLSTM"):
        build(ens)


TINY = {
    "experiment": "tinyasm",
    "data": {"frequencies": [1, 3], "duration_s": 0.3},
    "datasets": {
        "f1": {"streams": [1]},
        "f3": {"streams": [3], "training": {"seed": 3}},
        "joint": {
            "training": {
                "init_from": "asm",
                "hidden_size": 8,
                "lr": 3e-5,
                "epochs": 2,
                "window": {"first": 100_000, "draws": 1, "iterations": 2, "lr_floor": 0},
            }
        },
    },
    "assemble": {"asm": {"experts": ["f1", "f3"], "hidden_size": 8}},
    "training": {
        "mode": "window",
        "state_reset": "stream",
        "hidden_size": 4,
        "forget_bias": 2.0,
        "lr": 0.003,
        "epochs": 2,
        "window": {"draws": 1, "iterations": 2},
    },
}


def _with(**changes) -> dict:
    cfg = copy.deepcopy(TINY)
    for key, value in changes.items():
        *path, last = key.split("__")
        node = cfg
        for part in path:
            node = node[part]
        node[last] = value
    return cfg


@pytest.mark.parametrize(
    ("cfg", "needle"),
    [
        (_with(assemble={"asm": {"experts": ["f1", "f3"], "hidden_size": 7}}), "need 8 hidden"),
        (_with(assemble={"asm": {"experts": ["f1", "nope"]}}), "assemble 'asm'.*not datasets"),
        (_with(assemble={"f1": {"experts": ["f1", "f3"]}}), "name of a dataset"),
        (_with(datasets__joint__training__init_from="joint"), "the dataset itself"),
        (_with(datasets__joint__training__hidden_size=16), "assembly has 8 hidden units"),
        (
            _with(experts={"ens": ["f1", "f3"]}, datasets__joint__training__init_from="ens"),
            "ExpertLSTM",
        ),
    ],
)
def test_bad_recipe_configs_are_refused_before_any_job(cfg, needle):
    cfg = validate_config(cfg)
    with pytest.raises(ConfigError, match=needle) as exc:
        for name in cfg["assemble"]:
            recipe.assembly_spec(cfg, name)
        for name in cfg["datasets"]:
            recipe.init_from_path(cfg, name, lambda model: f"best/{model}.pth")
    assert "\n" not in str(exc.value)


# ------------------------------------------------------------------ the rules


@pytest.mark.workflow
def test_assembled_config_plans_the_recipe_and_lints(tmp_path):
    dry = snakemake(
        tmp_path, "-n", "--quiet", "rules", "--configfile", str(ROOT / "config/assembled.yaml")
    )
    counts = dict(
        line.split()[:2] for line in dry.stdout.splitlines() if line[:1].isalpha() and " " in line
    )
    # five experts (two for 1 Hz) and the fine-tune; one assembly
    assert counts["train"] == "6" and counts["assemble_experts"] == "1"


@pytest.mark.workflow
def test_a_seed_grid_plans_one_chain_per_seed(tmp_path):
    """grid {seed: [1, 2]}: each seed's assembly takes that seed's experts, and each seed's
    fine-tune starts from that seed's assembly; selection then runs over the seeds."""
    cfg = _with(grid={"seed": [1, 2]})
    del cfg["datasets"]["f3"]["training"]  # one grid for the whole chain
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(cfg))
    dry = snakemake(tmp_path, "-n", "--configfile", str(path)).stdout
    jobs = {}
    for block in dry.split("\n\n"):
        lines = [line.strip() for line in block.splitlines() if not line.startswith("[")]
        if lines and lines[0].startswith("rule "):  # one planned job: rule, input, output, ...
            fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            jobs.setdefault(lines[0][5:].rstrip(":"), []).append(fields)
    assert len(jobs["assemble_experts"]) == 2 and len(jobs["train"]) == 6
    for seed in (1, 2):
        (asm,) = [j for j in jobs["assemble_experts"] if f"asm/seed~{seed}/" in j["output"]]
        for member in ("f1", "f3"):
            assert f"runs/{member}/seed~{seed}/best_model.pth" in asm["input"]
            assert f"seed~{3 - seed}" not in asm["input"]
        (joint,) = [j for j in jobs["train"] if f"joint/seed~{seed}/" in j["output"]]
        assert f"runs/asm/seed~{seed}/best_model.pth" in joint["input"]
    (select,) = [j for j in jobs["select_checkpoint"] if "best/asm/" in j["output"]]
    assert "runs/asm/seed~1/metrics.json" in select["input"]
    assert "runs/asm/seed~2/metrics.json" in select["input"]


@pytest.mark.workflow
def test_a_chain_whose_grid_points_do_not_meet_is_refused_before_any_job(tmp_path):
    """The fine-tune's own grid has seeds the assembly has no run for: one paragraph, no job."""
    cfg = _with(grid={"seed": [1, 2]})
    del cfg["datasets"]["f3"]["training"]
    cfg["datasets"]["joint"]["grid"] = {"seed": [5, 6]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "-n", "--configfile", str(path), check=False)
    said = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "'asm' has no run at grid point seed~5" in said and "same grid" in said
    assert not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """The rule chain at toy size (two frequencies, 4-unit experts, 2 epochs each)."""
    workdir = tmp_path_factory.mktemp("assembled")
    cfg = workdir / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    res = "results/tinyasm"
    targets = [f"{res}/best/joint/best_model.pth", f"{res}/sweep/summary.csv"]
    snakemake(workdir, *targets, "--configfile", str(cfg))
    return workdir / res


@pytest.mark.workflow
def test_the_assemble_rule_writes_the_librarys_assembly(tiny_run):
    # the chain at grid point seed~42: f1's run there, and f3's only run (its own seed 3)
    runs = {"f1": "runs/f1/seed~42", "f3": "runs/f3/seed~3"}
    experts = {
        k: load_model(tiny_run / runs[m] / "best_model.pth")[0] for k, m in enumerate(["f1", "f3"])
    }
    want = assemble_experts(experts, 8, bias_unit=False).state_dict()
    model, ckpt = load_model(tiny_run / "runs/asm/seed~42/best_model.pth")
    assert isinstance(model, FrequencyLSTM) and ckpt["members"] == ["f1", "f3"]
    assert _same(model.state_dict(), want)
    # scored frozen on the full splits like any model
    assert _same(load_model(tiny_run / "best/asm/best_model.pth")[0].state_dict(), want)
    metrics = json.loads((tiny_run / "best/asm/metrics.json").read_text())
    splits = {s: str(tiny_run / f"data/asm/{s}.npy") for s in ("validation", "test")}
    scores = score_splits(model, splits, [1, 3])
    for split in splits:
        assert metrics[split]["overall"]["mse"] == pytest.approx(
            scores[split]["overall"]["mse"], rel=1e-6
        )
    assert np.isfinite(metrics["test"]["1hz"]["mse"]) and metrics["grid_point"] == "seed~42"
    # a row of summary.csv like any run: the assembly at its grid point, selected
    summary = pd.read_csv(tiny_run / "sweep/summary.csv")
    (row,) = summary[summary.dataset == "asm"].itertuples()
    assert row.grid_point == "seed~42" and row.selected
    assert row.technique == "window-trained experts assembled into one LSTM"
    assert row.test_mse == pytest.approx(metrics["test"]["overall"]["mse"], rel=1e-6)


@pytest.mark.workflow
def test_the_fine_tune_starts_from_the_assembly_and_is_selected(tiny_run):
    start = "runs/asm/seed~42/best_model.pth"  # the assembly at the same grid point
    assembled = load_checkpoint_file(tiny_run / start)["model_state_dict"]
    run = load_checkpoint_file(tiny_run / "runs/joint/seed~42/last.pth")
    assert run["init_from"]["weights_sha256"] == weights_digest(assembled)
    assert run["init_from"]["path"] == f"results/tinyasm/{start}"
    selected = json.loads((tiny_run / "best/joint/selection.json").read_text())
    assert selected["selected"] == "seed~42"
    history = json.loads((tiny_run / "runs/joint/seed~42/training_history.json").read_text())
    assert len(history["val_mse"]) == 2
    # the lr stays flat at 3e-5 (lr_floor 0, the window is the whole stream from the start)
    assert history["lr"] == pytest.approx([3e-5, 3e-5], rel=1e-9)
