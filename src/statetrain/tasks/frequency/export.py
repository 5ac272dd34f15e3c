"""ONNX form of the frequency task's models: one LSTM step with explicit state.

The exported graph is one time step, the unit the model is trained and deployed in:

    inputs   x  (B, 1, input_size)   h0 (num_layers, B, hidden_size)   c0 (same as h0)
    outputs  y  (B, 1)               h1 (num_layers, B, hidden_size)   c1 (same as h1)

B is a dynamic axis. A caller runs a stream by feeding ``h1, c1`` of one step back as
``h0, c0`` of the next, starting from zeros, exactly as training carries the state.

``check_onnx`` does that over a whole split in onnxruntime, resetting the state where
``trainer.predict`` resets it, and compares the predictions with PyTorch's. Writing the file
and the verdict are the core's (``statetrain.export``), the same for every task.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...export import (
    TOLERANCE,
    OnnxCheckError,
    OnnxGraph,
    compare_outputs,
    file_facts,
    session,
    write_onnx,
)
from .trainer import Split, predict

INPUTS = ("x", "h0", "c0")
OUTPUTS = ("y", "h1", "c1")
PROBE_ROWS = 1000  # rows of the random probe a check without data runs (4 streams)


class _Step(nn.Module):
    """The model as a function of (x, h0, c0) -> (y, h1, c1): the state is graph I/O.

    An ExpertLSTM carries one state per expert; they travel stacked along the layer axis
    (expert k's layers are rows k·L … k·L + L − 1), so a caller sees one h and one c whatever
    the model, and feeds them back unchanged.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        experts = getattr(model, "experts", None)
        self.n_experts = len(experts) if experts is not None else 0
        self.layers = int(experts[0].num_layers) if experts is not None else 0

    def forward(
        self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.n_experts:
            y, (h1, c1) = self.model(x, (h0, c0))
            return y, h1, c1
        states = tuple(
            (
                h0[k * self.layers : (k + 1) * self.layers],
                c0[k * self.layers : (k + 1) * self.layers],
            )
            for k in range(self.n_experts)
        )
        y, new = self.model(x, states)
        return y, torch.cat([h for h, _ in new]), torch.cat([c for _, c in new])


def _state_shape(model: nn.Module) -> tuple[int, int, int]:
    """(input_size, state rows, hidden_size) of a FrequencyLSTM or of an ExpertLSTM whose
    experts share their depth and width (their states stack into one tensor)."""
    experts = getattr(model, "experts", None)
    if experts is None:
        return int(model.input_size), int(model.num_layers), int(model.hidden_size)
    shapes = {(int(e.num_layers), int(e.hidden_size)) for e in experts}
    if len(shapes) != 1:
        raise OnnxCheckError(
            f"the experts differ in (layers, hidden size) {sorted(shapes)}: their states do "
            "not stack into one tensor, so this ExpertLSTM has no single-state ONNX step. "
            "Train the experts at one size to export the combination."
        )
    layers, hidden = shapes.pop()
    return int(model.input_size), layers * len(experts), hidden


def step_graph(
    module: nn.Module,
    input_size: int,
    layers: int,
    hidden: int,
    doc: str,
    description: Mapping[str, Any],
) -> OnnxGraph:
    """One step of a stateful model, (x, h0, c0) -> (y, h1, c1), batch dynamic: the I/O every
    stateful task exports (its module decides what x and y mean)."""
    batch = 2  # a dummy batch of 2, not 1, so that no size-1 dimension is specialised
    dynamic = {"x": {0: "batch"}, "y": {0: "batch"}}
    dynamic.update({name: {1: "batch"} for name in ("h0", "c0", "h1", "c1")})
    return OnnxGraph(
        module=module,
        example=(
            torch.zeros(batch, 1, input_size),
            torch.zeros(layers, batch, hidden),
            torch.zeros(layers, batch, hidden),
        ),
        inputs=INPUTS,
        outputs=OUTPUTS,
        dynamic_axes=dynamic,
        doc=doc,
        description=dict(description),
    )


def onnx_graph(model: nn.Module) -> OnnxGraph:
    """One step of a FrequencyLSTM or ExpertLSTM: (x, h0, c0) -> (y, h1, c1), dynamic batch."""
    input_size, layers, hidden = _state_shape(model)
    return step_graph(
        _Step(model),
        input_size,
        layers,
        hidden,
        doc=(
            f"statetrain: one step of an LSTM ({layers} layer(s), hidden {hidden}) with "
            f"explicit state. Inputs x (B,1,{input_size}), h0 and c0 ({layers},B,{hidden}); "
            f"outputs y (B,1), h1 and c1 ({layers},B,{hidden}). Feed h1, c1 back as h0, c0; "
            "start from zeros."
        ),
        description={
            "input_size": input_size,
            "hidden_size": hidden,
            "num_layers": layers,
            "experts": len(getattr(model, "experts", ())),
        },
    )


def export_onnx(
    model: nn.Module,
    path: str | Path,
    opset: int = 17,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write one step of `model` as ONNX (inputs x, h0, c0; outputs y, h1, c1)."""
    return write_onnx(onnx_graph(model), path, opset=opset, metadata=metadata)


def probe_split(input_size: int, rows: int = PROBE_ROWS) -> Split:
    """A fixed random stream set for a check without data: S uniform in [-2, 2] and a one-hot
    selector over four streams of equal length (targets zero: only the outputs compare)."""
    rng = np.random.default_rng(0)
    n_select = input_size - 1
    array = np.zeros((rows, input_size + 1), dtype=np.float32)
    array[:, 0] = rng.uniform(-2.0, 2.0, rows)
    if n_select:
        block = np.arange(rows) * 4 // rows  # four streams
        array[np.arange(rows), 1 + block % n_select] = 1.0
    return Split.from_array(array)


def reset_rows(split: Split, state_reset: str) -> np.ndarray:
    """Rows where the state is zeroed, as in training: row 0 ("epoch") or each stream start."""
    if state_reset == "epoch":
        return np.array([0], dtype=np.int64)
    if state_reset == "stream":
        return np.asarray(split.starts, dtype=np.int64)
    raise ValueError(f"state_reset must be 'epoch' or 'stream', got {state_reset!r}")


def onnx_predict(sess: Any, x: np.ndarray, resets: np.ndarray) -> np.ndarray:
    """Run rows `x` (N, input_size) one step at a time through an onnxruntime session.

    The state starts at zero, is carried from each step to the next, and is zeroed again at
    each row in `resets`. Batch 1: this is how a deployed model consumes a stream.
    """
    shapes = {i.name: i.shape for i in sess.get_inputs()}
    layers, hidden = int(shapes["h0"][0]), int(shapes["h0"][2])
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    steps = x.reshape(n, 1, 1, x.shape[1])
    zeros = np.zeros((layers, 1, hidden), dtype=np.float32)
    is_reset = np.zeros(n, dtype=bool)
    is_reset[resets] = True
    out = np.empty(n, dtype=np.float32)
    run, names = sess.run, list(OUTPUTS)
    h = c = zeros
    # ~30 µs per step (one session.run; the per-call overhead dominates at hidden 64):
    # 40,000 rows take about 1.2 s. io_binding and run_with_ort_values measured no faster.
    for i in range(n):
        if is_reset[i]:
            h = c = zeros
        y, h, c = run(names, {"x": steps[i], "h0": h, "c0": c})
        out[i] = y[0, 0]
    return out


def check_onnx(
    onnx_file: str | Path | Any,
    model: nn.Module,
    data: np.ndarray | Split,
    state_reset: str = "epoch",
    tolerance: float = TOLERANCE,
) -> dict[str, Any]:
    """Run a split through the ONNX file (a path or an onnxruntime session) step by step and
    compare with PyTorch.

    The reference is ``trainer.predict``: frozen weights, the state carried as in training.
    Returns passed (max_abs_diff <= tolerance, every prediction finite), max_abs_diff and its
    row, rows, streams, timings, and the file's opset, I/O shapes and library versions.
    """
    sess = session(onnx_file) if isinstance(onnx_file, (str, Path)) else onnx_file
    split = data if isinstance(data, Split) else Split.from_array(data)
    resets = reset_rows(split, state_reset)
    shapes = {i.name: i.shape for i in sess.get_inputs()}
    input_size, layers, hidden = _state_shape(model)
    expected = {"x": input_size, "h0": (layers, hidden)}
    found = {"x": shapes["x"][2], "h0": (shapes["h0"][0], shapes["h0"][2])}
    if found != expected or split.x.shape[1] != input_size:
        raise ValueError(
            f"the ONNX file (x features, (layers, hidden) of h0: {found}) does not match the "
            f"model ({expected}) or the data ({split.x.shape[1]} input columns)."
        )
    t0 = time.perf_counter()
    reference = predict(model, split, state_reset)
    torch_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    onnx_pred = onnx_predict(sess, split.x, resets)
    seconds = time.perf_counter() - t0
    verdict = compare_outputs([onnx_pred], [reference], tolerance)
    diff = np.abs(onnx_pred.astype(np.float64) - reference.astype(np.float64))
    n = len(split)
    report = {
        **verdict,
        "max_abs_diff_row": int(np.nanargmax(np.nan_to_num(diff, nan=np.inf))) if n else 0,
        "rows": n,
        "streams": len(split.starts),
        "state_reset": state_reset,
        "what": f"{n:,} rows, state carried and zeroed "
        + ("once, at row 0" if state_reset == "epoch" else "at each stream start"),
        "onnx_seconds": seconds,
        "microseconds_per_step": seconds / max(n, 1) * 1e6,
        "pytorch_seconds": torch_seconds,
    }
    if isinstance(onnx_file, (str, Path)):
        report.update(file_facts(onnx_file, sess))
    return report
