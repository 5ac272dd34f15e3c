"""What every rule script shares: logging into the rule's log file, and the by-hand CLI.

A script runs two ways with the same code: under Snakemake (``script:``, the ``snakemake``
object supplies paths and params) or by hand (``python scripts/x.py --config ...``, paths
follow the workflow's layout). Both end in the script's ``main`` with plain arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .config import load_config


@contextlib.contextmanager
def rule_logging(log_path: str | Path | None, echo: bool = False) -> Iterator[logging.Logger]:
    """Send `logging` (and tqdm's stderr) to the rule's log file; log any failure there.

    The exception is re-raised so that Snakemake sees the job fail, but its one-paragraph
    message is the last line of the log, where `--show-failed-logs` shows it.
    """
    logger = logging.getLogger("statetrain")
    logger.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    handlers: list[logging.Handler] = []
    stream = None
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        stream = open(log_path, "a", buffering=1)  # noqa: SIM115 - closed below
        handlers.append(logging.StreamHandler(stream))
    if echo or not log_path:
        handlers.append(logging.StreamHandler(sys.stderr))
    for h in handlers:
        h.setFormatter(fmt)
        logger.addHandler(h)
    old_stderr = sys.stderr
    if stream is not None and not echo:
        sys.stderr = stream
    try:
        yield logger
    except BaseException as exc:
        # The failure's paragraph ends the log file (where --show-failed-logs looks); on the
        # terminal the caller (the CLI) prints it once itself.
        if stream is not None and (not isinstance(exc, SystemExit) or exc.code not in (0, None)):
            stream.write(f"ERROR {type(exc).__name__}: {' '.join(str(exc).split())}\n")
        raise
    finally:
        sys.stderr = old_stderr
        for h in handlers:
            logger.removeHandler(h)
        if stream is not None:
            stream.close()


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--config",
        nargs="+",
        default=["config/config.yaml"],
        help="config file(s), merged in order (default: config/config.yaml)",
    )
    p.add_argument("--log", default=None, help="log file (default: stderr)")
    return p


def load(args: argparse.Namespace) -> dict[str, Any]:
    return load_config(*args.config)


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """`key=value` pairs with YAML-typed values (lr=1e-3 → float, state_reset=stream → str)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def grid_point_name(point: Mapping[str, Any]) -> str:
    """The run directory of a grid point: one `key~value` segment per key, joined by '/'.

    This is how the workflow's snakemake.utils.Paramspace (workflow/rules/common.smk) spells a
    point, missing values as NA; it is written out here so that the library, and with it
    `statetrain train`, needs no snakemake (tests/test_install.py checks both agree).
    """
    return "/".join(f"{key}~{_segment_value(value)}" for key, value in point.items())


def _segment_value(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "NA"
    return str(value)


def cpu_model() -> str:
    """The CPU's model name, recorded beside every benchmark figure (timings and, for chaotic
    training, results depend on it)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"
