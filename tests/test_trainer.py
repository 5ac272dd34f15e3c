"""The reference loop's semantics, frozen evaluation, checkpoints and faults (seed tests 3-6)."""

import copy
import os
import pickle

import numpy as np
import psutil
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from statetrain import (
    CheckpointError,
    FrequencyDataset,
    FrequencyLSTM,
    StatefulTrainer,
    load_checkpoint_file,
    save_checkpoint_file,
)
from statetrain.tasks.frequency.data import save_array
from statetrain.tasks.frequency.trainer import Split, chunk_bounds, predict

from .conftest import small


def make_trainer(split, seed=0, hidden=8, engine="torch", **kw):
    torch.manual_seed(seed)
    model = FrequencyLSTM(hidden_size=hidden)
    opt = torch.optim.Adam(model.parameters(), lr=kw.pop("lr", 1e-2))
    return StatefulTrainer(model, split, nn.MSELoss(), opt, engine=engine, progress=False, **kw)


def hand_unrolled(model, x, y, steps, lr, clip, k=1, reset_at=()):
    """The reference loop with the LSTM cell written out by hand (gate order i, f, g, o)."""
    model = copy.deepcopy(model)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    lstm, fc = model.lstm, model.fc
    H = model.hidden_size
    h = torch.zeros(1, H)
    c = torch.zeros(1, H)
    t = 0
    while t < steps:
        end = min(t + k, steps)
        end = min([end, *[r for r in reset_at if r > t]])
        if t in reset_at:
            h, c = torch.zeros(1, H), torch.zeros(1, H)
        outs = []
        for s in range(t, end):
            gates = (
                torch.from_numpy(x[s : s + 1]) @ lstm.weight_ih_l0.T
                + lstm.bias_ih_l0
                + h @ lstm.weight_hh_l0.T
                + lstm.bias_hh_l0
            )
            i, f, g, o = gates.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(fc(h)[0, 0])
        loss = torch.mean((torch.stack(outs) - torch.from_numpy(y[t:end])) ** 2)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        h, c = h.detach(), c.detach()
        t = end
    return model


@pytest.mark.parametrize(("k", "state_reset"), [(1, "epoch"), (3, "epoch"), (4, "stream")])
def test_reference_loop_equals_a_hand_unrolled_loop(k, state_reset):
    data = small(1, duration_s=0.006)  # 4 streams × 6 rows = 24 steps
    split = Split.from_array(data)
    trainer = make_trainer(split, tbptt_steps=k, state_reset=state_reset, clip_grad_norm=0.5)
    start = copy.deepcopy(trainer.model)
    trainer.train_epoch(1)
    resets = tuple(int(s) for s in split.starts) if state_reset == "stream" else (0,)
    expected = hand_unrolled(start, split.x, split.y, len(split), 1e-2, 0.5, k, resets)
    for (name, p), q in zip(trainer.model.named_parameters(), expected.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5, msg=name)


def test_chunks_never_cross_a_stream_start_when_resetting_per_stream():
    starts = np.array([0, 5, 10])
    chunks = chunk_bounds(15, starts, 3, "stream")
    assert chunks[:3] == [(0, 3, True), (3, 5, False), (5, 8, True)]
    assert [c[:2] for c in chunk_bounds(7, starts[:1], 3, "epoch")] == [(0, 3), (3, 6), (6, 7)]


def test_state_detachment():
    """Seed test 3."""
    h = torch.randn(1, 1, 64, requires_grad=True)
    c = torch.randn(1, 1, 64, requires_grad=True)
    detached = tuple(s.detach() for s in (h, c))
    assert h.requires_grad and c.requires_grad
    assert not any(s.requires_grad for s in detached)
    torch.testing.assert_close(h, detached[0])


def test_single_epoch_training(tmp_path):
    """Seed test 4, through the assignment's DataLoader API (a Subset of the dataset)."""
    path = tmp_path / "train.npy"
    save_array(small(1, duration_s=1.0), path)
    loader = DataLoader(Subset(FrequencyDataset(path), range(1000)), batch_size=1, shuffle=False)
    model = FrequencyLSTM()
    trainer = StatefulTrainer(
        model, loader, nn.MSELoss(), torch.optim.Adam(model.parameters(), lr=1e-3), progress=False
    )
    loss = trainer.train_epoch(epoch=1)
    assert 0 < loss < 10 and np.isfinite(loss)
    assert trainer.last_stats.updates == 1000


def test_shuffled_loader_is_refused(tmp_path):
    path = tmp_path / "train.npy"
    save_array(small(1), path)
    with pytest.raises(ValueError, match="shuffle=False"):
        Split.from_loader(DataLoader(FrequencyDataset(path), batch_size=1, shuffle=True))


def test_loss_decreases():
    """Seed test 5: the first rows of the training file (1,000 rather than 5,000, for speed).

    Those rows are the start of the slow 1 Hz stream, which per-step updates can track: this
    says the loop optimises, not that the frozen model learned anything (see test_workflow).
    """
    split = Split.from_array(small(1, duration_s=10.0)[:1000])
    trainer = make_trainer(split, hidden=32, lr=1e-3)
    history = trainer.train(num_epochs=5, save_dir=None)
    assert history["train_loss"][-1] < history["train_loss"][0]


def test_memory_stability():
    """Seed test 6: no state accumulates across steps (the state is detached)."""
    split = Split.from_array(small(1, duration_s=1.0))
    trainer = make_trainer(split, hidden=64)
    process = psutil.Process(os.getpid())
    trainer.train_epoch(1)
    before = process.memory_info().rss / 2**20
    trainer.train_epoch(2)
    assert process.memory_info().rss / 2**20 - before < 50


def test_frozen_evaluation_leaves_weights_untouched_and_carries_state():
    split = Split.from_array(small(2))
    trainer = make_trainer(split)
    before = copy.deepcopy(trainer.model.state_dict())
    pred = predict(trainer.model, split, "epoch")
    for key, value in trainer.model.state_dict().items():
        torch.testing.assert_close(value, before[key], atol=0, rtol=0)
    # Same numbers as stepping one row at a time with the state carried.
    state, steps = None, []
    with torch.no_grad():
        for row in split.x[:50]:
            out, state = trainer.model(torch.from_numpy(row)[None, None], state)
            steps.append(float(out))
    np.testing.assert_allclose(pred[:50], steps, atol=1e-6)
    stream = predict(trainer.model, split, "stream")
    np.testing.assert_allclose(stream[:250], pred[:250], atol=1e-6)  # first stream identical
    assert not np.allclose(stream[250:260], pred[250:260])  # second starts from zero state


def test_validation_drives_the_best_checkpoint(tmp_path):
    train, val = Split.from_array(small(1)), Split.from_array(small(3))
    trainer = make_trainer(train, val_loader=val)
    history = trainer.train(3, save_dir=tmp_path)
    assert trainer.monitor == "val_mse"
    assert trainer.best_epoch == int(np.argmin(history["val_mse"])) + 1
    ckpt = load_checkpoint_file(tmp_path / "best_model.pth")
    assert ckpt["epoch"] == trainer.best_epoch
    for key in ("val_mse_1hz", "lr", "grad_norm_mean", "clipped_fraction", "h_norm", "rss_mb"):
        assert len(history[key]) == 3


def test_checkpoint_round_trip_resumes_exactly(tmp_path):
    train, val = Split.from_array(small(1)), Split.from_array(small(3))
    straight = make_trainer(train, val_loader=val)
    straight.train(4, save_dir=None)
    first = make_trainer(train, val_loader=val)
    first.train(2, save_dir=tmp_path, save_best=False, save_last=True)
    resumed = make_trainer(train, val_loader=val, seed=123)  # other init: all must come from file
    resumed.load_checkpoint(tmp_path / "last.pth")
    assert resumed.epoch == 2 and resumed.history["train_loss"] == first.history["train_loss"]
    resumed.train(4, save_dir=None)
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, atol=0, rtol=0)
    assert resumed.history["val_mse"] == straight.history["val_mse"]
    assert resumed.best_epoch == straight.best_epoch


def test_checkpoints_refuse_nan_and_code(tmp_path):
    model = FrequencyLSTM(hidden_size=4)
    state = model.state_dict()
    state["fc.bias"][0] = float("nan")
    with pytest.raises(CheckpointError, match=r"fc\.bias"):
        save_checkpoint_file({"model_state_dict": state}, tmp_path / "nan.pth")
    assert not (tmp_path / "nan.pth").exists()

    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"model_state_dict": Evil()}))
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        load_checkpoint_file(tmp_path / "evil.pth")
    assert not marker.exists()
    (tmp_path / "cut.pth").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        load_checkpoint_file(tmp_path / "cut.pth")


def test_a_non_finite_step_is_skipped_and_counted():
    data = small(1)
    data[100, 0] = np.inf  # bypasses validation: the trainer must survive it
    trainer = make_trainer(Split.from_array(data))
    trainer.train_epoch(1)
    assert trainer.last_stats.bad_steps == 1
    assert trainer.last_stats.updates == len(data) - 1
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_engines_agree_through_the_trainer_and_auto_picks_native(caplog):
    train, val = Split.from_array(small(1)), Split.from_array(small(3))
    native = make_trainer(train, val_loader=val, engine="auto", lr=1e-3)
    assert native.engine == "native" and native.engine_reason == "auto: options supported"
    reference = make_trainer(train, val_loader=val, engine="torch", lr=1e-3)
    native.train(2, save_dir=None)
    reference.train(2, save_dir=None)
    for key, value in reference.model.state_dict().items():
        torch.testing.assert_close(native.model.state_dict()[key], value, atol=1e-5, rtol=1e-5)
    for key in ("train_loss", "val_mse", "grad_norm_mean", "clipped_fraction", "h_norm"):
        np.testing.assert_allclose(native.history[key], reference.history[key], rtol=1e-4)


def test_unsupported_options_fall_back_to_torch_loudly(caplog):
    split = Split.from_array(small(1, duration_s=0.05))
    torch.manual_seed(0)
    model = FrequencyLSTM(hidden_size=4)
    sgd = torch.optim.SGD(model.parameters(), lr=1e-2)
    with caplog.at_level("WARNING", logger="statetrain"):
        trainer = StatefulTrainer(model, split, nn.MSELoss(), sgd, engine="native", progress=False)
    assert trainer.engine == "torch" and "SGD" in trainer.engine_reason
    assert "falling back to the torch engine" in caplog.text
    l1 = StatefulTrainer(model, split, nn.L1Loss(), sgd, engine="auto", progress=False)
    assert l1.engine == "torch" and "MSELoss" in l1.engine_reason


def test_memory_stays_flat_over_200_native_epochs():
    """RSS after 200 epochs (train + frozen validation each) within 50 MB of after epoch 1."""
    train, val = Split.from_array(small(1)), Split.from_array(small(3))
    trainer = make_trainer(train, val_loader=val, engine="native", hidden=64, lr=1e-3)
    trainer.train(1, save_dir=None)
    after_first = trainer.history["rss_mb"][-1]
    trainer.train(200, save_dir=None)
    assert len(trainer.history["rss_mb"]) == 200
    assert trainer.history["rss_mb"][-1] - after_first < 50


def test_a_checkpoint_of_another_shape_is_refused_clearly(tmp_path):
    split = Split.from_array(small(1, duration_s=0.05))
    make_trainer(split, hidden=8).save_checkpoint(tmp_path, "h8.pth")
    other = make_trainer(split, hidden=16)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        other.load_checkpoint(tmp_path / "h8.pth")


@pytest.mark.parametrize("engine", ["torch", "native"])
def test_too_many_consecutive_bad_steps_stop_with_a_clear_error(engine):
    from statetrain import TrainingError

    data = small(1)
    data[100:110, 0] = np.nan  # ten poisoned rows in a row
    trainer = make_trainer(Split.from_array(data), engine=engine, max_bad_steps=5)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(TrainingError, match="5 consecutive steps had a non-finite loss"):
        trainer.train_epoch(1)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
