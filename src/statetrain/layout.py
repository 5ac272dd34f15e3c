"""Where an experiment's files live: the one definition of the results/ layout.

The rules (workflow/rules/*.smk), the scripts run by hand and the `statetrain` command all
build their paths here, so a file is always where the others look for it. Each config's
`experiment:` name gives it a directory of its own under results/ (the default experiment,
with no name, writes results/ itself), so a quick run or another config never overwrites the
default experiment's products. Paths hold Snakemake-style wildcards (`{dataset}`,
`{grid_point}`, `{split}`) that `.format()` fills.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RESULTS = "results"


@dataclass(frozen=True)
class Layout:
    """The directories of one experiment (every attribute a path template)."""

    root: str = RESULTS

    @classmethod
    def of(cls, cfg: Mapping[str, Any]) -> Layout:
        """The layout of a validated config: results/ or results/<experiment>/."""
        name = cfg.get("experiment") or ""
        return cls(f"{RESULTS}/{name}" if name else RESULTS)

    @property
    def data(self) -> str:
        """Prepared splits and their validation reports: {data}/{split}.npy|npz|validation.json"""
        return f"{self.root}/data/{{dataset}}"

    @property
    def runs(self) -> str:
        """One directory per dataset × grid point: best_model.pth, metrics.json, last.pth, ..."""
        return f"{self.root}/runs/{{dataset}}/{{grid_point}}"

    @property
    def best(self) -> str:
        """The selected grid point of a dataset: best_model.pth, selection.json, metrics.json"""
        return f"{self.root}/best/{{dataset}}"

    @property
    def plots(self) -> str:
        return f"{self.root}/plots/{{dataset}}"

    @property
    def sweep(self) -> str:
        """Tables over every run: summary.csv, headline.csv, learnability.md"""
        return f"{self.root}/sweep"

    @property
    def logs(self) -> str:
        return f"{self.root}/logs"

    @property
    def quick(self) -> str:
        """`statetrain train --quick`: smoke runs, apart from the workflow's runs."""
        return f"{self.root}/smoke/{{dataset}}/{{grid_point}}"

    @property
    def mlflow_db(self) -> str:
        return f"{self.root}/mlflow/mlflow.db"

    def split(self, dataset: str, split: str, suffix: str) -> str:
        return f"{self.data.format(dataset=dataset)}/{split}.{suffix}"

    def run_dir(self, dataset: str, grid_point: str) -> str:
        return self.runs.format(dataset=dataset, grid_point=grid_point)

    def best_dir(self, dataset: str) -> str:
        return self.best.format(dataset=dataset)
