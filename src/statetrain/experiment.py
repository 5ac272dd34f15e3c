"""An experiment (one validated config) as the workflow runs it: its data files, prepared
and checked, and where each split lives. The rules, the scripts and `statetrain data` /
`statetrain train` all ask here, so a split is always the file the others expect."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .config import SPLITS, dataset_spec
from .io import write_json
from .layout import Layout
from .tasks import get_task, task_class

log = logging.getLogger("statetrain")


def split_paths(cfg: Mapping[str, Any], dataset: str) -> dict[str, str]:
    """train/validation/test files of a dataset: the user's own files where the task uses
    them as they are, else the prepared splits under the experiment's data directory."""
    task = get_task(cfg["task"], dataset_spec(cfg, dataset))
    given = task.user_files()
    layout = Layout.of(cfg)
    suffix = task_class(cfg["task"]).split_suffix
    return {s: given.get(s) or layout.split(dataset, s, suffix) for s in SPLITS}


def report_path(cfg: Mapping[str, Any], dataset: str, split: str) -> str:
    return Layout.of(cfg).split(dataset, split, "validation.json")


def prepare_data(cfg: Mapping[str, Any], dataset: str) -> dict[str, dict[str, Any]]:
    """Write the dataset's splits (unless the user gives them) and check every one, writing
    each check report beside the data: what `statetrain data` does by hand."""
    from pathlib import Path

    task = get_task(cfg["task"], dataset_spec(cfg, dataset))
    given = task.user_files()
    reports = {}
    for split, path in split_paths(cfg, dataset).items():
        if split not in given and not Path(path).exists():
            log.info("wrote %s: %s", path, task.write_split(split, path))
        reports[split] = task.check_split(path)
        write_json(reports[split], report_path(cfg, dataset, split))
        log.info("%s is valid", path)
    return reports
