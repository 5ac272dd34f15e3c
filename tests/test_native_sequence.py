"""The native engine on a sequence model of several inputs and outputs, against the torch
reference loop of tests/test_native.py (the same independent oracle, the same tolerance:
every parameter and both Adam moments within 1e-5·(1 + |torch|) after 1,000 steps)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from statetrain.tasks.frequency import native
from statetrain.tasks.sequence.model import SequenceLSTM

from .test_native import assert_close, assert_same_epoch, assert_same_training, reference_epoch

pytestmark = pytest.mark.skipif(bool(native.NUMBA_ERROR), reason=native.NUMBA_ERROR or "")


def series(rows_per_stream: int = 250, streams: int = 4, inputs: int = 6, outputs: int = 3):
    """Noisy multichannel streams; each target a lagged mix of the inputs (a real dependency
    for the model to learn, so the gradients are not noise)."""
    rng = np.random.default_rng(5)
    n = rows_per_stream * streams
    t = np.arange(n)
    x = np.column_stack(
        [np.sin(2 * np.pi * t / (9 + 4 * j) + j) for j in range(inputs)]
    ) + 0.2 * rng.standard_normal((n, inputs))
    mix = rng.standard_normal((inputs, outputs)) / np.sqrt(inputs)
    y = np.roll(x, 2, axis=0) @ mix
    starts = np.arange(streams) * rows_per_stream
    return x.astype(np.float32), y.astype(np.float32), starts


CASES = {
    # id: (tbptt_steps, state_reset, clip, layers, optimizer, kwargs)
    "reference-loop-3-outputs": (1, "stream", 1.0, 1, torch.optim.Adam, {"lr": 1e-3}),
    "tbptt5-2layers-adamw": (
        5,
        "stream",
        0.5,
        2,
        torch.optim.AdamW,
        {"lr": 1e-3, "weight_decay": 0.01},
    ),
    "epoch-noclip-l2": (1, "epoch", None, 1, torch.optim.Adam, {"lr": 5e-4, "weight_decay": 1e-3}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_native_matches_the_reference_loop_with_several_inputs_and_outputs(case):
    k, reset, clip, layers, opt_cls, kw = CASES[case]
    x, y, starts = series()
    torch.manual_seed(0)
    ref = SequenceLSTM(input_size=6, hidden_size=16, num_layers=layers, output_size=3)
    nat = copy.deepcopy(ref)
    o_ref, o_nat = opt_cls(ref.parameters(), **kw), opt_cls(nat.parameters(), **kw)
    ok, why = native.supports(nat, o_nat, tbptt_steps=k, state_reset=reset, clip_grad_norm=clip)
    assert ok, why
    r = reference_epoch(ref, o_ref, x, y, starts, k=k, reset=reset, clip=clip)
    res = native.train_epoch(
        nat, o_nat, x, y, starts, tbptt_steps=k, state_reset=reset, clip_grad_norm=clip
    )
    if k == 1:
        assert res.updates == len(x) == 1000
    assert_same_epoch(r, res)
    assert_same_training((ref, o_ref), (nat, o_nat))
    # frozen predictions (N, 3) agree with torch's whole-sequence forward
    frozen = native.evaluate(nat, x, starts, state_reset=reset)
    assert frozen.shape == (len(x), 3)
    with torch.no_grad():
        if reset == "epoch":
            expected = nat(torch.from_numpy(x)[None])[0][0].numpy()
        else:
            expected = np.concatenate(
                [
                    nat(torch.from_numpy(x[a:b])[None])[0][0].numpy()
                    for a, b in zip(starts, [*starts[1:], len(x)], strict=True)
                ]
            )
    assert_close(frozen, expected, "frozen outputs")


def test_a_target_of_the_wrong_width_is_refused():
    x, y, starts = series(rows_per_stream=10)
    model = SequenceLSTM(input_size=6, hidden_size=4, output_size=3)
    opt = torch.optim.Adam(model.parameters())
    with pytest.raises(ValueError, match=r"3 output\(s\), so y must be \(40, 3\)"):
        native.train_epoch(model, opt, x, y[:, :2], starts)


def cross_entropy_reference(model, opt, x, labels, weight, starts, k, clip):
    """The torch reference loop with the sequence task's per-step classification loss:
    per chunk of k rows (state zeroed at each stream start), class-weighted cross-entropy,
    backward, clip, Adam step, detach."""
    ends = [*list(starts[1:]), len(x)]
    chunks = [
        (a, min(a + k, int(e)), a == int(s))
        for s, e in zip(starts, ends, strict=True)
        for a in range(int(s), int(e), k)
    ]
    xt, yt = torch.from_numpy(x), torch.from_numpy(labels).long()
    params = list(model.parameters())
    state, losses = None, []
    for a, b, zero in chunks:
        if zero:
            state = None
        out, state = model(xt[a:b][None], state)
        loss = torch.nn.functional.cross_entropy(out[0], yt[a:b], weight=weight)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        state = (state[0].detach(), state[1].detach())
        losses.append(loss.item())
    return np.array(losses)


@pytest.mark.parametrize("k", [1, 5])
def test_native_cross_entropy_matches_the_reference_loop(k):
    """Per-step classification (4 classes, unequal class weights) natively: the same weights,
    Adam moments and per-chunk losses as torch after 1,000 rows."""
    x, y, starts = series()
    labels = np.digitize(y[:, 0], np.quantile(y[:, 0], [0.4, 0.7, 0.9])).astype(np.float32)
    weight = torch.tensor([0.6, 1.1, 1.7, 2.9])
    torch.manual_seed(1)
    ref = SequenceLSTM(input_size=6, hidden_size=16, output_size=4)
    nat = copy.deepcopy(ref)
    o_ref = torch.optim.Adam(ref.parameters(), lr=1e-3)
    o_nat = torch.optim.Adam(nat.parameters(), lr=1e-3)
    losses = cross_entropy_reference(ref, o_ref, x, labels, weight, starts, k, 1.0)
    res = native.train_epoch(
        nat,
        o_nat,
        x,
        labels,
        starts,
        tbptt_steps=k,
        state_reset="stream",
        clip_grad_norm=1.0,
        class_weights=weight.numpy(),
    )
    assert res.updates == len(losses) == (1000 if k == 1 else 200)
    # A loss of w·(-log p) magnifies the logits' float32 differences (1e-6 after 1,000
    # updates, the weights' own) by the class weight: the losses agree to 1e-4 relative.
    assert_close(res.chunk_losses, losses, "chunk losses", tol=1e-4)
    assert_same_training((ref, o_ref), (nat, o_nat))
