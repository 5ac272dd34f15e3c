"""ONNX export of a sequence model: one step with explicit state, in the user's units.

The deployed step takes the raw inputs (the file's own units) and returns the prediction in
the targets' units, or the class probabilities: the training split's normalisation and the
softmax are inside the graph, so a consumer needs nothing but the file. State in and out as
for the frequency task: (x (B,1,I), h0, c0) -> (y (B,1,K), h1, c1); zero the state at each
stream's start, as in training.

The check steps the test split (or a fixed random probe) through onnxruntime one row at a
time, state carried and zeroed at each stream start, against the same module run by
PyTorch over whole streams. Regression outputs are compared in units of each target's
training standard deviation (so the tolerance means the same for passengers and for growth
rates); probabilities as they are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ...export import OnnxGraph, compare_outputs
from ..frequency.export import OUTPUTS, step_graph

PROBE_STREAMS, PROBE_ROWS = 4, 100


class DeployedStep(nn.Module):
    """A SequenceLSTM with its normalisation (and softmax) folded in, float32 throughout."""

    def __init__(self, model: nn.Module, classification: bool) -> None:
        super().__init__()
        self.model = model
        self.classification = classification
        for name in ("in_mean", "in_std", "out_mean", "out_std"):
            self.register_buffer(f"{name}32", getattr(model, name).detach().float().clone())

    def forward(
        self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        seq, (h1, c1) = self.model.lstm((x - self.in_mean32) / self.in_std32, (h0, c0))
        out = self.model.fc(seq)
        if self.classification:
            return torch.softmax(out, dim=-1), h1, c1
        return out * self.out_std32 + self.out_mean32, h1, c1


def onnx_graph(model: nn.Module, classification: bool) -> OnnxGraph:
    """The traced step (dynamic batch) and its description."""
    layers, hidden = int(model.num_layers), int(model.hidden_size)
    inputs, outputs = int(model.input_size), int(model.output_size)
    what = "class probabilities" if classification else "predictions in the targets' units"
    return step_graph(
        DeployedStep(model, classification),
        inputs,
        layers,
        hidden,
        doc=(
            f"statetrain sequence task: one step of an LSTM ({layers} layer(s), hidden "
            f"{hidden}) with explicit state and the training normalisation inside. Inputs x "
            f"(B,1,{inputs}) raw, h0 and c0 ({layers},B,{hidden}); outputs y (B,1,{outputs}) "
            f"{what}, h1 and c1. Feed h1, c1 back; zero them at each stream start."
        ),
        description={
            "input_size": inputs,
            "output_size": outputs,
            "hidden_size": hidden,
            "num_layers": layers,
            "state_reset": "stream",
            "outputs_are": what,
        },
    )


def probe(model: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """Raw inputs around the training distribution, four streams: (x, stream starts)."""
    rng = np.random.default_rng(0)
    mean = model.in_mean.detach().cpu().numpy()
    std = model.in_std.detach().cpu().numpy()
    x = mean + std * rng.standard_normal((PROBE_STREAMS * PROBE_ROWS, len(mean)))
    return x.astype(np.float32), np.arange(PROBE_STREAMS) * PROBE_ROWS


def check(
    sess: Any, model: nn.Module, x: np.ndarray, starts: np.ndarray, classification: bool, tol: float
) -> dict[str, Any]:
    """onnxruntime one step at a time against PyTorch over whole streams."""
    step = DeployedStep(model, classification).eval()
    x = np.ascontiguousarray(x, dtype=np.float32)
    ends = np.append(starts[1:], len(x))
    with torch.no_grad():
        reference = np.concatenate(
            [
                step(torch.from_numpy(x[a:b])[None], *_zeros(model, 1))[0][0].numpy()
                for a, b in zip(starts, ends, strict=True)
            ]
        )
    resets = np.zeros(len(x), dtype=bool)
    resets[starts] = True
    h0, c0 = (t.numpy() for t in _zeros(model, 1))
    h, c = h0, c0
    out = np.empty_like(reference)
    for i in range(len(x)):
        if resets[i]:
            h, c = h0, c0
        y, h, c = sess.run(list(OUTPUTS), {"x": x[i].reshape(1, 1, -1), "h0": h, "c0": c})
        out[i] = y[0, 0]
    scale = 1.0 if classification else model.out_std.detach().cpu().numpy()
    verdict = compare_outputs([out / scale], [reference / scale], tol)
    return {
        **verdict,
        "rows": len(x),
        "streams": len(starts),
        "compared_in": "probabilities" if classification else "target standard deviations",
        "what": f"{len(x):,} rows, one step at a time, state zeroed at each stream start",
    }


def _zeros(model: nn.Module, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (int(model.num_layers), batch, int(model.hidden_size))
    return torch.zeros(shape), torch.zeros(shape)
