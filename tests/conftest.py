"""Shared fixtures: small real datasets (the assignment's generator, fewer rows)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from statetrain.tasks.frequency.data import generate_dataset, save_array

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
QUICK = ROOT / "config" / "quick.yaml"

# One thread per test process: the suite runs on 2-core machines, and pinned threads keep
# floating-point results reproducible.
torch.set_num_threads(1)


def small(seed: int, duration_s: float = 0.25, phase_jitter: float = np.pi) -> np.ndarray:
    """4 streams × 250 rows of the assignment's data."""
    return generate_dataset(duration_s=duration_s, seed=seed, phase_jitter=phase_jitter)


@pytest.fixture
def small_paths(tmp_path: Path) -> dict[str, Path]:
    """train/validation/test .npy files of a small spec dataset."""
    paths = {}
    for split, seed in (("train", 1), ("validation", 3), ("test", 2)):
        paths[split] = tmp_path / "data" / f"{split}.npy"
        save_array(small(seed), paths[split])
    return paths


@pytest.fixture
def training_cfg() -> dict:
    """A complete `training` section (schema defaults), small and fast."""
    from statetrain.config import validate_config

    cfg = validate_config({"training": {"hidden_size": 8, "epochs": 3, "engine": "auto"}})
    return cfg["training"]


def snakemake_cmd(workdir, *args, cores=2):
    """`python -m snakemake` on this repository's Snakefile, run in `workdir`."""
    snakefile = str(ROOT / "Snakefile")
    return [
        PYTHON,
        "-m",
        "snakemake",
        "-s",
        snakefile,
        "-d",
        str(workdir),
        "--cores",
        str(cores),
        *args,
    ]


def snakemake(workdir, *args, check=True, timeout=600):
    cmd = snakemake_cmd(workdir, *args)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("quick")
    snakemake(workdir, "--configfile", str(QUICK))
    return workdir


# ------------------------------------------------------------------ scheduling on 2 workers
# `make test` runs two pytest-xdist workers with --dist loadfile: each test file stays on one
# worker (its module fixtures, e.g. the SLURM cluster, run once). The longest files go first,
# so that neither worker is left with a long file at the end.
LONGEST_FIRST = ("test_slurm", "test_workflow", "test_ucr", "test_assemble_workflow")
LONGEST_FIRST += ("test_experts", "test_export", "test_tasks", "test_task_sequence", "test_runner")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def module(item: pytest.Item) -> str:
        return item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")

    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(module(item), len(rank)))  # stable within a file
