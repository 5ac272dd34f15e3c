"""Experts assembled into one LSTM(5, 64): exact per stream, and a deterministic fine-tune."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from statetrain.tasks.frequency.assemble import assemble_experts, fine_tune
from statetrain.tasks.frequency.data import generate_dataset
from statetrain.tasks.frequency.model import FrequencyLSTM
from statetrain.tasks.frequency.trainer import Split, predict

FREQS = [1, 3, 5, 7]
HEAD_BIASES = [0.2, -0.15, 0.1, 0.05]


def experts(sizes: list[int], seed: int = 0) -> dict[int, FrequencyLSTM]:
    """Untrained experts (exactness does not need training) with distinct head biases."""
    torch.manual_seed(seed)
    out = {}
    for k, size in enumerate(sizes):
        e = FrequencyLSTM(5, size, forget_bias=2.0)
        with torch.no_grad():
            e.fc.bias.fill_(HEAD_BIASES[k])
        out[k] = e.eval()
    return out


@pytest.fixture(scope="module")
def split() -> Split:
    """The four streams of the literal task (w = π), 300 rows each."""
    return Split.from_array(generate_dataset(duration_s=0.3, seed=3))


def own_outputs(models: dict[int, FrequencyLSTM], split: Split) -> np.ndarray:
    """Each stream scored by its own expert alone, from a zero state at the stream start."""
    ends = np.append(split.starts[1:], len(split))
    parts = []
    for a, b, col in zip(split.starts, ends, split.columns, strict=True):
        one = Split(split.x[a:b], split.y[a:b], np.array([0]), np.array([col]))
        parts.append(predict(models[int(col)], one, "stream"))
    return np.concatenate(parts)


def per_row_bias(split: Split, biases: list[float]) -> np.ndarray:
    ends = np.append(split.starts[1:], len(split))
    return np.concatenate(
        [
            np.full(b - a, biases[c])
            for a, b, c in zip(split.starts, ends, split.columns, strict=True)
        ]
    )


def test_four_16_unit_experts_make_the_seeds_model():
    model = assemble_experts(experts([16] * 4))
    assert isinstance(model, FrequencyLSTM)
    assert (model.input_size, model.hidden_size, model.num_layers) == (5, 64, 1)
    assert model.count_parameters() == 18_241  # the assignment's LSTM(5, 64) + Linear(64, 1)
    assert model.fc.bias.item() == pytest.approx(np.mean(HEAD_BIASES))


@pytest.mark.parametrize("reset", ["stream", "epoch"])
def test_mean_bias_assembly_is_each_expert_up_to_its_bias(split, reset):
    """No spare unit: each stream's output is its expert's, shifted by (mean bias − b_k);
    with the state carried through the whole file ('epoch') exactly as with a reset."""
    models = experts([16] * 4)
    model = assemble_experts(models)
    expected = own_outputs(models, split) + np.mean(HEAD_BIASES) - per_row_bias(split, HEAD_BIASES)
    got = predict(model, split, reset)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reset", ["stream", "epoch"])
def test_bias_unit_makes_the_assembly_exact(split, reset):
    """16 + 16 + 16 + 15 units and one bias unit: 64 units, every stream its expert's output."""
    models = experts([16, 16, 16, 15])
    model = assemble_experts(models, 64)
    assert model.count_parameters() == 18_241
    np.testing.assert_allclose(
        predict(model, split, reset), own_outputs(models, split), rtol=1e-5, atol=1e-6
    )


def test_open_forget_gates_leak_when_the_state_is_carried(split):
    """Why close_forget: with only the input gates closed, the previous stream's cell leaks."""
    models = experts([16] * 4)
    model = assemble_experts(models, close_forget=False)
    reset = predict(model, split, "stream")
    carried = predict(model, split, "epoch")
    assert np.abs(carried - reset).max() > 1e-3
    assert np.abs(carried[: split.starts[1]] - reset[: split.starts[1]]).max() < 1e-6


def test_experts_must_fit():
    with pytest.raises(ValueError, match="do not fit"):
        assemble_experts(experts([16] * 4), 63)
    with pytest.raises(ValueError, match="one-hot column"):
        assemble_experts({4: FrequencyLSTM(5, 4)})


SPEC = {
    "frequencies": FREQS,
    "fs": 1000,
    "duration_s": 0.15,
    "amplitude_range": [0.8, 1.2],
    "phase_jitter": np.pi,
}


def test_fine_tune_is_deterministic_and_keeps_the_best():
    start = assemble_experts(experts([4] * 4, seed=1))
    before = {k: v.clone() for k, v in start.state_dict().items()}
    val = Split.from_array(generate_dataset(duration_s=0.15, seed=3))
    runs = [
        fine_tune(start, SPEC, val, FREQS, iterations=6, check_every=2, lr=1e-3, seed=5)
        for _ in range(2)
    ]
    a, b = (r.model.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)  # same seed, same weights
    assert all(torch.equal(before[k], v) for k, v in start.state_dict().items())  # untouched
    r = runs[0]
    assert r.iterations == 6 and len(r.history) == 3
    assert r.best_val <= r.start_val
    assert r.best_val == pytest.approx(min([r.start_val] + [h["val_mse"] for h in r.history]))
    pred = predict(r.model, val, "stream")
    assert float(np.mean((pred - val.y) ** 2)) == pytest.approx(r.best_val, rel=1e-5)
    other = fine_tune(start, SPEC, val, FREQS, iterations=2, check_every=2, lr=1e-3, seed=6)
    assert other.history[0]["train_loss"] != r.history[0]["train_loss"]  # the seed matters
