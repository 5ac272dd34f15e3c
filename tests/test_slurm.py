"""The SLURM profiles end to end on a live single-node SLURM cluster.

The cluster comes from ../shared/slurm/up.sh (real slurmctld, slurmd and munged from Debian's
packages, no accounting database); it needs root and apt, so the cluster tests skip, saying why,
anywhere else. CI runs them as root. Every snakemake call runs under a hard timeout
(`timeout -s KILL`): the SLURM executor plugin can wait forever on a status it cannot read.

One module fixture starts four workflows at once (two through SLURM, two local references), so
that their waits overlap; the tests then read what they left behind.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from statetrain.checkpoint import load_checkpoint_file
from statetrain.config import grid_points, load_config
from statetrain.scripting import grid_point_name
from statetrain.tasks.frequency.data import generate_dataset, save_array

from .conftest import PYTHON, ROOT

pytestmark = pytest.mark.slurm

SLURM_DIR = ROOT.parent / "shared" / "slurm"
STATE = Path(os.environ.get("SLURM_CI_STATE", "/tmp/slurm-ci"))
JOBCOMP = STATE / "log" / "jobcomp.txt"
QUICK = ROOT / "config" / "quick.yaml"
# The real cluster profile, with the CI cluster's overrides on top (docs/cluster.md).
PROFILES = (
    "--profile",
    str(ROOT / "profiles" / "slurm"),
    "--workflow-profile",
    str(ROOT / "profiles" / "slurm-ci"),
)
# One train job long enough to cancel mid-run (torch engine: 8 epochs of 1,200 rows, ~2 s
# each), on data given as files so that it needs no generate_data jobs.
CANCEL_CONFIG = """\
data: {{duration_s: 0.3, min_stream_length: 100}}
datasets:
  spec: {{train_path: {d}/train.npy, validation_path: {d}/validation.npy, test_path: {d}/test.npy}}
training: {{epochs: 8, hidden_size: 8, engine: torch}}
grid: {{lr: [0.003]}}
"""
CANCEL_RUN = "results/runs/spec/lr~0.003"
RUN_LIMIT_S = 420  # hard limit of each workflow run (they take 1-2 min)


def hard_limit(limit_s: int, *cmd: str) -> list[str]:
    """`cmd` killed (SIGKILL) after limit_s seconds, whatever it waits for."""
    return ["timeout", "-s", "KILL", str(limit_s), *cmd]


def snakemake_cmd(workdir: Path, *args: str, limit_s: int = RUN_LIMIT_S) -> list[str]:
    snakefile = str(ROOT / "Snakefile")
    return hard_limit(
        limit_s, PYTHON, "-m", "snakemake", "-s", snakefile, "-d", str(workdir), *args
    )


# ---------------------------------------------------------------------------- the cluster


def _why_no_cluster() -> str | None:
    if not (SLURM_DIR / "up.sh").is_file():
        return f"no {SLURM_DIR / 'up.sh'} to start a SLURM cluster with"
    if os.geteuid() != 0:
        return "starting the CI SLURM cluster needs root (slurmd runs as root)"
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        return "SLURM is not installed and there is no apt-get to install it"
    if not shutil.which("timeout"):
        return "no `timeout` command to bound the snakemake calls"
    return None


def _daemon_error() -> str:
    """The line of the daemon logs that says why the cluster did not come up."""
    for name in ("slurmctld.log", "slurmd.log"):
        path = STATE / "log" / name
        if path.is_file():
            lines = path.read_text(errors="replace").splitlines()
            bad = [ln for ln in lines if re.search(r"fatal|error", ln, re.IGNORECASE)]
            bad = [ln for ln in bad if "pmix" not in ln.lower() and "Database" not in ln]
            if bad:
                return f"{name}: {bad[-1].strip()}"
    return ""


def _down() -> None:
    subprocess.run(
        ["bash", str(SLURM_DIR / "down.sh")], capture_output=True, text=True, timeout=180
    )


@pytest.fixture(scope="module")
def slurm_cluster():
    reason = _why_no_cluster()
    if reason:
        pytest.skip(reason)
    try:
        try:
            up = subprocess.run(
                ["bash", str(SLURM_DIR / "up.sh")], capture_output=True, text=True, timeout=300
            )
        except subprocess.TimeoutExpired:
            pytest.skip(f"up.sh did not finish in 300 s. {_daemon_error()}")
        if up.returncode != 0:
            errors = [ln for ln in up.stderr.splitlines() if "ERROR" in ln] or [up.stderr[-300:]]
            pytest.skip(f"SLURM did not come up: {errors[-1].strip()} {_daemon_error()}".strip())
        yield STATE
    finally:
        _down()


def jobcomp() -> dict[str, dict[str, str]]:
    """Every finished job of the cluster (jobcomp/filetxt), by job id."""
    jobs = {}
    if JOBCOMP.is_file():
        for line in JOBCOMP.read_text().splitlines():
            fields = dict(re.findall(r"(\w+)=(\S*)", line))
            if "JobId" in fields:
                jobs[fields["JobId"]] = fields
    return jobs


def submitted(stdout: str) -> dict[str, list[str]]:
    """SLURM job ids that snakemake submitted, by rule (from its own log lines)."""
    by_rule: dict[str, list[str]] = {}
    for jobid, rule in re.findall(
        r"submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+)/", stdout
    ):
        by_rule.setdefault(rule, []).append(jobid)
    return by_rule


# ---------------------------------------------------------------------------- the runs


def _epoch(path: Path) -> int:
    try:
        return int(load_checkpoint_file(path)["epoch"])
    except Exception:
        return 0


def _cancel_mid_training(workdir: Path, found: dict, stop: threading.Event) -> None:
    """scancel the train job of `workdir` once it has saved an epoch (as a time limit would)."""
    last = workdir / CANCEL_RUN / "last.pth"
    while not stop.is_set():
        epoch = _epoch(last)
        if epoch >= 1:
            queue = subprocess.run(
                ["squeue", "-h", "-t", "RUNNING", "-o", "%i|%Z"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout
            ids = [
                i
                for i, _, d in (ln.partition("|") for ln in queue.splitlines())
                if d == str(workdir)
            ]
            if ids:
                subprocess.run(["scancel", *ids], check=True, timeout=30)
                found.update(jobids=ids, epoch=epoch, at=time.time())
                return
        stop.wait(0.2)


class Run:
    """A command started in the background, its output kept in a file."""

    def __init__(self, name: str, cmd: list[str], logdir: Path, cwd: Path | None = None):
        self.name = name
        self.out = logdir / f"{name}.out"
        self.t0 = time.perf_counter()
        self.seconds: float | None = None
        with self.out.open("w") as fh:
            self.proc = subprocess.Popen(
                cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True
            )

    def poll(self) -> bool:
        """True once finished (and its wall time recorded)."""
        if self.seconds is None and self.proc.poll() is not None:
            self.seconds = round(time.perf_counter() - self.t0, 1)
        return self.seconds is not None

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    @property
    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def check(self) -> str:
        assert self.proc.returncode == 0, (
            f"{self.name} exited {self.proc.returncode} (-9: killed at its time limit):\n"
            f"{self.output[-6000:]}"
        )
        return self.output


def write_data(folder: Path) -> Path:
    for split, seed in (("train", 1), ("validation", 3), ("test", 2)):
        save_array(generate_dataset(seed=seed, duration_s=0.3), folder / f"{split}.npy")
    return folder


def quick_by_hand() -> str:
    """A shell line that makes config/quick.yaml's data and trains all its runs by hand."""
    cfg = load_config(QUICK)
    cmds = []
    for dataset in cfg["datasets"]:
        by_hand = ["--config", str(QUICK), "--dataset", dataset]
        cmds.append([PYTHON, "-m", "statetrain.cli", "data", *by_hand])
        for point in grid_points(cfg):
            sets = [f"{k}={v}" for k, v in point.items()]
            cmds.append([PYTHON, str(ROOT / "scripts" / "train.py"), *by_hand, "--set", *sets])
    return " && ".join(shlex.join(hard_limit(RUN_LIMIT_S, *cmd)) for cmd in cmds)


@pytest.fixture(scope="module")
def runs(slurm_cluster, tmp_path_factory):
    """Four runs at once: two workflows through SLURM, their two local references."""
    base = tmp_path_factory.mktemp("slurm")
    cancel_cfg = base / "cancel.yaml"
    cancel_cfg.write_text(CANCEL_CONFIG.format(d=write_data(base / "data")))
    dirs = {name: base / name for name in ("cancelled", "slurm", "local", "straight")}
    for d in dirs.values():
        d.mkdir()
    t0 = time.perf_counter()
    started = [
        # One long train job through SLURM, cancelled mid-run by the watcher below.
        Run(
            "cancelled",
            snakemake_cmd(
                dirs["cancelled"],
                f"{CANCEL_RUN}/best_model.pth",
                *PROFILES,
                "--configfile",
                str(cancel_cfg),
            ),
            base,
        ),
        # config/quick.yaml through SLURM, the whole default target.
        Run("slurm", snakemake_cmd(dirs["slurm"], *PROFILES, "--configfile", str(QUICK)), base),
        # Local references, by hand (the scripts the rules run, outside Snakemake and SLURM):
        # quick.yaml's data and every grid point, and the cancelled training uninterrupted.
        Run("local", ["bash", "-c", quick_by_hand()], base, cwd=dirs["local"]),
        Run(
            "straight",
            hard_limit(
                RUN_LIMIT_S,
                PYTHON,
                str(ROOT / "scripts" / "train.py"),
                "--config",
                str(cancel_cfg),
                "--dataset",
                "spec",
                "--set",
                "lr=0.003",
                "--out",
                str(dirs["straight"] / CANCEL_RUN),
            ),
            base,
            cwd=dirs["straight"],
        ),
    ]
    cancel: dict = {}
    stop = threading.Event()
    watcher = threading.Thread(
        target=_cancel_mid_training, args=(dirs["cancelled"], cancel, stop), daemon=True
    )
    watcher.start()
    try:
        deadline = time.time() + RUN_LIMIT_S + 60
        while not all([run.poll() for run in started]) and time.time() < deadline:
            time.sleep(0.5)
    finally:
        stop.set()
        watcher.join(timeout=60)
        for run in started:
            run.kill()
    timings = {run.name: run.seconds for run in started}
    timings["all"] = round(time.perf_counter() - t0, 1)
    print(f"\nwall times (s): {timings}")
    return {**{run.name: run for run in started}, "dirs": dirs, "cancel": cancel}


# ---------------------------------------------------------------------------- the tests


def test_quick_config_runs_through_slurm_one_job_per_training_run(runs):
    out = runs["slurm"].check()
    cfg = load_config(QUICK)
    names = [grid_point_name(p) for p in grid_points(cfg)]
    n_runs = len(cfg["datasets"]) * len(names)
    by_rule = submitted(out)
    # Only training goes to SLURM; the light rules run on the submit host (localrules).
    assert set(by_rule) == {"train"}, f"SLURM jobs by rule: {by_rule}"
    train_ids = by_rule["train"]
    # The grid fans out: one SLURM job per dataset × grid point, none run locally.
    assert len(train_ids) == n_runs == len(set(train_ids)), out[-3000:]
    done = jobcomp()
    for jobid in train_ids:
        job = done.get(jobid)
        assert job is not None, f"SLURM job {jobid} is not in {JOBCOMP}"
        assert job["JobState"] == "COMPLETED" and job["WorkDir"] == str(runs["dirs"]["slurm"])
        # profiles/slurm's train resources reached sbatch: 1 CPU, 2000 MB, 120 minutes.
        assert job["TimeLimit"] == "120" and job["Tres"].startswith("cpu=1,mem=2000M"), job
    res = runs["dirs"]["slurm"] / "results" / "quick"  # config/quick.yaml's experiment
    for dataset in cfg["datasets"]:
        for name in names:
            assert (res / "runs" / dataset / name / "loss_curves.png").is_file()
        assert (res / "plots" / dataset / "graph2.png").is_file()
    assert (res / "sweep" / "summary.csv").is_file()


def test_models_trained_and_selected_through_slurm_equal_local_runs(runs):
    runs["slurm"].check()
    runs["local"].check()
    cfg = load_config(QUICK)
    slurm, local = (runs["dirs"][name] / "results" / "quick" for name in ("slurm", "local"))
    for dataset in cfg["datasets"]:
        val_mse = {}
        for point in grid_points(cfg):
            name = grid_point_name(point)
            a, b = (
                load_checkpoint_file(r / "runs" / dataset / name / "best_model.pth")
                for r in (slurm, local)
            )
            for key, value in b["model_state_dict"].items():
                assert a["model_state_dict"][key].equal(value), (dataset, name, key)
            metrics = json.loads((local / "runs" / dataset / name / "metrics.json").read_text())
            val_mse[name] = metrics["validation"]["overall"]["mse"]
        # The selection made after the SLURM jobs is the one the local runs give.
        selection = json.loads((slurm / "best" / dataset / "selection.json").read_text())
        assert selection["selected"] == min(val_mse, key=val_mse.get)
        best = load_checkpoint_file(slurm / "best" / dataset / "best_model.pth")
        ref = load_checkpoint_file(
            local / "runs" / dataset / selection["selected"] / "best_model.pth"
        )
        for key, value in ref["model_state_dict"].items():
            assert best["model_state_dict"][key].equal(value), (dataset, key)


def test_a_cancelled_train_job_is_retried_and_resumes_from_last_pth(runs):
    cancel = runs["cancel"]
    assert cancel.get("jobids"), "the train job was never seen running with an epoch saved"
    out = runs["cancelled"].check()
    workdir = runs["dirs"]["cancelled"]
    mine = {i: j for i, j in jobcomp().items() if j.get("WorkDir") == str(workdir)}
    for jobid in cancel["jobids"]:
        assert mine[jobid]["JobState"] == "CANCELLED", mine
    # Snakemake's retry (profiles/slurm: retries) submitted it again, and that job completed.
    retried = [i for i in submitted(out)["train"] if i not in cancel["jobids"]]
    assert len(retried) == 1 and mine[retried[0]]["JobState"] == "COMPLETED", mine
    log = (workdir / "results/logs/train/spec/lr~0.003.log").read_text()
    resumed = re.findall(r"resuming from last.pth at epoch (\d+) of 8", log)
    assert resumed and int(resumed[-1]) >= cancel["epoch"], log[-3000:]
    # ... and ended where an uninterrupted run of the same training ends.
    runs["straight"].check()
    a, b = (d / CANCEL_RUN for d in (workdir, runs["dirs"]["straight"]))
    wa, wb = (load_checkpoint_file(d / "best_model.pth")["model_state_dict"] for d in (a, b))
    for key, value in wb.items():
        assert wa[key].equal(value), key
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert ma["test"] == mb["test"] and ma["best_epoch"] == mb["best_epoch"]


def test_threads_follow_cpus_per_task_in_the_profiles():
    for profile in ("slurm", "slurm-ci"):
        cfg = yaml.safe_load((ROOT / "profiles" / profile / "config.yaml").read_text())
        threads = cfg.get("set-threads", {})
        for rule, resources in cfg.get("set-resources", {}).items():
            if "cpus_per_task" in resources:
                assert threads.get(rule, 1) == resources["cpus_per_task"], (profile, rule)
    # Without slurmdbd the plugin cannot validate an account and fails: CI must not name one.
    ci = yaml.safe_load((ROOT / "profiles" / "slurm-ci" / "config.yaml").read_text())
    assert "slurm_account" not in ci["default-resources"]
    assert ci["slurm-status-command"] == "squeue"


def test_dry_run_of_a_1000_point_grid(tmp_path):
    """A benchmark figure for docs/cluster.md; the bound only catches a pathological DAG."""
    cfg = tmp_path / "grid.yaml"
    values = {
        "hidden_size": [8 * i for i in range(1, 11)],
        "lr": [round(0.0005 * i, 4) for i in range(1, 11)],
        "seed": list(range(10)),
    }
    cfg.write_text(yaml.safe_dump({"datasets": {"spec": {}}, "grid": values}))
    t0 = time.perf_counter()
    proc = subprocess.run(
        snakemake_cmd(tmp_path / "w", *PROFILES, "--configfile", str(cfg), "-n", limit_s=400),
        capture_output=True,
        text=True,
        timeout=460,
    )
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^train\s+1000$", proc.stdout, re.MULTILINE), proc.stdout[-2000:]
    print(f"\nsnakemake -n, 1,000 grid points (2,012 jobs): {seconds:.1f} s")
    assert seconds < 300


GROUP_CONFIG = """\
data: {{duration_s: 0.3, min_stream_length: 100}}
datasets:
  spec: {{train_path: {d}/train.npy, validation_path: {d}/validation.npy, test_path: {d}/test.npy}}
training: {{epochs: 2, hidden_size: 8}}
grid: {{lr: [0.001, 0.003]}}
"""


def test_the_grouped_profile_bundles_short_train_jobs_into_one_slurm_job(slurm_cluster, tmp_path):
    """profiles/slurm-grouped (docs/cluster.md): two grid points' train jobs go to SLURM as
    ONE job asking for both jobs' CPUs and memory, and both runs finish normally."""
    config = tmp_path / "group.yaml"
    config.write_text(GROUP_CONFIG.format(d=write_data(tmp_path / "data")))
    grouped = ("--profile", str(ROOT / "profiles" / "slurm-grouped"))
    cmd = snakemake_cmd(tmp_path, *PROFILES, *grouped, "--configfile", str(config))
    # the CI node has 2 CPUs: bundles of 2 (the profile's 8 would never be scheduled here)
    proc = subprocess.run(
        [*cmd, "--group-components", "train_batch=2"], capture_output=True, text=True
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    ids = re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/group_train_batch_", out)
    assert len(ids) == 1 and submitted(out) == {}, out[-3000:]  # one group job, no single ones
    job = jobcomp()[ids[0]]
    assert job["JobState"] == "COMPLETED" and job["Tres"].startswith("cpu=2,mem=4000M"), job
    for lr in ("0.001", "0.003"):
        metrics = json.loads((tmp_path / f"results/runs/spec/lr~{lr}/metrics.json").read_text())
        assert metrics["epochs"] == 2 and metrics["grid_point"] == f"lr~{lr}"
