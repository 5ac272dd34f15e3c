"""ONNX export of any statetrain checkpoint, checked against PyTorch in onnxruntime.

What `statetrain export CHECKPOINT OUT.onnx` and the workflow's export rule run, for every
task: the checkpoint names its task, the task says what one call of its deployed model is
(`Task.onnx_graph`: a module, example inputs, names and dynamic axes; stateful models take
and return their state explicitly) and how to check it (`Task.check_onnx`: onnxruntime
against PyTorch on the user's split, or on a fixed random probe when none is given). This
module writes the graph (TorchScript exporter, ``onnx.checker``, atomic rename) and turns the
check into a verdict: a file that does not reproduce PyTorch within the tolerance is an error.
"""

from __future__ import annotations

import io
import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .io import write_bytes

log = logging.getLogger("statetrain")

TOLERANCE = 1e-4  # the largest |ONNX - PyTorch| output difference the check accepts
MIN_OPSET = 9  # ONNX's LSTM operator as the exporter emits it
# The TorchScript exporter's newest opset; newer ones it stamps on the file with a warning.
MAX_OPSET = int(getattr(torch.onnx._constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20))


class OnnxCheckError(RuntimeError):
    """The exported model does not reproduce PyTorch's outputs within the tolerance, or the
    model has no ONNX form."""


@dataclass
class OnnxGraph:
    """One call of a deployed model: what `torch.onnx.export` traces and how its I/O is named.

    `example` is traced with a batch of 2, not 1, so that no size-1 dimension is specialised;
    `dynamic_axes` names the axes (batch, time) a caller may vary.
    """

    module: nn.Module
    example: tuple[torch.Tensor, ...]
    inputs: Sequence[str]
    outputs: Sequence[str]
    dynamic_axes: Mapping[str, Mapping[int, str]]
    doc: str
    description: dict[str, Any] = field(default_factory=dict)  # plain values for metadata


def write_onnx(
    graph: OnnxGraph,
    path: str | Path,
    opset: int = 17,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write `graph` as ONNX; the file is checked with ``onnx.checker`` (with shape
    inference) before it is renamed into place, so `path` is either absent, the previous
    file, or a complete valid model. `metadata` lands in metadata_props (values as strings).
    """
    import onnx

    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(
            f"ONNX opset {opset} is not supported: the exporter writes opsets "
            f"{MIN_OPSET}-{MAX_OPSET} (export.opset in the config, --opset by hand)."
        )
    buffer = io.BytesIO()
    module = graph.module
    was_training = module.training
    module.eval()
    try:
        # The TorchScript-based exporter (dynamo=False), not the torch.export-based default:
        # it maps nn.LSTM onto ONNX's own LSTM operator for every opset from 9 (the config's
        # range), exports in ~0.2 s and the graph runs in onnxruntime to ~1e-7 of PyTorch.
        # The dynamo exporter (torch 2.13) gives the same numbers but only writes opset >= 18
        # (lower ones are down-converted after the fact), takes ~6 s and floods the log.
        # Its warnings are about nn.LSTM's input checks being traced and its deprecation;
        # none applies to a graph whose I/O is explicit, which the task's check verifies.
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=".*batch_size other than 1.*LSTM")
            torch.onnx.export(
                module,
                graph.example,
                buffer,
                dynamo=False,
                input_names=list(graph.inputs),
                output_names=list(graph.outputs),
                dynamic_axes={k: dict(v) for k, v in graph.dynamic_axes.items()},
                opset_version=opset,
                do_constant_folding=True,
            )
    finally:
        module.train(was_training)
    proto = onnx.load_from_string(buffer.getvalue())
    proto.doc_string = graph.doc
    for key, value in {**graph.description, **(metadata or {})}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    onnx.checker.check_model(proto, full_check=True)
    return write_bytes(proto.SerializeToString(), path)


def session(onnx_path: str | Path) -> Any:
    """An onnxruntime session on one CPU thread: deployed calls are small, and one thread
    keeps the check's numbers the same on every machine."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def file_facts(onnx_path: str | Path, sess: Any) -> dict[str, Any]:
    """The file's opset, I/O shapes and the versions that made and ran it (for the report)."""
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(onnx_path), load_external_data=False)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return {
        "opset": opset,
        "inputs": {i.name: i.shape for i in sess.get_inputs()},
        "outputs": {o.name: o.shape for o in sess.get_outputs()},
        "versions": {
            "onnxruntime": ort.__version__,
            "onnx": onnx.__version__,
            "torch": str(torch.__version__),
        },
    }


def compare_outputs(
    onnx_out: Sequence[np.ndarray], torch_out: Sequence[np.ndarray], tolerance: float
) -> dict[str, Any]:
    """passed, max_abs_diff and mean_abs_diff of matching outputs (all finite, or it fails)."""
    a = np.concatenate([np.asarray(o, np.float64).ravel() for o in onnx_out])
    b = np.concatenate([np.asarray(o, np.float64).ravel() for o in torch_out])
    if a.shape != b.shape:
        return {"passed": False, "max_abs_diff": float("inf"), "mean_abs_diff": None}
    finite = bool(np.isfinite(a).all() and np.isfinite(b).all())
    diff = np.abs(a - b)
    max_abs = float(diff.max(initial=0.0)) if finite else float("inf")
    return {
        "passed": finite and max_abs <= tolerance,
        "max_abs_diff": max_abs,
        "mean_abs_diff": float(diff.mean()) if finite and diff.size else None,
        "tolerance": tolerance,
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
    """Export a statetrain checkpoint of any task (no training) and check the export.

    The check runs `data` (a split file of the checkpoint's task, read with the same checks
    as in training) through onnxruntime and PyTorch, or a fixed random probe of the model's
    input shape when no data is given. The report goes to `report_path` (when given) before
    the verdict, so a failed check leaves its figures behind; then OnnxCheckError is raised
    unless the check passed. A corrupt or foreign checkpoint raises CheckpointError, a bad
    split DatasetError, and nothing is written over the checkpoint or the data.
    """
    from .checkpoint import load_model
    from .inference import task_and_split
    from .io import refuse_overwrite, write_json
    from .tasks import task_class

    inputs = [checkpoint, *([data] if data is not None else [])]
    refuse_overwrite(out, inputs)
    if report_path is not None:
        refuse_overwrite(report_path, inputs)
    model, ckpt = load_model(checkpoint)
    if data is not None:
        task, split = task_and_split(ckpt, data)
    else:
        task, split = task_class(ckpt.get("task", "frequency")).from_checkpoint(ckpt), None
    graph = task.onnx_graph(model)
    metadata = {"source": Path(checkpoint).name, "task": task.name}
    t0 = time.perf_counter()
    write_onnx(graph, out, opset=opset, metadata=metadata)
    log.info(
        "exported %s -> %s in %.2fs (opset %d, %s task, %s)",
        checkpoint,
        out,
        time.perf_counter() - t0,
        opset,
        task.name,
        type(model).__name__,
    )
    sess = session(out)
    report: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "onnx_file": str(out),
        "task": task.name,
        "data": str(data) if data is not None else "random probe (no --data given)",
        **graph.description,
    }
    t0 = time.perf_counter()
    report.update(task.check_onnx(sess, model, split, tolerance))
    report["seconds"] = time.perf_counter() - t0
    report.update(file_facts(out, sess))
    if report_path is not None:
        write_json(report, report_path)
    summary = (
        f"onnxruntime vs PyTorch on {report.get('what', 'the check inputs')} of "
        f"{report['data']}: max abs diff {report['max_abs_diff']:.3g} "
        f"(tolerance {tolerance:g}), {report['seconds']:.2f}s"
    )
    if not report["passed"]:
        raise OnnxCheckError(
            f"ONNX check FAILED: {summary}. The exported graph does not reproduce the PyTorch "
            f"model; '{out}' must not be used."
        )
    log.info("ONNX check passed: %s", summary)
    return report
