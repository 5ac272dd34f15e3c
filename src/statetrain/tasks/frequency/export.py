"""ONNX export of one LSTM step with explicit state, checked against PyTorch in onnxruntime.

The exported graph is one time step, the unit the model is trained and deployed in:

    inputs   x  (B, 1, input_size)   h0 (num_layers, B, hidden_size)   c0 (same as h0)
    outputs  y  (B, 1)               h1 (num_layers, B, hidden_size)   c1 (same as h1)

B is a dynamic axis. A caller runs a stream by feeding ``h1, c1`` of one step back as
``h0, c0`` of the next, starting from zeros, exactly as training carries the state.

``check_onnx`` does that over a whole split in onnxruntime, resetting the state where
``trainer.predict`` resets it, and compares the predictions with PyTorch's.
"""

from __future__ import annotations

import io
import logging
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...io import write_bytes
from .trainer import Split, predict

log = logging.getLogger("statetrain")

INPUTS = ("x", "h0", "c0")
OUTPUTS = ("y", "h1", "c1")
TOLERANCE = 1e-4  # the largest |ONNX - PyTorch| prediction difference the check accepts
MIN_OPSET = 9  # ONNX's LSTM operator as the exporter emits it
# The TorchScript exporter's newest opset; newer ones it stamps on the file with a warning.
MAX_OPSET = int(getattr(torch.onnx._constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20))


class OnnxCheckError(RuntimeError):
    """The exported model does not reproduce PyTorch's predictions within the tolerance."""


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


def export_onnx(
    model: nn.Module,
    path: str | Path,
    opset: int = 17,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write one step of `model` as ONNX (inputs x, h0, c0; outputs y, h1, c1; dynamic batch).

    The file is checked with ``onnx.checker`` (with shape inference) before it is renamed into
    place, so `path` is either absent, the previous file, or a complete valid model.
    `metadata` lands in the model's metadata_props (values as strings).
    """
    import onnx

    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(
            f"ONNX opset {opset} is not supported: the exporter writes opsets "
            f"{MIN_OPSET}-{MAX_OPSET} (export.opset in the config, --opset by hand)."
        )
    path = Path(path)
    input_size, layers, hidden = _state_shape(model)
    batch = 2  # a dummy batch of 2, not 1, so that no size-1 dimension is specialised
    args = (
        torch.zeros(batch, 1, input_size),
        torch.zeros(layers, batch, hidden),
        torch.zeros(layers, batch, hidden),
    )
    dynamic = {"x": {0: "batch"}, "y": {0: "batch"}}
    dynamic.update({name: {1: "batch"} for name in ("h0", "c0", "h1", "c1")})
    buffer = io.BytesIO()
    was_training = model.training
    model.eval()
    try:
        # The TorchScript-based exporter (dynamo=False), not the torch.export-based default:
        # it maps nn.LSTM onto ONNX's own LSTM operator for every opset from 9 (the config's
        # range), exports in ~0.2 s and the graph runs in onnxruntime to ~1e-7 of PyTorch.
        # The dynamo exporter (torch 2.13) gives the same numbers but only writes opset >= 18
        # (lower ones are down-converted after the fact), takes ~6 s and floods the log.
        # Its warnings are about nn.LSTM's input checks being traced and its deprecation;
        # none applies to a graph whose state is explicit I/O, which check_onnx verifies.
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=".*batch_size other than 1.*LSTM")
            torch.onnx.export(
                _Step(model),
                args,
                buffer,
                dynamo=False,
                input_names=list(INPUTS),
                output_names=list(OUTPUTS),
                dynamic_axes=dynamic,
                opset_version=opset,
                do_constant_folding=True,
            )
    finally:
        model.train(was_training)
    proto = onnx.load_from_string(buffer.getvalue())
    proto.doc_string = (
        f"statetrain: one step of an LSTM ({layers} layer(s), hidden {hidden}) with explicit "
        f"state. Inputs x (B,1,{input_size}), h0 and c0 ({layers},B,{hidden}); outputs "
        f"y (B,1), h1 and c1 ({layers},B,{hidden}). Feed h1, c1 back as h0, c0; start from "
        "zeros."
    )
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    onnx.checker.check_model(proto, full_check=True)
    return write_bytes(proto.SerializeToString(), path)


def _session(onnx_path: str | Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    # Each step is a handful of tiny matrix products: more threads only add hand-offs.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def reset_rows(split: Split, state_reset: str) -> np.ndarray:
    """Rows where the state is zeroed, as in training: row 0 ("epoch") or each stream start."""
    if state_reset == "epoch":
        return np.array([0], dtype=np.int64)
    if state_reset == "stream":
        return np.asarray(split.starts, dtype=np.int64)
    raise ValueError(f"state_reset must be 'epoch' or 'stream', got {state_reset!r}")


def onnx_predict(session: Any, x: np.ndarray, resets: np.ndarray) -> np.ndarray:
    """Run rows `x` (N, input_size) one step at a time through an onnxruntime session.

    The state starts at zero, is carried from each step to the next, and is zeroed again at
    each row in `resets`. Batch 1: this is how a deployed model consumes a stream.
    """
    shapes = {i.name: i.shape for i in session.get_inputs()}
    layers, hidden = int(shapes["h0"][0]), int(shapes["h0"][2])
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    steps = x.reshape(n, 1, 1, x.shape[1])
    zeros = np.zeros((layers, 1, hidden), dtype=np.float32)
    is_reset = np.zeros(n, dtype=bool)
    is_reset[resets] = True
    out = np.empty(n, dtype=np.float32)
    run, names = session.run, list(OUTPUTS)
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
    onnx_path: str | Path,
    model: nn.Module,
    array: np.ndarray,
    state_reset: str = "epoch",
    tolerance: float = TOLERANCE,
) -> dict[str, Any]:
    """Run a split (N, 6) through the ONNX file step by step and compare with PyTorch.

    The reference is ``trainer.predict``: frozen weights, the state carried as in training.
    Returns max_abs_diff, rows, passed (max_abs_diff <= tolerance, and every prediction
    finite), seconds (the onnxruntime pass), the file's opset and I/O shapes, and the
    onnxruntime, onnx and torch versions.
    """
    import onnx
    import onnxruntime as ort

    split = Split.from_array(array)
    resets = reset_rows(split, state_reset)
    session = _session(onnx_path)
    shapes = {i.name: i.shape for i in session.get_inputs()}
    input_size, layers, hidden = _state_shape(model)
    expected = {"x": input_size, "h0": (layers, hidden)}
    found = {"x": shapes["x"][2], "h0": (shapes["h0"][0], shapes["h0"][2])}
    if found != expected or split.x.shape[1] != input_size:
        raise ValueError(
            f"'{onnx_path}' (x features, (layers, hidden) of h0: {found}) does not match the "
            f"model ({expected}) or the data ({split.x.shape[1]} input columns)."
        )
    t0 = time.perf_counter()
    reference = predict(model, split, state_reset)
    torch_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    onnx_pred = onnx_predict(session, split.x, resets)
    seconds = time.perf_counter() - t0
    finite = bool(np.isfinite(onnx_pred).all() and np.isfinite(reference).all())
    diff = np.abs(onnx_pred.astype(np.float64) - reference.astype(np.float64))
    worst = int(np.nanargmax(diff)) if finite else int(np.argmin(np.isfinite(diff)))
    max_abs = float(diff.max()) if finite else float("inf")
    proto = onnx.load(str(onnx_path), load_external_data=False)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    n = len(split)
    return {
        "passed": finite and max_abs <= tolerance,
        "max_abs_diff": max_abs,
        "max_abs_diff_row": worst,
        "mean_abs_diff": float(diff.mean()) if finite else None,
        "tolerance": tolerance,
        "rows": n,
        "streams": len(split.starts),
        "state_reset": state_reset,
        "seconds": seconds,
        "microseconds_per_step": seconds / max(n, 1) * 1e6,
        "pytorch_seconds": torch_seconds,
        "opset": opset,
        "inputs": {i.name: i.shape for i in session.get_inputs()},
        "outputs": {o.name: o.shape for o in session.get_outputs()},
        "versions": {
            "onnxruntime": ort.__version__,
            "onnx": onnx.__version__,
            "torch": str(torch.__version__),
        },
    }


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    data: str | Path | None = None,
    *,
    opset: int = 17,
    report_path: str | Path | None = None,
    tolerance: float = TOLERANCE,
) -> dict[str, Any]:
    """Export a statetrain checkpoint (no training) and, given a split, check the export.

    The report goes to `report_path` (when given) before the verdict, so a failed check
    leaves its figures behind; then OnnxCheckError is raised unless the check passed.
    A corrupt or foreign checkpoint raises CheckpointError, a bad split DatasetError.
    """
    from ...checkpoint import load_model
    from ...io import refuse_overwrite, write_json
    from ...validation import load_array
    from .validation import validate_array

    inputs = [checkpoint, *([data] if data is not None else [])]
    refuse_overwrite(out, inputs)
    if report_path is not None:
        refuse_overwrite(report_path, inputs)
    model, ckpt = load_model(checkpoint)
    if ckpt.get("task", "frequency") != "frequency":
        raise OnnxCheckError(
            f"Checkpoint '{checkpoint}' holds a {type(model).__name__} of the "
            f"{ckpt.get('task')} task; ONNX export covers the frequency task's stateful models "
            "(FrequencyLSTM, ExpertLSTM) so far. Use `statetrain predict` for this model."
        )
    state_reset = ckpt.get("state_reset") or "epoch"
    input_size, state_rows, hidden = _state_shape(model)
    model_args = {
        "input_size": input_size,
        "hidden_size": hidden,
        "num_layers": state_rows,
        "experts": len(getattr(model, "experts", ())),
    }
    metadata = {"source": Path(checkpoint).name, "state_reset": state_reset, **model_args}
    t0 = time.perf_counter()
    export_onnx(model, out, opset=opset, metadata=metadata)
    log.info(
        "exported %s -> %s in %.2fs (opset %d, %s)",
        checkpoint,
        out,
        time.perf_counter() - t0,
        opset,
        model.get_model_summary(),
    )
    report: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "onnx_file": str(out),
        "model_args": model_args,
        "state_reset": state_reset,
    }
    if data is None:
        return report
    array = load_array(data)
    validate_array(array, path=data)
    report["data"] = str(data)
    report.update(check_onnx(out, model, array, state_reset, tolerance))
    if report_path is not None:
        write_json(report, report_path)
    reset = "once, at row 0" if state_reset == "epoch" else "at each stream start"
    summary = (
        f"onnxruntime vs PyTorch on {report['rows']:,} rows of '{data}' (state carried, zeroed "
        f"{reset}): max abs diff {report['max_abs_diff']:.3g} at row "
        f"{report['max_abs_diff_row']} (tolerance {tolerance:g}), {report['seconds']:.2f}s "
        f"({report['microseconds_per_step']:.1f} µs/step)"
    )
    if not report["passed"]:
        raise OnnxCheckError(
            f"ONNX check FAILED: {summary}. The exported graph does not reproduce the PyTorch "
            f"model; '{out}' must not be used."
        )
    log.info("ONNX check passed: %s", summary)
    return report
