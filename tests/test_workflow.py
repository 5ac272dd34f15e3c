"""The Snakemake workflow end to end on config/quick.yaml, in a temporary directory."""

import json
import re
import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml

from statetrain.checkpoint import load_checkpoint_file
from statetrain.config import grid_points, load_config, training_config
from statetrain.scripting import grid_point_name

from .conftest import PYTHON, QUICK, ROOT, snakemake, snakemake_cmd

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.workflow
def test_quick_workflow_produces_every_declared_output(quick_run):
    cfg = load_config(QUICK)
    names = [grid_point_name(p) for p in grid_points(cfg)]
    res = quick_run / "results" / "quick"  # config/quick.yaml: experiment quick
    for dataset in cfg["datasets"]:
        for split in ("train", "validation", "test"):
            assert np.load(res / f"data/{dataset}/{split}.npy").shape == (1200, 6)
            report = json.loads((res / f"data/{dataset}/{split}.validation.json").read_text())
            assert report["valid"] and report["rows"] == 1200
        for name in names:
            run = res / "runs" / dataset / name
            metrics = json.loads((run / "metrics.json").read_text())
            assert metrics["epochs"] == 2 and metrics["dataset"] == dataset
            assert (run / "loss_curves.png").read_bytes().startswith(PNG)
            assert (run / "last.pth").is_file()  # kept, undeclared, for resume
            assert len(json.loads((run / "training_history.json").read_text())["val_mse"]) == 2
        best = res / "best" / dataset
        selection = json.loads((best / "selection.json").read_text())
        scores = {c["grid_point"]: c["val_mse"] for c in selection["candidates"]}
        assert selection["selected"] == min(scores, key=scores.get)
        src = load_checkpoint_file(
            res / "runs" / dataset / selection["selected"] / "best_model.pth"
        )
        chosen = load_checkpoint_file(best / "best_model.pth")
        for key, value in src["model_state_dict"].items():
            assert chosen["model_state_dict"][key].equal(value)
        for png in ("graph1.png", "graph2.png", "sweep_loss_curves.png"):
            assert (res / "plots" / dataset / png).read_bytes().startswith(PNG)
    summary = pd.read_csv(res / "sweep" / "summary.csv")
    assert len(summary) == len(cfg["datasets"]) * len(names)
    assert summary.groupby("dataset")["selected"].sum().eq(1).all()
    for _, group in summary.groupby("dataset"):
        assert group.loc[group["selected"], "val_mse"].iloc[0] == group["val_mse"].min()
    assert (res / "plots" / "learnability.png").read_bytes().startswith(PNG)
    # The learnability table: one row per technique, one column per phase jitter, holding the
    # test MSE of each dataset's selected run.
    table = (res / "sweep" / "learnability.md").read_text().splitlines()
    row = next(line for line in table if line.startswith("| reference loop"))
    selected = summary[summary["selected"]].sort_values("phase_jitter", ascending=False)
    cells = [c.strip() for c in row.strip("|").split("|")][1:]
    assert cells == [f"{v:.4g}" for v in selected["test_mse"]]
    # Everything is up to date: a second invocation has nothing to do.
    dry = snakemake(quick_run, "--configfile", str(QUICK), "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr


@pytest.mark.workflow
def test_report_is_built(quick_run):
    snakemake(quick_run, "--configfile", str(QUICK), "--report", "report.html")
    html = (quick_run / "report.html").read_text(errors="replace")
    assert "graph1.png" in html and "summary.csv" in html


@pytest.mark.workflow
def test_a_bad_user_dataset_stops_the_workflow_before_training(tmp_path):
    from statetrain.tasks.frequency.data import generate_dataset

    for split, seed in (("train", 1), ("validation", 3), ("test", 2)):
        data = generate_dataset(seed=seed, duration_s=0.3)
        if split == "train":
            data[42, 0] = np.nan
        np.save(tmp_path / f"{split}.npy", data)
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(
        f"data: {{duration_s: 0.3}}\n"
        f"datasets:\n  mine: {{train_path: {tmp_path}/train.npy, "
        f"validation_path: {tmp_path}/validation.npy, test_path: {tmp_path}/test.npy}}\n"
        f"training: {{epochs: 1, hidden_size: 8}}\n"
    )
    proc = snakemake(tmp_path, "--configfile", str(cfg), check=False)
    assert proc.returncode != 0
    log = (tmp_path / "results/logs/validate_dataset/mine/train.log").read_text()
    assert "failed check 'finite': row 42, column 0 holds nan" in log
    assert not (tmp_path / "results" / "runs").exists()


@pytest.mark.workflow
def test_a_bad_config_fails_before_any_job(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("training: {epochs: 0, lr: fast}\n")
    proc = snakemake(tmp_path, "--configfile", str(cfg), "-n", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "training.epochs" in out and "training.lr" in out
    assert not (tmp_path / "results").exists()


def test_default_experiment_dag_and_lint(tmp_path):
    # Planned in an empty working directory: what `make run` left in the checkout's results/
    # must not change what this test sees.
    dry = subprocess.run(
        snakemake_cmd(
            tmp_path, "-n", "--quiet", "rules", "--configfile", str(ROOT / "config" / "config.yaml")
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dry.returncode == 0, dry.stderr
    cfg = load_config(ROOT / "config" / "config.yaml")
    n_runs = sum(len(grid_points(cfg, name)) for name in cfg["datasets"])
    # the longest runs (largest epoch cap: the 1 Hz experts) are scheduled first
    plan = subprocess.run(
        snakemake_cmd(tmp_path, "-n", "--configfile", str(ROOT / "config" / "config.yaml")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    priorities = dict(
        re.findall(
            r"output: results/runs/(\w+)/[^\n]*\n(?:\s+\w+:[^\n]*\n)*?\s+priority: (\d+)",
            plan.stdout,
        )
    )
    caps = {
        name: training_config(cfg, grid_points(cfg, name)[0], name)["epochs"] for name in priorities
    }
    assert priorities and {k: int(v) for k, v in priorities.items()} == caps
    assert max(caps, key=caps.get) == "f1"
    assert f"train                  {n_runs}" in dry.stdout or f"train {n_runs}" in " ".join(
        dry.stdout.split()
    )
    lint = subprocess.run(
        [PYTHON, "-m", "snakemake", "--lint"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Congratulations" in lint.stdout + lint.stderr, lint.stdout + lint.stderr
    fmt = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "snakefmt"), "--check", "Snakefile", "workflow/rules"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert fmt.returncode == 0, fmt.stderr


def test_the_workflow_steps_run_by_hand_without_snakemake(tmp_path):
    """`statetrain data` then the train script by hand (= `statetrain train`), into the
    places the workflow uses (config/quick.yaml names its experiment: results/quick/)."""

    def run_by_hand(*cmd):
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    def script(name, *args):
        return run_by_hand(PYTHON, str(ROOT / "scripts" / name), "--config", str(QUICK), *args)

    def statetrain(command, *args):
        return run_by_hand(PYTHON, "-m", "statetrain.cli", command, "--config", str(QUICK), *args)

    statetrain("data", "--dataset", "w0")
    script("train.py", "--dataset", "w0", "--set", "lr=0.003", "epochs=1")
    run = tmp_path / "results/quick/runs/w0/lr~0.003"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 1
    assert (tmp_path / "results/quick/data/w0/train.validation.json").is_file()
    script("train.py", "--dataset", "w0", "--quick")
    assert (
        json.loads((tmp_path / "results/quick/smoke/w0/seed~42/metrics.json").read_text())["epochs"]
        == 2
    )

    # The console entry point runs the same code: frozen metrics of the run's best model.
    proc = subprocess.run(
        [
            PYTHON,
            "-m",
            "statetrain.cli",
            "evaluate",
            str(run / "best_model.pth"),
            "results/quick/data/w0/test.npy",
            "--out",
            "eval.json",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["overall"]["mse"] == pytest.approx(metrics["test"]["overall"]["mse"])


TARGET = "results/best/spec/metrics.json"  # train + select: what the resume test needs


def _last_epoch(path):
    try:
        return load_checkpoint_file(path)["epoch"]
    except Exception:
        return 0


@pytest.mark.workflow
def test_kill_9_mid_training_then_the_documented_rerun_resumes(tmp_path):
    """kill -9 the whole snakemake process group during training; unlock; run again."""
    import os
    import signal
    import time

    cfg = tmp_path / "kill.yaml"
    cfg.write_text(
        "data: {duration_s: 0.2}\ndatasets: {spec: {}}\n"
        "training: {epochs: 6, hidden_size: 8, engine: torch}\ngrid: {lr: [0.003]}\n"
    )
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    cmd = snakemake_cmd(killed, TARGET, "--configfile", str(cfg), cores=1)
    proc = subprocess.Popen(
        cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    last = killed / "results/runs/spec/lr~0.003/last.pth"
    deadline = time.time() + 300
    while _last_epoch(last) < 2 and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 2 <= _last_epoch(last) < 6
    assert not (killed / "results/runs/spec/lr~0.003/metrics.json").exists()

    locked = snakemake(killed, TARGET, "--configfile", str(cfg), check=False)
    assert locked.returncode != 0 and "lock" in (locked.stdout + locked.stderr).lower()
    snakemake(killed, "--configfile", str(cfg), "--unlock")
    snakemake(killed, TARGET, "--configfile", str(cfg))
    log = (killed / "results/logs/train/spec/lr~0.003.log").read_text()
    assert "resuming from last.pth at epoch" in log

    snakemake(straight, TARGET, "--configfile", str(cfg))
    a = load_checkpoint_file(killed / "results/best/spec/best_model.pth")
    b = load_checkpoint_file(straight / "results/best/spec/best_model.pth")
    for key, value in b["model_state_dict"].items():
        assert a["model_state_dict"][key].equal(value), key
    ma = json.loads((killed / "results/best/spec/metrics.json").read_text())
    mb = json.loads((straight / "results/best/spec/metrics.json").read_text())
    assert ma["test"] == mb["test"] and ma["best_epoch"] == mb["best_epoch"]


def test_export_onnx_joins_the_default_target_only_when_asked(tmp_path):
    on = tmp_path / "onnx.yaml"
    on.write_text("export: {onnx: true}\n")
    plain = snakemake(tmp_path, "--configfile", str(QUICK), "-n", "--quiet", "rules")
    wired = snakemake(tmp_path, "--configfile", str(QUICK), str(on), "-n", "--quiet", "rules")

    def jobs(out):  # the job-count table of a dry run: "export_onnx    2"
        return re.findall(r"^export_onnx\s+(\d+)$", out, flags=re.M)

    assert jobs(plain.stdout + plain.stderr) == []
    assert set(jobs(wired.stdout + wired.stderr)) == {"2"}


def test_configfile_follows_snakemakes_documented_rules(tmp_path):
    """The default experiment comes from the workflow profile, so --configfile takes its place,
    several files merge in order, and no configuration at all is one clear error."""

    def jobs(*args: str) -> str:
        return snakemake(tmp_path, "-n", "--quiet", "rules", *args).stdout

    default = jobs()  # run from the repository root: profiles/default gives config.yaml
    assert "plot_predictions" in default and "plot_task" not in default
    vae = jobs("--configfile", str(ROOT / "config" / "vae.yaml"))
    assert "plot_task" in vae and "plot_predictions" not in vae  # replaced, not merged
    on = tmp_path / "onnx.yaml"
    on.write_text("export: {onnx: true}\n")
    merged = jobs("--configfile", str(ROOT / "config" / "config.yaml"), str(on))
    assert "export_onnx" in merged and "export_onnx" not in default
    assert "plot_predictions" in merged  # the default experiment is still all there
    bare = snakemake(tmp_path, "-n", "--workflow-profile", "none", check=False)
    assert bare.returncode != 0
    said = bare.stdout + bare.stderr  # snakemake prints parse errors on stdout
    assert "no configuration" in said and "--configfile config/config.yaml" in said


@pytest.mark.workflow
def test_statetrain_as_a_snakemake_module_of_another_workflow(tmp_path):
    """Another workflow imports statetrain with `module` and `use rule *` (README, "Using
    statetrain from your own workflow"): it plans, runs config/quick.yaml, and the outputs
    land in its own working directory."""
    cfg = yaml.safe_load(QUICK.read_text())  # one dataset, one grid point: the module, not a sweep
    first = next(iter(cfg["datasets"]))
    small = {**cfg, "datasets": {first: cfg["datasets"][first]}, "grid": {"lr": [0.003]}}
    (tmp_path / "quick.yaml").write_text(yaml.safe_dump(small))
    (tmp_path / "Snakefile").write_text(
        'configfile: "quick.yaml"\n\n\n'
        "module statetrain:\n"
        f'    snakefile:\n        "{ROOT / "Snakefile"}"\n'
        "    config:\n        config\n\n\n"
        "use rule * from statetrain as statetrain_*\n\n\n"
        "rule all:\n    default_target: True\n    input:\n"
        "        rules.statetrain_all.input,\n"
    )

    def outer(*args: str) -> subprocess.CompletedProcess:
        cmd = [PYTHON, "-m", "snakemake", "--cores", "2", *args]
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)

    dry = outer("-n", "--quiet", "rules")
    assert dry.returncode == 0, dry.stdout[-2000:] + dry.stderr[-2000:]
    assert re.search(r"statetrain_train\s+\d+", dry.stdout), dry.stdout
    done = outer()
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    metrics = json.loads((tmp_path / "results/quick/best" / first / "metrics.json").read_text())
    assert (
        metrics["selected"] == "lr~0.003"
        and metrics["epochs"] == load_config(QUICK)["training"]["epochs"]
    )
