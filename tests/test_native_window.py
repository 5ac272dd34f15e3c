"""The native window kernel: the same optimizer steps as PyTorch's sequence LSTM path, the
torch objects left as torch would leave them, deterministic; the polishing phase and the
early-stopping level that the window recipe uses."""

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from statetrain import runner
from statetrain.callbacks import EarlyStopping
from statetrain.checkpoint import CheckpointError, load_checkpoint_file
from statetrain.config import (
    ConfigError,
    dataset_spec,
    grid_points,
    training_config,
    validate_config,
)
from statetrain.tasks.frequency.data import generate_split, save_array
from statetrain.tasks.frequency.model import FrequencyLSTM
from statetrain.tasks.frequency.native_window import WindowSession, supports_window
from statetrain.tasks.frequency.window import WindowCurriculum


def _batch(seed: int, n_b: int = 3, n_t: int = 400, n_in: int = 5, n_out: int = 1):
    """Random inputs and a sine target per sequence (phase per sequence, per output)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_b, n_t, n_in)).astype(np.float32)
    t = np.arange(n_t, dtype=np.float32)[None, :, None]
    y = np.sin(2 * np.pi * t / 97 + rng.uniform(0, 6, (n_b, 1, n_out))).astype(np.float32)
    return x, np.ascontiguousarray(y[..., 0] if n_out == 1 else y)


def _torch_steps(model, opt, batches, lrs, clip):
    crit = nn.MSELoss()
    for (x, y), lr in zip(batches, lrs, strict=True):
        for g in opt.param_groups:
            g["lr"] = lr
        out, _ = model(torch.from_numpy(x), None)
        loss = crit(out, torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(list(model.parameters()), clip if clip else math.inf)
        opt.step()


@pytest.mark.parametrize(
    ("hidden", "optimizer", "clip", "n_out"),
    [(16, "adam", 1.0, 1), (5, "adamw", 0.05, 1), (8, "adam", None, 3)],
)
def test_window_steps_match_pytorch(hidden, optimizer, clip, n_out):
    torch.manual_seed(hidden)
    a = FrequencyLSTM(5, hidden, forget_bias=2.0)
    if n_out > 1:
        a.fc = nn.Linear(hidden, n_out)
    b = copy.deepcopy(a)
    make = {
        "adam": lambda p: torch.optim.Adam(p, lr=3e-3),
        "adamw": lambda p: torch.optim.AdamW(p, lr=3e-3, weight_decay=0.05),
    }[optimizer]
    opt_a, opt_b = make(a.parameters()), make(b.parameters())
    batches = [_batch(i, n_out=n_out) for i in range(6)]
    lrs = [3e-3, 3e-3, 2e-3, 2e-3, 1e-3, 1e-3]  # the curriculum changes the lr between steps
    _torch_steps(a, opt_a, batches, lrs, clip)
    session = WindowSession(b, opt_b, clip)
    for (x, y), lr in zip(batches, lrs, strict=True):
        loss, norm, applied = session.step(x, y, lr)
        assert applied and math.isfinite(loss) and norm > 0
    session.close()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        scale = float(pa.abs().max())
        assert float((pa - pb).abs().max()) <= 1e-5 * scale, name
        sa, sb = opt_a.state[pa], opt_b.state[pb]
        assert float(sb["step"]) == float(sa["step"]) == 6
        for key in ("exp_avg", "exp_avg_sq"):
            tol = 1e-4 * float(sa[key].abs().max()) + 1e-12
            assert float((sa[key] - sb[key]).abs().max()) <= tol, (name, key)


def test_native_window_steps_are_deterministic():
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = FrequencyLSTM(5, 16, forget_bias=2.0)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        session = WindowSession(model, opt, 1.0)
        losses = [session.step(*_batch(i, n_b=8), 3e-3)[0] for i in range(4)]
        session.close()
        runs.append((losses, [p.detach().clone() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]
    for pa, pb in zip(runs[0][1], runs[1][1], strict=True):
        assert torch.equal(pa, pb)


def test_a_non_finite_batch_is_skipped_and_changes_nothing():
    torch.manual_seed(0)
    model = FrequencyLSTM(5, 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = _batch(0)
    x[1, 17, 2] = np.nan
    session = WindowSession(model, opt, 1.0)
    loss, _, applied = session.step(x, y, 1e-3)
    session.close()
    assert not applied and not math.isfinite(loss)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert not opt.state  # no step taken, so torch would have created no state either


def test_what_the_kernel_cannot_run_is_said_in_a_sentence():
    two = FrequencyLSTM(5, 4, num_layers=2)
    ok, why = supports_window(two, torch.optim.Adam(two.parameters()), nn.MSELoss(), 1.0)
    assert not ok and "one LSTM layer" in why
    one = FrequencyLSTM(5, 4)
    ok, why = supports_window(one, torch.optim.Adam(one.parameters()), nn.L1Loss(), 1.0)
    assert not ok and "MSELoss" in why
    ok, why = supports_window(one, torch.optim.SGD(one.parameters(), lr=0.1), nn.MSELoss(), 1.0)
    assert not ok and "Adam" in why


# ------------------------------------------------------------------ the recipe's options


@pytest.fixture(scope="module")
def one_stream(tmp_path_factory):
    cfg = validate_config({"data": {"duration_s": 0.3, "frequencies": [7, 5]}})
    spec = {**dataset_spec(cfg, "spec"), "streams": [7]}
    root = tmp_path_factory.mktemp("one")
    paths = {}
    for split in ("train", "validation", "test"):
        paths[split] = root / f"{split}.npy"
        save_array(generate_split(spec, split), paths[split])
    return cfg, spec, paths


def _polish_training(window, epochs, **training):
    """A tiny window-training run's training section (4 hidden units, 7 Hz of 7 and 5)."""
    cfg = validate_config(
        {
            "data": {"duration_s": 0.3, "frequencies": [7, 5]},
            "training": {
                "mode": "window",
                "state_reset": "stream",
                "hidden_size": 4,
                "lr": 3e-3,
                "epochs": epochs,
                "window": {"first": 100, "iterations": 3, **window},
                **training,
            },
        }
    )
    return training_config(cfg, grid_points(cfg)[0], "spec")


def test_polishing_begins_once_frozen_validation_reaches_its_level(one_stream, tmp_path):
    """A level every validation meets: epoch 1 trains on the cooling lr, every later epoch on
    the flat polish lr with its own number of draws; a resumed run keeps polishing."""
    _, spec, paths = one_stream
    window = {"draws": 3, "polish_lr": 1e-5, "polish_at": 10.0, "polish_draws": 1}
    training = _polish_training(window, epochs=3)
    metrics = runner.run("frequency", spec, training, paths, tmp_path / "p")
    ckpt = load_checkpoint_file(tmp_path / "p" / "last.pth")
    assert ckpt["history"]["lr"][0] == pytest.approx(3e-3, rel=1e-6)  # first window: base lr
    assert ckpt["history"]["lr"][1:] == pytest.approx([1e-5, 1e-5], rel=1e-9)
    assert ckpt["window_state"]["polishing"] is True
    assert metrics["engine"] == "native"
    # resumed for two more epochs: still polishing, as an uninterrupted run would be
    runner.run("frequency", spec, {**training, "epochs": 5}, paths, tmp_path / "p")
    history = load_checkpoint_file(tmp_path / "p" / "last.pth")["history"]
    assert history["lr"][3:] == pytest.approx([1e-5, 1e-5], rel=1e-9)
    # a level no validation reaches: no polishing
    never = {**training, "window": {**training["window"], "polish_at": 0.0}}
    runner.run("frequency", spec, never, paths, tmp_path / "n")
    history = load_checkpoint_file(tmp_path / "n" / "last.pth")["history"]
    assert min(history["lr"]) > 1e-4


def _ema_training(engine, epochs=4):
    window = {"draws": 2, "polish_lr": 1e-4, "polish_at": 10.0, "polish_ema": 0.5}
    return _polish_training(window, epochs, engine=engine)


def test_polishing_validates_and_saves_the_average_of_the_weights(one_stream, tmp_path):
    """polish_ema: the model validated and saved is the moving average; the trained weights
    travel in the checkpoint and training continues from them, so a resumed run is the
    uninterrupted one bit for bit, and both engines average alike."""
    _, spec, paths = one_stream
    runs = {}
    for engine in ("native", "torch"):
        runner.run("frequency", spec, _ema_training(engine), paths, tmp_path / engine)
        runs[engine] = load_checkpoint_file(tmp_path / engine / "last.pth")
    native = runs["native"]
    state = native["window_state"]
    names = [n for n, _ in FrequencyLSTM(input_size=3, hidden_size=4).named_parameters()]
    for name, average, raw in zip(names, state["average"], state["raw"], strict=True):
        assert torch.equal(native["model_state_dict"][name], average), name
        assert not torch.equal(average, raw), name  # the last iterate is kept apart
    for name, value in native["model_state_dict"].items():
        other = runs["torch"]["model_state_dict"][name]
        assert float((other - value).abs().max()) <= 1e-4 * float(value.abs().max()), name
    # two epochs, then resumed for two more: the same as four straight
    runner.run("frequency", spec, _ema_training("native", 2), paths, tmp_path / "r")
    runner.run("frequency", spec, _ema_training("native"), paths, tmp_path / "r")
    resumed = load_checkpoint_file(tmp_path / "r" / "last.pth")
    for key, value in native["model_state_dict"].items():
        assert torch.equal(resumed["model_state_dict"][key], value), key
    for a, b in zip(state["raw"], resumed["window_state"]["raw"], strict=True):
        assert torch.equal(a, b)
    # a checkpoint whose average does not fit the model is refused, and not half-loaded
    hostile = {**native, "window_state": {**state, "average": state["average"][:-1]}}
    torch.save(hostile, tmp_path / "hostile.pth")
    curriculum = WindowCurriculum(polish_ema=0.5)
    model = FrequencyLSTM(input_size=3, hidden_size=4)
    with pytest.raises(ValueError, match=r"window_state\.average"):
        curriculum.load_state_dict(hostile["window_state"], params=list(model.parameters()))
    assert curriculum.window == 0 and curriculum.average is None
    # ... and so is one whose saved iterates hold NaN (they would be trained on)
    raw = [t.clone() for t in state["raw"]]
    raw[0][0] = float("nan")
    torch.save({**native, "window_state": {**state, "raw": raw}}, tmp_path / "nan.pth")
    with pytest.raises(CheckpointError, match=r"window_state\.raw\.0"):
        load_checkpoint_file(tmp_path / "nan.pth")


class _History:
    def __init__(self, values):
        self.history = {"val_mse": values}


def test_polishing_waits_for_a_streak_of_validations_and_a_long_enough_window():
    """One lucky validation at a short window does not start polishing when polish_streak
    and polish_window ask for more; a NaN validation breaks the streak."""
    curriculum = WindowCurriculum(polish_lr=3e-5, polish_at=0.005, polish_streak=3, window=400)
    for values in ([0.5, 0.001], [0.001, 0.02, 0.001, 0.001], [0.001, float("nan"), 0.001, 0.001]):
        curriculum._maybe_polish(_History(values), epoch=len(values) + 1, max_len=10_000)
        assert curriculum.polishing is False, values
    curriculum._maybe_polish(_History([0.5, 0.004, 0.003, 0.001]), epoch=5, max_len=10_000)
    assert curriculum.polishing is True
    assert curriculum.learning_rate(first=400) == 3e-5
    single = WindowCurriculum(polish_lr=3e-5, polish_at=0.005, window=400)  # streak 1: default
    single._maybe_polish(_History([0.5, 0.001]), epoch=3, max_len=10_000)
    assert single.polishing is True
    short = WindowCurriculum(polish_lr=3e-5, polish_at=0.005, polish_window=3000, window=2999)
    short._maybe_polish(_History([0.001]), epoch=2, max_len=10_000)
    assert short.polishing is False  # the window is still too short
    short._maybe_polish(_History([0.001]), epoch=2, max_len=2999)
    assert short.polishing is True  # ... but it is the whole stream


def test_early_stopping_counts_its_patience_only_below_the_level():
    plateau = [0.5, 0.49, 0.5, 0.5, 0.5, 0.5]  # no improvement for 4 epochs, never below 0.01
    stop = EarlyStopping(patience=3, level=0.01)
    assert stop.epochs_without_improvement(_History(plateau)) == 0
    locked = [0.5, 0.005, 0.006, 0.007, 0.008]
    assert stop.epochs_without_improvement(_History(locked)) == 3
    assert EarlyStopping(patience=3).epochs_without_improvement(_History(plateau)) == 4
    polished = _History([0.5, 0.001, 0.02, 0.01, 0.004, 0.003, 0.003])
    polished.history["polishing"] = [False, False, False, False, True, True, True]
    since = EarlyStopping(patience=3, since="polishing")
    assert since.epochs_without_improvement(polished) == 3  # epochs 5-7, best (2) before them
    polished.history["polishing"] = [False] * 7
    assert since.epochs_without_improvement(polished) == 0  # not polishing yet: never counts
    auc = EarlyStopping(patience=2, mode="max", level=0.9)
    assert auc.epochs_without_improvement(_History([0.5, 0.6, 0.6, 0.6])) == 0
    assert auc.epochs_without_improvement(_History([0.95, 0.9, 0.9])) == 2


def test_auto_takes_the_kernel_only_where_it_is_faster(one_stream, tmp_path):
    """Measured (scripts/bench_window.py): faster up to 32 units, slower at 64; `native` asked
    for explicitly still runs it."""
    _, spec, paths = one_stream
    base = {"mode": "window", "state_reset": "stream", "epochs": 1}
    base["window"] = {"first": 100, "iterations": 2, "draws": 1}
    engines = {}
    for hidden, engine in ((32, "auto"), (40, "auto"), (40, "native")):
        cfg = validate_config({"training": {**base, "hidden_size": hidden, "engine": engine}})
        training = training_config(cfg, grid_points(cfg)[0], "spec")
        out = tmp_path / f"{hidden}{engine}"
        engines[hidden, engine] = runner.run("frequency", spec, training, paths, out)["engine"]
    assert engines == {(32, "auto"): "native", (40, "auto"): "torch", (40, "native"): "native"}


def test_batches_of_the_wrong_shape_are_refused_by_name():
    model = FrequencyLSTM(5, 4)
    session = WindowSession(model, torch.optim.Adam(model.parameters()), 1.0)
    x, y = _batch(0)
    with pytest.raises(ValueError, match=r"x must be \(batch, steps, 5\)"):
        session.step(x[:, :, :3], y, 1e-3)
    with pytest.raises(ValueError, match="y must hold 1 target"):
        session.step(x, y[:, :10], 1e-3)


def test_the_kernels_tanh_is_within_4e_7_of_the_true_one():
    """The rational tanh the window kernel uses instead of libm (the README's figure)."""
    from statetrain.tasks.frequency.native_window import _sigmoid, _tanh

    x = np.linspace(-20, 20, 200_001).astype(np.float32)
    approx = np.array([_tanh(v) for v in x[::50]], dtype=np.float64)
    exact = np.tanh(x[::50].astype(np.float64))
    assert np.max(np.abs(approx - exact)) < 4e-7
    sig = np.array([_sigmoid(v) for v in x[::50]], dtype=np.float64)
    assert np.max(np.abs(sig - 1 / (1 + np.exp(-x[::50].astype(np.float64))))) < 4e-7


def test_signal_decay_shrinks_the_weights_on_s_alike_in_both_engines(one_stream, tmp_path):
    """signal_decay: the gate weights on S (input 0) shrink towards 0 after every step and no
    other weight is decayed; the two engines agree; polish_signal_decay takes over once
    polishing has begun (L-BFGS polishing takes it as a penalty); a decay that would flip the
    weights' sign is refused."""
    _, spec, paths = one_stream
    polish = {"draws": 2, "polish_lr": 3e-3, "polish_at": 10.0, "polish_signal_decay": 150}
    runs = {}
    for name, window, engine in (
        ("plain", {"draws": 2}, "native"),
        ("native", {"draws": 2, "signal_decay": 150}, "native"),
        ("torch", {"draws": 2, "signal_decay": 150}, "torch"),
        ("polish", polish, "native"),
    ):
        training = _polish_training(window, epochs=4, engine=engine)
        runner.run("frequency", spec, training, paths, tmp_path / name)
        runs[name] = load_checkpoint_file(tmp_path / name / "last.pth")["model_state_dict"]
    lbfgs = {**polish, "polish_optimizer": "lbfgs"}  # the decay as an L2 penalty
    runner.run("frequency", spec, _polish_training(lbfgs, epochs=4), paths, tmp_path / "lbfgs")
    runs["lbfgs"] = load_checkpoint_file(tmp_path / "lbfgs" / "last.pth")["model_state_dict"]
    s_weights = {k: float(v["lstm.weight_ih_l0"][:, 0].abs().max()) for k, v in runs.items()}
    # 12 steps at lr 3e-3 × 150: each shrinks by 0.55, Adam adds at most ~lr per step
    assert s_weights["native"] < 0.02 < 0.1 < s_weights["plain"]
    # polishing from epoch 2 on (9 steps): decayed too, though not from the first step
    assert s_weights["polish"] < 0.03
    assert s_weights["lbfgs"] < 0.03
    for key, value in runs["native"].items():
        other = runs["torch"][key]
        assert float((other - value).abs().max()) <= 1e-4 * float(value.abs().max()), key
    # the one-hot columns are trained, not decayed
    c_weights = runs["native"]["lstm.weight_ih_l0"][:, 1:].abs().max()
    assert float(c_weights) > 0.1
    with pytest.raises(ConfigError, match="flipping their sign"):
        _polish_training({"signal_decay": 400}, epochs=1)


def test_lbfgs_polishing_lowers_the_loss_in_both_engines_and_resumes_exactly(one_stream, tmp_path):
    """polish_optimizer lbfgs: one polishing epoch is one L-BFGS run on one batch, which
    lowers its loss; the two engines take the same path (the kernel's gradient is torch's to
    float32 rounding); an epoch's L-BFGS history does not outlive it and lbfgs_after's count
    travels in the checkpoint, so a resumed run is the uninterrupted one; polish_ema (Adam's
    iterates) is refused with it."""
    x, y = _batch(3, n_b=2, n_t=300)
    torch.manual_seed(0)
    model = FrequencyLSTM(input_size=5, hidden_size=8)
    twin = copy.deepcopy(model)
    curriculum = WindowCurriculum(iterations=15)
    ends = {}
    for engine, m in (("native", model), ("torch", twin)):
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        trainer = SimpleNamespace(model=m, criterion=nn.MSELoss(), device="cpu")
        session = WindowSession(m, opt, 1.0) if engine == "native" else None
        with torch.no_grad():
            start = float(nn.MSELoss()(m(torch.from_numpy(x))[0], torch.from_numpy(y)))
        value, _, evaluations, ok = curriculum._lbfgs_epoch(
            trainer, list(m.parameters()), session, x, y
        )
        if session is not None:
            session.close()
        with torch.no_grad():
            end = float(nn.MSELoss()(m(torch.from_numpy(x))[0], torch.from_numpy(y)))
        assert ok and evaluations >= 15, engine
        assert end == pytest.approx(value, rel=1e-4), engine  # what it reports is the model's
        assert end < 0.8 * start, engine
        ends[engine] = end
    assert ends["torch"] == pytest.approx(ends["native"], rel=0.05)
    # in a run (polishing from epoch 2, its first epoch Adam's, lbfgs_after 1): resumed after
    # 2 of 4 epochs, the same weights as 4 straight; L-BFGS from epoch 2 ends elsewhere
    _, spec, paths = one_stream
    window = {"draws": 2, "polish_lr": 1e-4, "polish_at": 10.0, "polish_optimizer": "lbfgs"}
    after = {**window, "lbfgs_after": 1}
    runner.run("frequency", spec, _polish_training(after, 4), paths, tmp_path / "s")
    runner.run("frequency", spec, _polish_training(after, 2), paths, tmp_path / "r")
    runner.run("frequency", spec, _polish_training(after, 4), paths, tmp_path / "r")
    runner.run("frequency", spec, _polish_training(window, 4), paths, tmp_path / "a")
    straight = load_checkpoint_file(tmp_path / "s" / "last.pth")
    assert straight["window_state"]["polished"] == 3
    # the history says which epochs were L-BFGS runs: after_polishing's patience starts there
    assert straight["history"]["lbfgs"] == [False, False, True, True]
    assert runner._polishing_column(_polish_training(after, 4)) == "lbfgs"
    assert runner._polishing_column(_polish_training({"polish_lr": 1e-4}, 4)) == "polishing"
    resumed = load_checkpoint_file(tmp_path / "r" / "last.pth")["model_state_dict"]
    at_once = load_checkpoint_file(tmp_path / "a" / "last.pth")["model_state_dict"]
    for key, value in straight["model_state_dict"].items():
        assert torch.equal(resumed[key], value), key
    assert not all(torch.equal(at_once[k], v) for k, v in straight["model_state_dict"].items())
    # a checkpoint whose count is not a count is refused before anything changes
    for bad in (-1, "3", 2.5, True):
        curriculum = WindowCurriculum()
        with pytest.raises(ValueError, match=r"window_state\.polished"):
            curriculum.load_state_dict({**straight["window_state"], "polished": bad})
        assert curriculum.window == 0 and curriculum.polished == 0
    with pytest.raises(ConfigError, match="polish_ema"):
        _polish_training({**window, "polish_ema": 0.9}, epochs=1)


def test_an_lbfgs_epoch_below_the_threshold_grows_the_window():
    """L-BFGS epochs take no streak of iterations: one that ends below the threshold grows
    the window once (up to the stream), one above it does not."""
    curriculum = WindowCurriculum(window=400, threshold=0.005, growth=1.25)
    curriculum._grow_after_lbfgs(epoch=3, loss=0.01, max_len=450)
    assert curriculum.window == 400
    curriculum._grow_after_lbfgs(epoch=4, loss=0.001, max_len=450)
    assert curriculum.window == 450  # 500 capped at the stream
    curriculum._grow_after_lbfgs(epoch=5, loss=0.001, max_len=450)
    assert curriculum.window == 450
