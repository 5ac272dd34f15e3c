"""Small per-frequency experts, assembled into one LSTM(5, 64), then fine-tuned jointly.

Why (../shared/research/learnability.md, last section; docs/research/assemble.md): one
LSTM(5, 64) trained on all four streams at once does not learn 1 Hz, while a 16-unit expert
per frequency locks in minutes on one core. Four such experts fit *exactly* into one
LSTM(5, 64), the assignment's own model (18,241 parameters): expert k keeps its own rows of
each gate block (PyTorch's order i, f, g, o), its recurrent weights sit on the block diagonal,
and the one-hot inputs of the *other* frequencies close its input and forget gates (weight
``closing_weight`` = −30), so its cell is zero while another frequency is selected, whether
the state is reset per stream or carried through the whole file. A short joint fine-tune at a
small learning rate (3e-5; 3e-4 wrecked it) then polishes the one model (measured: test MSE
0.00233 assembled → 0.00027 after 900 iterations).

The result is a plain :class:`~statetrain.tasks.frequency.model.FrequencyLSTM`, so frozen
evaluation, the native kernel, the ONNX export and the plots take it unchanged. The fine-tune
is the window trainer itself (:mod:`statetrain.tasks.frequency.window`) with the window fixed
at the full stream and a flat learning rate: fresh noise every iteration, from a zero state at
every stream start.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .model import FrequencyLSTM
from .trainer import Split, StatefulTrainer, predict, set_seed
from .window import WindowCurriculum

log = logging.getLogger("statetrain")

GATES = 4  # PyTorch's LSTM gate blocks, in order: input, forget, cell (g), output
INPUT, FORGET, CELL, OUTPUT = range(GATES)
OPEN = 30.0  # a sigmoid pre-activation that is 1 to float32 precision (1 - 9e-14)


def _lstm_tensors(model: FrequencyLSTM) -> dict[str, torch.Tensor]:
    lstm = model.lstm
    return {
        "w_ih": lstm.weight_ih_l0.detach(),
        "w_hh": lstm.weight_hh_l0.detach(),
        "b_ih": lstm.bias_ih_l0.detach(),
        "b_hh": lstm.bias_hh_l0.detach(),
        "fc_w": model.fc.weight.detach(),
        "fc_b": model.fc.bias.detach(),
    }


def assemble_experts(
    experts: Mapping[int, FrequencyLSTM],
    hidden_size: int | None = None,
    *,
    closing_weight: float = -30.0,
    close_forget: bool = True,
    bias_unit: bool | None = None,
) -> FrequencyLSTM:
    """One FrequencyLSTM whose output on every stream is its expert's output.

    ``experts`` maps a one-hot column (0-based: input column ``1 + k``, the k-th frequency)
    to a one-layer FrequencyLSTM trained on that stream only; sizes may differ. The experts
    occupy the first ``sum(H_k)`` hidden units in key order. ``hidden_size`` defaults to that
    sum (plus one with a bias unit).

    The heads' biases cannot all live in one output bias. Two ways:

    * no spare unit (four 16-unit experts in 64 units): the output bias is the heads' mean,
      the one constant with the smallest squared error; each stream's output is then off by
      the constant ``mean - b_k`` (measured: assembled test MSE ≈ 0.003 instead of ≈ 0.0003),
      which the fine-tune removes;
    * a spare *bias unit* (``bias_unit``, default: whenever ``hidden_size`` leaves a unit
      free, e.g. experts of 16, 16, 16 and 15 units): input and output gates open, forget gate
      closed, no recurrent input, and a cell-gate weight per one-hot column, so its output is a
      different constant per selected frequency from the first step on. The assembly is then
      exact: each stream's output equals its expert's (measured: 0.00050, the experts' own
      mean). Units beyond that stay dead (zero weights, zero output, zero gradient). The
      exact start did not survive a fine-tune at 3e-5 (validation 0.00046 → 0.0026 in ten
      Adam steps), so it pays only where the model is used as assembled.

    ``close_forget`` closes the other experts' forget gates as well as their input gates: a
    cell left over from the previous stream is cleared at the switch, so carrying the state
    through the whole file scores the same as resetting it per stream.
    """
    if not experts:
        raise ValueError("assemble_experts needs at least one expert")
    keys = sorted(experts)
    first = experts[keys[0]]
    n_inputs = first.input_size
    n_freq = n_inputs - 1
    for k in keys:
        e = experts[k]
        if not 0 <= k < n_freq:
            raise ValueError(f"expert key {k} is not a one-hot column index 0..{n_freq - 1}")
        if e.num_layers != 1 or e.input_size != n_inputs:
            raise ValueError(
                f"expert {k}: assembly needs one-layer LSTMs with {n_inputs} inputs, got "
                f"{e.num_layers} layers and {e.input_size} inputs"
            )
    sizes = [experts[k].hidden_size for k in keys]
    used = sum(sizes)
    if hidden_size is None:
        hidden_size = used + (1 if bias_unit else 0)
    if bias_unit is None:
        bias_unit = hidden_size > used
    if used + int(bias_unit) > hidden_size:
        raise ValueError(
            f"experts of {sizes} units{' and a bias unit' if bias_unit else ''} do not fit in "
            f"{hidden_size} hidden units"
        )
    n = hidden_size
    model = FrequencyLSTM(input_size=n_inputs, hidden_size=n)
    w_ih = torch.zeros(GATES * n, n_inputs)
    w_hh = torch.zeros(GATES * n, n)
    b_ih = torch.zeros(GATES * n)
    b_hh = torch.zeros(GATES * n)
    fc_w = torch.zeros(1, n)
    head_biases = []
    offset = 0
    for k, size in zip(keys, sizes, strict=True):
        t = _lstm_tensors(experts[k])
        units = torch.arange(offset, offset + size)
        others = torch.tensor([1 + j for j in range(n_freq) if j != k], dtype=torch.long)
        for gate in range(GATES):
            dst = gate * n + units
            src = slice(gate * size, (gate + 1) * size)
            w_ih[dst] = t["w_ih"][src]
            # The other frequencies' columns were always 0 in the expert's training, so their
            # weights are untrained: zero them, and use them to close the expert instead.
            w_ih[dst[:, None], others[None, :]] = 0.0
            if gate == INPUT or (gate == FORGET and close_forget):
                w_ih[dst[:, None], others[None, :]] = closing_weight
            w_hh[dst[:, None], units[None, :]] = t["w_hh"][src]
            b_ih[dst] = t["b_ih"][src]
            b_hh[dst] = t["b_hh"][src]
        fc_w[0, units] = t["fc_w"][0]
        head_biases.append(float(t["fc_b"][0]))
        _check_closing(k, t, closing_weight, close_forget)
        offset += size
    mean_bias = float(np.mean(head_biases))
    fc_b = torch.tensor([mean_bias])
    if bias_unit:
        u = offset
        b_ih[INPUT * n + u] = OPEN
        b_ih[FORGET * n + u] = -OPEN
        b_ih[OUTPUT * n + u] = OPEN
        # h = σ(30)·tanh(σ(30)·tanh(a_k)) = tanh(tanh(a_k)) to float32 precision; the unit's
        # head weight `scale` keeps |tanh(tanh(a_k))| ≤ 0.5, far from saturation.
        deltas = np.array(head_biases) - mean_bias
        scale = max(float(np.abs(deltas).max()) / 0.5, 1e-3)
        for k, delta in zip(keys, deltas, strict=True):
            w_ih[CELL * n + u, 1 + k] = math.atanh(math.atanh(delta / scale))
        fc_w[0, u] = scale
    lstm = model.lstm
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(w_ih)
        lstm.weight_hh_l0.copy_(w_hh)
        lstm.bias_ih_l0.copy_(b_ih)
        lstm.bias_hh_l0.copy_(b_hh)
        model.fc.weight.copy_(fc_w)
        model.fc.bias.copy_(fc_b)
    log.info(
        "assembled %d experts (%s units%s) into LSTM(%d, %d): %d parameters; head biases %s, "
        "output bias %.4f",
        len(keys),
        "+".join(map(str, sizes)),
        " + a bias unit" if bias_unit else "",
        n_inputs,
        n,
        model.count_parameters(),
        ", ".join(f"{b:.4f}" for b in head_biases),
        mean_bias,
    )
    return model


def _check_closing(
    k: int, t: Mapping[str, torch.Tensor], closing_weight: float, close_forget: bool
) -> None:
    """Warn when a closed gate might not be closed: its own pre-activation could outweigh −30.

    A bound from the expert's biases and its weights on S (|S| ≤ 1.2 for the default
    amplitudes; h and the own one-hot are 0 or bounded by 1 while the expert is closed).
    """
    size = t["w_hh"].shape[1]
    for gate in (INPUT, FORGET) if close_forget else (INPUT,):
        rows = slice(gate * size, (gate + 1) * size)
        bound = (
            t["b_ih"][rows]
            + t["b_hh"][rows]
            + 1.5 * t["w_ih"][rows, 0].abs()
            + t["w_hh"][rows].abs().sum(1)
        ).max()
        if float(bound) + closing_weight > -10:
            log.warning(
                "expert %d: a closed gate's pre-activation may reach %.1f (closing weight "
                "%g): its output may leak into other streams; use a more negative weight",
                k,
                float(bound) + closing_weight,
                closing_weight,
            )


def stream_outputs(model: nn.Module, split: Split, state_reset: str = "stream") -> np.ndarray:
    """Frozen predictions, as the workflow scores them (a thin name for trainer.predict)."""
    return predict(model, split, state_reset)


@dataclass
class FineTuneResult:
    """The kept (best frozen validation) model and what led to it."""

    model: FrequencyLSTM
    best_val: float
    start_val: float
    best_iteration: int  # 0 = the starting model was never beaten
    iterations: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


def fine_tune(
    model: FrequencyLSTM,
    spec: Mapping[str, Any],
    validation: Split,
    frequencies: list[float],
    *,
    iterations: int = 1000,
    check_every: int = 10,
    lr: float = 3e-5,
    clip_grad_norm: float = 1.0,
    draws: int = 2,
    seed: int = 0,
    max_seconds: float | None = None,
) -> FineTuneResult:
    """Train all parameters jointly on fresh full-length streams; keep the best validation.

    Each iteration draws ``draws`` fresh noise realisations of every stream of ``spec`` (the
    generator's parameters; all streams), runs the full streams from a zero state and takes
    one Adam step at the flat ``lr`` with gradient clipping: the window trainer with its window
    fixed at the full stream. Every ``check_every`` iterations the frozen model is scored on
    ``validation`` (state reset per stream); the best snapshot is kept, and the starting model
    counts as a candidate, so the kept validation MSE never exceeds the starting one.

    Deterministic for a given ``seed`` on one machine and thread count (``max_seconds``, a
    wall-clock cap, is the one thing that is not). ``model`` is not modified; the result holds
    a copy.
    """
    set_seed(seed)
    model = copy.deepcopy(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    full = round(spec["duration_s"] * spec["fs"])
    curriculum = WindowCurriculum(
        first=full,
        draws=draws,
        iterations=check_every,
        lr_floor=0.0,  # lr = max(lr · sqrt(full / full), 0) = lr: flat
        seed=seed,
        spec=spec,
    )
    # The trainer's training split only names the streams; the batches come from `spec`.
    trainer = StatefulTrainer(
        model,
        validation,
        nn.MSELoss(),
        optimizer,
        clip_grad_norm=clip_grad_norm,
        val_loader=validation,
        state_reset="stream",
        frequencies=frequencies,
        progress=False,
        window=curriculum,
    )
    start_val = trainer.validation_row()["val_mse"]
    best_val, best_state, best_epoch = start_val, copy.deepcopy(model.state_dict()), 0
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    epochs = math.ceil(iterations / check_every)
    for _ in range(epochs):
        row = trainer.run_epoch()
        row["iteration"] = row["epoch"] * check_every
        row["seconds"] = time.perf_counter() - t0
        history.append({k: v for k, v in row.items() if isinstance(v, int | float | bool)})
        if row["val_mse"] < best_val:
            best_val, best_epoch = float(row["val_mse"]), row["epoch"]
            best_state = copy.deepcopy(model.state_dict())
        log.info(
            "fine-tune iteration %d: train %.6f val %.6f (best %.6f at %d) %.0fs",
            row["iteration"],
            row["train_loss"],
            row["val_mse"],
            best_val,
            best_epoch * check_every,
            row["seconds"],
        )
        if max_seconds is not None and row["seconds"] >= max_seconds:
            break
    model.load_state_dict(best_state)
    model.eval()
    return FineTuneResult(
        model=model,
        best_val=best_val,
        start_val=start_val,
        best_iteration=best_epoch * check_every,
        iterations=len(history) * check_every,
        seconds=time.perf_counter() - t0,
        history=history,
    )


def assemble_from_files(
    name: str,
    grid_point: str,
    members: list[str],
    member_streams: list[float],
    frequencies: list[float],
    model_paths: list[str],
    metrics_paths: list[str],
    split_paths: dict[str, str],
    out_model: str,
    out_metrics: str,
    out_members: str,
    *,
    hidden_size: int = 64,
    closing_weight: float = -30.0,
    close_forget: bool = True,
    bias_unit: bool | None = False,
) -> dict[str, Any]:
    """The workflow's `assemble_experts` rule: one grid point's experts → one FrequencyLSTM.

    The members are the experts' runs at ``grid_point`` (each kept its best epoch on its own
    frozen validation split); where several members train one frequency, the lowest
    validation MSE on their own split serves (as in `combine_experts`). The assembly is
    written as an ordinary FrequencyLSTM checkpoint (``model_args`` input/hidden/layers, state
    reset per stream), so frozen evaluation, plots, ONNX export and a fine-tune's
    ``training.init_from`` take it as any trained model; it is scored frozen on the full
    validation and test splits. Nothing here trains or looks at the test split to choose.
    """
    from ...checkpoint import load_model, save_checkpoint_file
    from ...io import read_json
    from .experts import choose_members, score_splits, write_member_records

    loaded = [load_model(p) for p in model_paths]
    member_metrics = [read_json(p) for p in metrics_paths]
    order = choose_members(members, member_streams, frequencies, member_metrics)
    experts = {}
    for k, i in enumerate(order):
        model = loaded[i][0]
        if not isinstance(model, FrequencyLSTM):
            raise ValueError(
                f"assemble '{name}': member '{members[i]}' ({model_paths[i]}) is not one "
                f"FrequencyLSTM but a {type(model).__name__}; assemble the per-frequency "
                "datasets themselves, not an `experts` combination."
            )
        experts[k] = model
    t0 = time.perf_counter()
    model = assemble_experts(
        experts,
        hidden_size,
        closing_weight=closing_weight,
        close_forget=close_forget,
        bias_unit=bias_unit,
    )
    seconds = time.perf_counter() - t0
    scores = score_splits(model, split_paths, frequencies)
    chosen = [members[i] for i in order]
    options = {
        "hidden_size": hidden_size,
        "closing_weight": closing_weight,
        "close_forget": close_forget,
        "bias_unit": bias_unit,
    }
    save_checkpoint_file(
        {
            "epoch": None,
            "model_state_dict": model.state_dict(),
            "model_args": {
                "input_size": model.input_size,
                "hidden_size": model.hidden_size,
                "num_layers": model.num_layers,
            },
            "frequencies": list(frequencies),
            "state_reset": "stream",
            "members": chosen,
            "assembly": options,
        },
        out_model,
    )
    metrics = write_member_records(
        name,
        grid_point,
        members,
        order,
        member_metrics,
        scores,
        out_metrics,
        out_members,
        extra={"assembly": options, "parameters": model.count_parameters()},
        criterion="; then assembled, no choice",
        seconds=seconds,  # the assembly itself takes milliseconds
    )
    log.info(
        "%s: %d experts assembled into LSTM(%d, %d), validation MSE %.6f, test MSE %.6f (%s)",
        name,
        len(order),
        model.input_size,
        model.hidden_size,
        scores["validation"]["overall"]["mse"],
        scores["test"]["overall"]["mse"],
        ", ".join(f"{k} {v['mse']:.5f}" for k, v in scores["test"].items() if k != "overall"),
    )
    return metrics


__all__ = [
    "FineTuneResult",
    "assemble_experts",
    "assemble_from_files",
    "fine_tune",
    "stream_outputs",
]
