"""ONNX export: one LSTM step with explicit state, run in onnxruntime against PyTorch."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from statetrain.checkpoint import CheckpointError, save_checkpoint_file
from statetrain.export import export_checkpoint
from statetrain.tasks.frequency import export
from statetrain.tasks.frequency.model import FrequencyLSTM
from statetrain.tasks.frequency.trainer import Split, predict

from .conftest import PYTHON, QUICK, small, snakemake

HIDDEN = 12


def _trained(num_layers: int, seed: int = 0) -> FrequencyLSTM:
    """A FrequencyLSTM after 150 Adam steps on 200-row windows: weights off their init."""
    torch.manual_seed(seed)
    model = FrequencyLSTM(hidden_size=HIDDEN, num_layers=num_layers, forget_bias=1.0)
    split = Split.from_array(small(1, duration_s=0.2))
    x, y = torch.from_numpy(split.x), torch.from_numpy(split.y)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(150):
        a = (step * 137) % (len(x) - 200)
        out, _ = model(x[None, a : a + 200], None)
        loss = torch.nn.functional.mse_loss(out[0], y[a : a + 200])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def models() -> dict[int, FrequencyLSTM]:
    return {layers: _trained(layers) for layers in (1, 2)}


@pytest.fixture(scope="module")
def onnx_files(models, tmp_path_factory) -> dict[int, str]:
    out = tmp_path_factory.mktemp("onnx")
    return {n: str(export.export_onnx(m, out / f"lstm{n}.onnx")) for n, m in models.items()}


@pytest.fixture(scope="module")
def rows_array() -> np.ndarray:
    """4 streams × 100 rows of the assignment's test data."""
    return small(2, duration_s=0.1)


@pytest.mark.parametrize("layers", [1, 2])
def test_export_is_a_valid_step_graph_with_state_io_and_dynamic_batch(layers, models, onnx_files):
    path = onnx_files[layers]
    onnx.checker.check_model(path, full_check=True)
    proto = onnx.load(path)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    shapes = {i.name: i.shape for i in session.get_inputs()}
    assert shapes == {
        "x": ["batch", 1, 5],
        "h0": [layers, "batch", HIDDEN],
        "c0": [layers, "batch", HIDDEN],
    }
    assert [o.name for o in session.get_outputs()] == ["y", "h1", "c1"]
    model = models[layers]
    gen = torch.Generator().manual_seed(0)
    for batch in (1, 3):
        h = torch.randn(layers, batch, HIDDEN, generator=gen)
        c = torch.randn(layers, batch, HIDDEN, generator=gen)
        state = {"h0": h.numpy(), "c0": c.numpy()}
        for _ in range(5):  # a few steps, the state fed back each time
            x = torch.randn(batch, 1, 5, generator=gen)
            with torch.no_grad():
                y_ref, (h, c) = model(x, (h, c))
            y, h1, c1 = session.run(None, {"x": x.numpy(), **state})
            assert y.shape == (batch, 1) and h1.shape == (layers, batch, HIDDEN)
            np.testing.assert_allclose(y, y_ref.numpy(), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(h1, h.numpy(), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(c1, c.numpy(), rtol=1e-5, atol=1e-5)
            state = {"h0": h1, "c0": c1}


@pytest.mark.parametrize("state_reset", ["epoch", "stream"])
@pytest.mark.parametrize("layers", [1, 2])
def test_stepping_onnx_with_carried_state_reproduces_predict(
    layers, state_reset, models, onnx_files, rows_array
):
    model = models[layers]
    report = export.check_onnx(onnx_files[layers], model, rows_array, state_reset)
    assert report["passed"] and report["rows"] == 400 and report["streams"] == 4
    assert report["max_abs_diff"] <= 1e-5
    assert report["opset"] == 17 and report["state_reset"] == state_reset
    assert report["versions"]["onnxruntime"] == ort.__version__
    # The comparison is sensitive to where the state is zeroed: the other reset rule differs.
    split = Split.from_array(rows_array)
    other = "stream" if state_reset == "epoch" else "epoch"
    session = export.session(onnx_files[layers])
    wrong = export.onnx_predict(session, split.x, export.reset_rows(split, other))
    assert np.abs(wrong - predict(model, split, state_reset)).max() > 1e-3


def test_a_graph_that_does_not_match_fails_the_check_and_says_so(
    models, onnx_files, rows_array, tmp_path, monkeypatch
):
    report = export.check_onnx(onnx_files[1], _trained(1, seed=1), rows_array)  # other weights
    assert not report["passed"] and report["max_abs_diff"] > 1e-4

    ckpt = tmp_path / "best_model.pth"
    save_checkpoint_file(
        {"model_state_dict": models[1].state_dict(), "model_args": _args(models[1])}, ckpt
    )
    data = tmp_path / "test.npy"
    np.save(data, rows_array)
    real = export.onnx_graph
    monkeypatch.setattr(export, "onnx_graph", lambda m: real(_trained(1, seed=1)))
    with pytest.raises(export.OnnxCheckError, match=r"ONNX check FAILED.*max abs diff"):
        export_checkpoint(ckpt, tmp_path / "m.onnx", data, report_path=tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["passed"] is False


def test_a_corrupt_checkpoint_is_a_checkpoint_error_and_writes_nothing(tmp_path):
    ckpt = tmp_path / "best_model.pth"
    ckpt.write_bytes(b"PK\x03\x04 not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        export_checkpoint(ckpt, tmp_path / "model.onnx")
    with pytest.raises(CheckpointError, match="does not exist"):
        export_checkpoint(tmp_path / "missing.pth", tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == [ckpt]


def test_opset_outside_the_exporters_range_is_refused(models, tmp_path):
    with pytest.raises(ValueError, match="opset 8 is not supported"):
        export.export_onnx(models[1], tmp_path / "m.onnx", opset=8)
    assert not (tmp_path / "m.onnx").exists()


def _args(model: FrequencyLSTM) -> dict:
    return {
        "input_size": model.input_size,
        "hidden_size": model.hidden_size,
        "num_layers": model.num_layers,
    }


def test_export_only_cli_exports_a_checkpoint_and_checks_it(models, rows_array, tmp_path):
    """Seed 004's export-only mode: a checkpoint in, ONNX out, no training."""
    model = models[2]
    ckpt = tmp_path / "any.pth"
    save_checkpoint_file(
        {
            "model_state_dict": model.state_dict(),
            "model_args": _args(model),
            "state_reset": "stream",
        },
        ckpt,
    )
    data = tmp_path / "test.npy"
    np.save(data, rows_array)
    out = tmp_path / "out" / "model.onnx"
    cmd = [PYTHON, "-m", "statetrain.cli", "export", str(ckpt), str(out)]
    cmd += ["--data", str(data), "--opset", "13"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ONNX check passed" in proc.stderr
    report = json.loads((tmp_path / "out" / "model.check.json").read_text())
    assert report["passed"] and report["opset"] == 13 and report["state_reset"] == "stream"
    assert report["rows"] == 400 and report["max_abs_diff"] <= 1e-5
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["state_reset"] == "stream" and meta["num_layers"] == "2"


@pytest.mark.workflow
def test_export_rule_end_to_end(quick_run):
    """`snakemake results/best/spec/model.onnx` exports and checks the selected model."""
    snakemake(quick_run, "results/quick/best/spec/model.onnx", "--configfile", str(QUICK))
    best = quick_run / "results" / "quick" / "best" / "spec"
    report = json.loads((best / "onnx_check.json").read_text())
    assert report["passed"] and report["rows"] == 1200 and report["max_abs_diff"] <= 1e-4
    onnx.checker.check_model(str(best / "model.onnx"), full_check=True)
    assert (
        "ONNX check passed" in (quick_run / "results/quick/logs/export_onnx/spec.log").read_text()
    )
    assert not (
        quick_run / "results" / "quick" / "best" / "w0" / "model.onnx"
    ).exists()  # only as asked


def test_an_expert_combination_exports_with_its_states_stacked(rows_array, tmp_path):
    """The headline model kind (per-frequency experts, one ExpertLSTM) exports as one step
    graph whose h/c stack the experts' states, and matches PyTorch over the whole split."""
    from statetrain.tasks.frequency.model import ExpertLSTM

    experts = [_trained(1, seed=k) for k in range(4)]
    combined = ExpertLSTM(experts).eval()
    ckpt = tmp_path / "experts.pth"
    save_checkpoint_file(
        {
            "model_state_dict": combined.state_dict(),
            "model_args": {"experts": [_args(e) for e in experts]},
            "state_reset": "stream",
        },
        ckpt,
    )
    data = tmp_path / "test.npy"
    np.save(data, rows_array)
    report = export_checkpoint(ckpt, tmp_path / "e.onnx", data)
    assert report["passed"] and report["max_abs_diff"] <= 1e-5 and report["rows"] == 400
    session = ort.InferenceSession(str(tmp_path / "e.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[1].shape[0] == 4  # 4 experts × 1 layer of state rows
