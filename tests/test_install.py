"""`pip install .` without the workflow extra: the library and the `statetrain` command must
work with no snakemake installed.

A real install needs the network and minutes; blocking the import of snakemake in a fresh
interpreter checks the same thing in a second. The run-directory names that the library spells
by hand are checked against the workflow's snakemake.utils.Paramspace, so the two cannot drift.
"""

from __future__ import annotations

import math
import pkgutil
import subprocess
import sys
import textwrap

import pytest

import statetrain
from statetrain.scripting import grid_point_name

# Run in a fresh interpreter: any `import snakemake` (or a submodule) raises ImportError, as
# it would where snakemake is not installed.
BLOCK_SNAKEMAKE = textwrap.dedent(
    """
    import importlib, sys

    class NoSnakemake:
        def find_spec(self, name, path=None, target=None):
            if name == "snakemake" or name.startswith("snakemake."):
                raise ImportError(f"blocked for this test: {name}")
            return None

    sys.meta_path.insert(0, NoSnakemake())
    for name in list(sys.modules):
        if name == "snakemake" or name.startswith("snakemake."):
            del sys.modules[name]
    """
)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_SNAKEMAKE + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(statetrain.__path__, prefix="statetrain."))


def test_the_block_works() -> None:
    proc = _run("import snakemake")
    assert proc.returncode != 0
    assert "blocked for this test: snakemake" in proc.stderr


def test_every_module_imports_without_snakemake() -> None:
    modules = _modules()
    assert {"statetrain.cli", "statetrain.config", "statetrain.runner"} <= set(modules)
    proc = _run(
        f"""
        import importlib
        for name in {modules!r}:
            importlib.import_module(name)
        import statetrain
        for name in statetrain.__all__:
            getattr(statetrain, name)
        assert not any(m.split(".")[0] == "snakemake" for m in sys.modules)
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")


@pytest.mark.parametrize(
    "argv", [["--help"], ["train", "--help"], ["evaluate", "--help"], ["--version"]]
)
def test_cli_help_without_snakemake(argv: list[str]) -> None:
    proc = _run(
        f"""
        from statetrain.cli import main
        try:
            main({argv!r})
        except SystemExit as exc:
            sys.exit(exc.code)
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "statetrain" in proc.stdout


def test_grid_point_names_without_snakemake() -> None:
    proc = _run(
        """
        from statetrain.config import grid_points, validate_config
        from statetrain.scripting import grid_point_name
        cfg = validate_config({"grid": {"hidden_size": [16, 32], "lr": [0.003]}})
        print([grid_point_name(p) for p in grid_points(cfg)])
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "['hidden_size~16/lr~0.003', 'hidden_size~32/lr~0.003']"


POINTS = [
    {"seed": 42},
    {"hidden_size": 64, "lr": 0.001},
    {"lr": 1e-05, "clip": None, "state_reset": "stream"},
    {"lr": 3e-4, "weight_decay": 0.0, "dropout": math.nan},
    {"use_native": True, "epochs": 30, "momentum": 0.9},
    {"lr": 1e16, "batch": 1.0},
]


@pytest.mark.parametrize("point", POINTS)
def test_names_match_the_workflows_paramspace(point: dict) -> None:
    """Every run the workflow names (one Paramspace over the grid) is the directory that
    `statetrain train` and the scripts write, for ints, floats, None, NaN, bools, strings."""
    pd = pytest.importorskip("pandas")
    utils = pytest.importorskip("snakemake.utils")
    space = utils.Paramspace(pd.DataFrame([point]), param_sep="~")
    assert grid_point_name(point) == next(iter(space.instance_patterns))
