"""The classifier on the UCR/UEA time-series archives: `.ts` files, aeon's baselines, the table.

Why a separate module: everything here needs aeon (the maintained time-series library whose
loader reads the archives' `.ts` format and whose 1-NN DTW and MiniRocket are the reference
baselines of the field), and aeon is imported only when a config asks for a `.ts` file or a
baseline, so the synthetic classifier runs without it.

* `read_ts` reads one `.ts` file with aeon's `load_from_ts_file` (never a hand-written
  parser) into the classifier's layout: x (N, T, C) float32 zero-padded to the longest
  sequence, the true lengths (N,), and the labels as text.
* `archive_paths` finds a dataset that aeon's wheel ships (GunPoint, ItalyPowerDemand,
  BasicMotions, JapaneseVowels, ...) inside the installed package: no download at run time.
* `Baselines` fits 1-NN DTW (full window, the archive's reference) and MiniRocket on the
  training split and scores any other split with accuracy, balanced accuracy and macro-F1.
* `benchmark_table` turns the sweep's summary.csv into the README's markdown table.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from ..validation import DatasetError

log = logging.getLogger("statetrain")

BASELINES = ("dtw", "minirocket")
BASELINE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
MINIROCKET_MIN_LENGTH = 9  # MiniRocket's kernels span 9 steps
SEED = 0


def _aeon_data_root() -> Path:
    try:
        import aeon.datasets
    except ImportError as exc:  # pragma: no cover - aeon is pinned in requirements.txt
        raise DatasetError(
            None,
            "aeon",
            f"reading .ts files and the archive baselines need the aeon package ({exc}).",
            "Install the pinned stack: pip install -r requirements.txt -c constraints.txt.",
        ) from None
    return Path(aeon.datasets.__file__).parent / "data"


def archive_paths(name: str) -> dict[str, Path]:
    """The TRAIN and TEST `.ts` files of archive dataset `name` as aeon's wheel ships them.

    Why: the benchmark configs must run offline and identically on every machine, so they
    name a dataset, and the files come from the pinned package, not from the internet.
    """
    root = _aeon_data_root()
    folder = root / name
    paths = {"train": folder / f"{name}_TRAIN.ts", "test": folder / f"{name}_TEST.ts"}
    if not all(p.is_file() for p in paths.values()):
        shipped = sorted(
            d.name for d in root.iterdir() if d.is_dir() and list(d.glob(f"{d.name}_TRAIN.ts"))
        )
        raise DatasetError(
            folder,
            "archive dataset",
            f"aeon does not ship the dataset '{name}' as {name}_TRAIN.ts/{name}_TEST.ts; "
            f"it ships {', '.join(shipped)}.",
            "Pick one of those for data.archive, or download the archive's .ts files and "
            "set data.path and data.test_path to them.",
        )
    return paths


def resolve_archive(spec: Mapping[str, Any]) -> dict[str, Any]:
    """`spec` with data.archive turned into data.path/test_path (the keys the task reads)."""
    name = spec.get("archive")
    if not name:
        return dict(spec)
    paths = archive_paths(str(name))
    return {**spec, "path": str(paths["train"]), "test_path": str(paths["test"])}


def read_ts(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One `.ts` file → (x (N, T, C) float32 zero-padded, lengths (N,) int64, labels (N,) str).

    Variable-length archives (JapaneseVowels, PickupGestureWiimoteZ) arrive from aeon as a
    list of (C, T_i) arrays; padding to the longest with zeros and keeping the lengths lets
    the LSTM pack each sequence to its true length (the padding is never read).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "exists", "the .ts file does not exist.", "Check data.path.")
    _aeon_data_root()  # a clear message when aeon is missing
    from aeon.datasets import load_from_ts_file

    try:
        data, labels = load_from_ts_file(str(path))
    except (OSError, ValueError, IndexError, TypeError) as exc:
        raise DatasetError(
            path,
            "readable",
            f"aeon's .ts loader could not read it ({type(exc).__name__}: {exc}).",
            "Check the file against the .ts format (timeseriesclassification.com); the "
            "header must declare @classLabel true with the label values.",
        ) from None
    if labels is None or len(labels) == 0:
        raise DatasetError(
            path,
            "labels",
            "the file holds no class labels.",
            "A classifier's .ts file needs @classLabel true and a label at the end of each line.",
        )
    series = list(data) if isinstance(data, list) else list(np.asarray(data))
    n = len(series)
    channels = {np.asarray(s).shape[0] for s in series}
    if len(channels) != 1:
        raise DatasetError(
            path,
            "channels",
            f"the sequences have different numbers of channels ({sorted(channels)}).",
            "Every sequence needs the same channels.",
        )
    c = channels.pop()
    lengths = np.array([np.asarray(s).shape[1] for s in series], dtype=np.int64)
    x = np.zeros((n, int(lengths.max()), c), dtype=np.float32)
    for i, s in enumerate(series):
        x[i, : lengths[i]] = np.asarray(s, dtype=np.float64).T
    return x, lengths, np.asarray(labels).astype(str)


# ============================================================================ baselines
def _aeon_input(x: np.ndarray, lengths: np.ndarray | None) -> Any:
    """aeon's layout: (N, C, T) when every sequence is full length, else a list of (C, T_i)."""
    if lengths is None or bool((lengths == x.shape[1]).all()):
        return np.ascontiguousarray(np.transpose(x, (0, 2, 1)), dtype=np.float64)
    return [np.ascontiguousarray(x[i, :n].T, dtype=np.float64) for i, n in enumerate(lengths)]


def _padded(x: np.ndarray) -> np.ndarray:
    """(N, C, T) for MiniRocket, which needs equal lengths ≥ 9: the zero padding of read_ts,
    extended with zeros where every sequence is shorter than the kernel."""
    out = np.transpose(x, (0, 2, 1)).astype(np.float64)
    if out.shape[2] < MINIROCKET_MIN_LENGTH:
        pad = MINIROCKET_MIN_LENGTH - out.shape[2]
        out = np.pad(out, ((0, 0), (0, 0), (0, pad)))
    return np.ascontiguousarray(out)


def label_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro-F1 of predicted class indices (the three scores
    the archives' literature reports; balanced accuracy and macro-F1 are not fooled by a
    majority class)."""
    y = np.asarray(y).astype(int)
    pred = np.asarray(pred).astype(int)
    if len(y) == 0:
        return dict.fromkeys(BASELINE_METRICS, float("nan"))
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
    }


class Baselines:
    """1-NN DTW and MiniRocket fitted once on a training split, scored on any other.

    Why these two: 1-NN with full-window DTW is the archive's reference classifier (its
    published error is what every paper compares with); MiniRocket is the fast member of
    the ROCKET family, near the state of the art at a few seconds per dataset. Both come
    from aeon with fixed seeds and one thread, so a run is reproducible.
    """

    def __init__(self, names: Sequence[str] = BASELINES) -> None:
        unknown = set(names) - set(BASELINES)
        if unknown:
            raise ValueError(f"unknown baselines {sorted(unknown)}; known: {BASELINES}")
        self.names = tuple(names)
        self.models: dict[str, Any] = {}
        self.fit_seconds: dict[str, float] = {}

    def fit(self, x: np.ndarray, y: np.ndarray, lengths: np.ndarray | None = None) -> Baselines:
        from aeon.classification.convolution_based import MiniRocketClassifier
        from aeon.classification.distance_based import KNeighborsTimeSeriesClassifier

        y = np.asarray(y).astype(int)
        for name in self.names:
            start = time.perf_counter()
            if name == "dtw":
                model = KNeighborsTimeSeriesClassifier(distance="dtw", n_neighbors=1, n_jobs=1)
                model.fit(_aeon_input(x, lengths), y)
            else:
                model = MiniRocketClassifier(random_state=SEED, n_jobs=1)
                model.fit(_padded(x), y)
            self.models[name] = model
            self.fit_seconds[name] = time.perf_counter() - start
        return self

    def score(
        self, x: np.ndarray, y: np.ndarray, lengths: np.ndarray | None = None
    ) -> dict[str, float]:
        """``{name}_{metric}`` for every baseline and metric (the summary's column names)."""
        out: dict[str, float] = {}
        for name, model in self.models.items():
            start = time.perf_counter()
            data = _aeon_input(x, lengths) if name == "dtw" else _padded(x)
            pred = model.predict(data) if len(x) else np.zeros(0, int)
            for key, value in label_metrics(y, pred).items():
                out[f"{name}_{key}"] = value
            out[f"{name}_seconds"] = self.fit_seconds[name] + time.perf_counter() - start
        return out


# ============================================================================ the table
REFERENCE_FILE = "testing/example_results_files/classification/accuracy/HC2_accuracy.csv"


def reference_accuracy(dataset: str) -> float:
    """HIVE-COTE 2's published accuracy on the archive's default split (resample 0), from the
    results file aeon's wheel ships; nan where the file has no such row.

    Why HC2 and not 1-NN DTW: aeon ships no 1-NN DTW results file, and the project never
    downloads at run time; HC2 is the state of the art these numbers sit under.
    """
    try:
        import aeon
    except ImportError:  # pragma: no cover
        return float("nan")
    path = Path(aeon.__file__).parent / REFERENCE_FILE
    if not path.is_file():
        return float("nan")
    for line in path.read_text().splitlines():
        cells = line.split(",")
        if cells[0] == dataset and len(cells) > 1:
            return float(cells[1])
    return float("nan")


def _fmt(value: Any) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "—"
    return "—" if math.isnan(v) else f"{v:.3f}"


def benchmark_table(summary: Any, archives: Mapping[str, str] | None = None) -> str:
    """The README's table from summary.csv (a path or a DataFrame): per dataset the selected
    LSTM's test accuracy, balanced accuracy and macro-F1 beside both baselines', the winner
    on accuracy said in words, and HC2's published accuracy where aeon ships it."""
    import pandas as pd

    df = pd.read_csv(summary) if not isinstance(summary, pd.DataFrame) else summary
    chosen = df[df["selected"].astype(str) == "True"]
    head = (
        "| dataset | LSTM acc | bal. acc | macro-F1 | 1-NN DTW acc | bal. acc | macro-F1 "
        "| MiniRocket acc | bal. acc | macro-F1 | best on accuracy | HC2 published acc |"
    )
    lines = [head, "|" + "---|" * 12]
    for _, row in chosen.iterrows():
        name = str(row["dataset"])
        archive = (archives or {}).get(name, name)
        scores = {
            "LSTM": [row.get(f"test_{m}") for m in BASELINE_METRICS],
            "1-NN DTW": [row.get(f"baseline_test_dtw_{m}") for m in BASELINE_METRICS],
            "MiniRocket": [row.get(f"baseline_test_minirocket_{m}") for m in BASELINE_METRICS],
        }
        acc = {k: float(v[0]) for k, v in scores.items() if _fmt(v[0]) != "—"}
        best = max(acc.values()) if acc else float("nan")
        winners = [k for k, v in acc.items() if v == best]
        verdict = " = ".join(winners) + ("" if "LSTM" in winners else " (LSTM loses)")
        cells = [f"`{name}`", *(_fmt(v) for vals in scores.values() for v in vals)]
        cells += [verdict, _fmt(reference_accuracy(archive))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
