"""The frequency-extraction data: its generator, its safe loader and the assignment's Dataset.

A dataset file is a float32 ``(N, n_freq + 2)`` array ``[S, C1..Cn, target]``: time-ordered
rows, each frequency one contiguous block (a *stream*). The mixture S is shared by the streams
of a split, as in the assignment: stream i pairs that same S with one-hot C_i and sin(2π f_i t).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ...io import write_npy
from ...validation import DatasetError, load_array
from .validation import validate_array


def generate_dataset(
    *,
    frequencies: Sequence[float] = (1, 3, 5, 7),
    fs: float = 1000,
    duration_s: float = 10.0,
    amplitude_range: Sequence[float] = (0.8, 1.2),
    phase_jitter: float = np.pi,
    seed: int = 1,
    streams: Sequence[float] | None = None,
) -> np.ndarray:
    """One split: S(t) = mean_i A_i(t) sin(2π f_i t + φ_i(t)), A and φ drawn per sample.

    With phase_jitter = π (the assignment's U(0, 2π)) S at each instant carries no information
    about any target: the model has to become an oscillator locked to the stream start.
    `streams` keeps only the streams of those frequencies (the mixture and the one-hot layout
    still span every frequency): the data of a per-frequency expert.
    """
    freqs = np.asarray(frequencies, dtype=np.float64)
    n = round(duration_s * fs)
    t = np.arange(n, dtype=np.float64) / fs
    rng = np.random.default_rng(seed)
    lo, hi = amplitude_range
    amp = rng.uniform(lo, hi, size=(len(freqs), n))
    phase = rng.uniform(-phase_jitter, phase_jitter, size=(len(freqs), n))
    mixture = np.mean(amp * np.sin(2 * np.pi * freqs[:, None] * t[None, :] + phase), axis=0)
    keep = set(map(float, streams)) if streams is not None else set(map(float, freqs))
    blocks = []
    for i, f in enumerate(freqs):
        if float(f) not in keep:
            continue
        block = np.zeros((n, len(freqs) + 2), dtype=np.float64)
        block[:, 0] = mixture
        block[:, 1 + i] = 1.0
        block[:, -1] = np.sin(2 * np.pi * f * t)
        blocks.append(block)
    return np.concatenate(blocks).astype(np.float32)


def generate_split(spec: Mapping[str, Any], split: str) -> np.ndarray:
    """A split of a config dataset scenario (see config.dataset_spec)."""
    return generate_dataset(
        frequencies=spec["frequencies"],
        fs=spec["fs"],
        duration_s=spec["duration_s"],
        amplitude_range=spec["amplitude_range"],
        phase_jitter=spec["phase_jitter"],
        seed=spec["seeds"][split],
        streams=spec.get("streams"),
    )


def save_array(array: np.ndarray, path: str | Path) -> None:
    """np.save through a temporary file and a rename: a reader never sees half a file."""
    write_npy(array, path)


def stream_starts(array: np.ndarray) -> np.ndarray:
    """Row indices where a stream begins (where the hot C column changes); first is 0."""
    hot = np.argmax(array[:, 1:-1], axis=1)
    return np.concatenate([[0], np.flatnonzero(np.diff(hot)) + 1]).astype(np.int64)


def stream_columns(array: np.ndarray) -> np.ndarray:
    """For each stream, the index of its hot C column (= index into the frequency list)."""
    return np.argmax(array[stream_starts(array), 1:-1], axis=1)


class FrequencyDataset(Dataset):
    """The assignment's Dataset: ``ds[i] -> (x float32 (5,), y float32 (1,))``.

    The file is validated on load (pass ``validate=False`` to skip it for a file already
    checked by the workflow); the raw arrays stay available as ``.inputs`` and ``.targets`` so
    that trainers can take them directly instead of one row at a time.
    """

    def __init__(
        self,
        data_path: str | Path,
        validate: bool = True,
        min_stream_length: int = 1,
    ) -> None:
        self.path = Path(data_path)
        array = load_array(self.path)
        if validate:
            self.report = validate_array(array, min_stream_length=min_stream_length)
        self.data = np.ascontiguousarray(array, dtype=np.float32)
        self.inputs = np.ascontiguousarray(self.data[:, :-1])
        self.targets = np.ascontiguousarray(self.data[:, -1:])
        self.stream_starts = stream_starts(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= idx < len(self):
            raise IndexError(f"index {idx} out of range for a dataset of {len(self)} rows")
        return torch.from_numpy(self.inputs[idx]), torch.from_numpy(self.targets[idx])


__all__ = [
    "DatasetError",
    "FrequencyDataset",
    "generate_dataset",
    "generate_split",
    "save_array",
    "stream_columns",
    "stream_starts",
]
