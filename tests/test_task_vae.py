"""The `vae` task: generated data, user files, validation, the loss, training, figures."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from statetrain.batch import minibatch_epoch
from statetrain.tasks.base import SPLITS, load_split, save_split
from statetrain.tasks.vae import (
    VAETask,
    VariationalAutoencoder,
    add_noise,
    generate_matrix,
    vae_loss,
)
from statetrain.utils import count_parameters, print_model_summary
from statetrain.validation import DatasetError

torch.set_num_threads(1)
CPU = torch.device("cpu")
# Small but structured: ~150 species kept, ~20 presences per site.
SMALL = {"sites": 400, "species": 160, "habitats": 5, "min_species_observations": 10, "seed": 3}
SMALL_TRAINING = {"hidden_size": 256, "latent_dim": 8, "batch_size": 32, "lr": 1e-3}


def train(task: VAETask, splits: dict, epochs: int, seed: int = 0) -> torch.nn.Module:
    """The trainer's loop in miniature: seeded init, one generator per epoch."""
    torch.manual_seed(seed)
    model = task.build_model(splits["train"])
    optimizer = torch.optim.Adam(model.parameters(), lr=task.training["lr"])
    for epoch in range(epochs):
        generator = torch.Generator().manual_seed(1000 * seed + epoch)
        row = minibatch_epoch(task, model, optimizer, splits["train"], generator, CPU)
        assert all(np.isfinite(v) for v in row.values()), row
    return model


@pytest.fixture(scope="module")
def small_splits() -> dict:
    return VAETask(SMALL).make_splits()


@pytest.fixture(scope="module")
def trained(small_splits):
    task = VAETask(SMALL, SMALL_TRAINING)
    return task, train(task, small_splits, epochs=20)


# ------------------------------------------------------------------ generator
def test_generator_is_deterministic_and_seeded():
    m1, h1 = generate_matrix(SMALL)
    m2, h2 = generate_matrix(dict(SMALL))
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_array_equal(h1, h2)
    m3, _ = generate_matrix({**SMALL, "seed": 4})
    assert m3.shape != m1.shape or not np.array_equal(m1, m3)


def test_generator_filters_like_the_seed_and_is_sparse():
    matrix, habitat = generate_matrix({"seed": 0})  # the defaults: 1500 × 200, 5 habitats
    assert matrix.dtype == np.uint8 and set(np.unique(matrix)) == {0, 1}
    assert habitat.dtype == np.int64 and habitat.shape == (matrix.shape[0],)
    assert set(np.unique(habitat)) == set(range(5))
    assert matrix.sum(axis=0).min() >= 30  # min_species_observations
    assert matrix.sum(axis=1).min() >= 1  # no empty site
    assert 100 < matrix.shape[1] < 200  # the rarest species were dropped, most kept
    assert 0.05 < matrix.mean() < 0.30


def test_habitats_structure_the_communities():
    matrix, habitat = generate_matrix({"seed": 1})
    x = matrix[:400].astype(float)
    h = habitat[:400]
    inter = x @ x.T
    union = x.sum(1)[:, None] + x.sum(1)[None, :] - inter
    jaccard = inter / union
    same = h[:, None] == h[None, :]
    off_diag = ~np.eye(len(h), dtype=bool)
    within = jaccard[same & off_diag].mean()
    between = jaccard[~same].mean()
    assert within > 1.5 * between, (within, between)


# ------------------------------------------------------------------ splits
def test_splits_are_disjoint_complete_and_deterministic(small_splits):
    again = VAETask(SMALL).make_splits()
    full, _ = generate_matrix(SMALL)
    rows = [small_splits[s]["x"] for s in SPLITS]
    assert sum(len(r) for r in rows) == len(full)
    # Every generated site lands in exactly one split (compare the rows as a multiset).
    as_bytes = sorted(r.astype(np.uint8).tobytes() for part in rows for r in part)
    assert as_bytes == sorted(r.tobytes() for r in full)
    assert abs(len(rows[1]) - 0.15 * len(full)) <= 1
    for s in SPLITS:
        for key in ("x", "habitat", "holdout"):
            np.testing.assert_array_equal(small_splits[s][key], again[s][key])
        assert small_splits[s]["x"].dtype == np.float32
        assert small_splits[s]["habitat"].dtype == np.int64
        assert small_splits[s]["holdout"].dtype == bool


def test_holdout_hides_some_presences_of_every_site(small_splits):
    split = small_splits["validation"]
    x, holdout = split["x"], split["holdout"]
    assert not (holdout & (x == 0)).any()
    presences = x.sum(1)
    hidden = holdout.sum(1)
    assert (hidden[presences >= 2] >= 1).all()
    assert (hidden < presences).all() or (presences == 0).all()  # one stays visible
    share = hidden.sum() / presences.sum()
    assert 0.15 < share < 0.3  # holdout_fraction 0.2


def test_split_files_round_trip_and_validate(small_splits, tmp_path):
    task = VAETask(SMALL)
    for s in SPLITS:
        path = save_split(small_splits[s], tmp_path / f"{s}.npz")
        loaded = load_split(path, required=("x", "habitat", "holdout"))
        for key, value in small_splits[s].items():
            np.testing.assert_array_equal(loaded[key], value)
            assert loaded[key].dtype == value.dtype
        report = task.validate(loaded, path)
        assert report["sites"] == len(small_splits[s]["x"])
        assert report["habitats"] == 5
        assert 0.05 < report["prevalence"] < 0.3


@pytest.mark.parametrize(
    ("mutate", "check"),
    [
        (lambda a: a.pop("holdout"), "arrays"),
        (lambda a: a["x"].__setitem__((2, slice(None)), 0.0), "site non-empty"),
        (lambda a: a["x"].__setitem__((1, 3), 0.5), "binary"),
        (lambda a: a["holdout"].__setitem__(np.nonzero(a["x"] == 0), True), "holdout"),
        (lambda a: a.__setitem__("habitat", a["habitat"][:-1]), "habitat"),
    ],
)
def test_validate_rejects_a_broken_split(small_splits, mutate, check):
    arrays = {k: v.copy() for k, v in small_splits["test"].items()}
    arrays["holdout"][2] = False  # a row emptied by a mutation keeps a consistent holdout
    mutate(arrays)
    with pytest.raises(DatasetError) as err:
        VAETask(SMALL).validate(arrays, "test.npz")
    assert err.value.check == check
    assert f"'{check}'" in str(err.value)


# ------------------------------------------------------------------ user files
def user_matrix(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = (rng.random((40, 6)) < 0.4).astype(np.uint8)
    m[:, 0] = 1  # no empty site
    return m


def test_user_csv_with_site_ids_loads(tmp_path):
    m = user_matrix()
    path = tmp_path / "sites.csv"
    lines = ["site," + ",".join(f"Species {j}" for j in range(m.shape[1]))]
    lines += [f"plot_{i}," + ",".join(map(str, row)) for i, row in enumerate(m)]
    path.write_text("\n".join(lines) + "\n")
    splits = VAETask({"path": str(path), "seed": 1}).make_splits()
    assert sum(len(splits[s]["x"]) for s in SPLITS) == 40
    assert all(splits[s]["x"].shape[1] == 6 for s in SPLITS)
    assert (splits["train"]["habitat"] == -1).all()
    assert np.isclose(sum(splits[s]["x"].sum() for s in SPLITS), m.sum())


def test_user_npy_loads(tmp_path):
    m = user_matrix(1)
    np.save(tmp_path / "m.npy", m.astype(np.int64))
    splits = VAETask({"path": str(tmp_path / "m.npy")}).make_splits()
    report = VAETask({}).validate(splits["train"], "train.npz")
    assert report["species"] == 6 and report["habitats"] == 0
    assert sum(len(splits[s]["x"]) for s in SPLITS) == 40


def _csv(path: Path, m: np.ndarray, cell: tuple[int, int] | None = None, text: str = "") -> Path:
    rows = [[str(v) for v in r] for r in m]
    if cell:
        rows[cell[0]][cell[1]] = text
    path.write_text(
        "\n".join([",".join(f"sp{j}" for j in range(m.shape[1]))] + [",".join(r) for r in rows])
        + "\n"
    )
    return path


def _bad_file(kind: str, tmp_path: Path) -> Path:
    m = user_matrix(2)
    if kind == "value 2":
        return _csv(tmp_path / "a.csv", m, (5, 2), "2")
    if kind == "NaN":
        return _csv(tmp_path / "a.csv", m, (7, 3), "")
    if kind == "text cell":
        return _csv(tmp_path / "a.csv", m, (7, 3), "yes")
    if kind == "empty species":
        m[:, 4] = 0
        return _csv(tmp_path / "a.csv", m)
    if kind == "empty site":
        m[9] = 0
        np.save(tmp_path / "a.npy", m)
        return tmp_path / "a.npy"
    if kind == "1-D":
        np.save(tmp_path / "a.npy", m[:, 0])
        return tmp_path / "a.npy"
    if kind == "pickle":
        (tmp_path / "a.npy").write_bytes(pickle.dumps(m))
        return tmp_path / "a.npy"
    if kind == "object array":
        np.save(tmp_path / "a.npy", m.astype(object), allow_pickle=True)
        return tmp_path / "a.npy"
    if kind == "no header":
        path = tmp_path / "a.csv"
        path.write_text("\n".join(",".join(str(v) for v in r) for r in m) + "\n")
        return path
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "check", "where"),
    [
        ("value 2", "binary", "site row 5, species column 2 ('sp2') holds 2"),
        ("NaN", "finite", "site row 7, species column 3"),
        ("text cell", "numeric", "site row 7, species column 3 ('sp3') holds 'yes'"),
        ("empty species", "species present", "column 4 ('sp4')"),
        ("empty site", "site non-empty", "row 9"),
        ("1-D", "2-D", "shape (40,)"),
        ("pickle", "readable", "pickles"),
        ("object array", "dtype", "objects"),
        ("no header", "header", "species names"),
    ],
)
def test_malformed_user_file_is_named(tmp_path, kind, check, where):
    path = _bad_file(kind, tmp_path)
    with pytest.raises(DatasetError) as err:
        VAETask({"path": str(path)}).make_splits()
    message = str(err.value)
    assert err.value.check == check
    assert f"failed check '{check}'" in message and where in message, message
    assert str(path) in message


def test_missing_or_unsupported_user_file(tmp_path):
    with pytest.raises(DatasetError, match="'exists'"):
        VAETask({"path": str(tmp_path / "nope.csv")}).make_splits()
    (tmp_path / "m.txt").write_text("a,b\n1,0\n")
    with pytest.raises(DatasetError, match="'format'"):
        VAETask({"path": str(tmp_path / "m.txt")}).make_splits()


# ------------------------------------------------------------------ model and loss
def test_model_matches_the_seed_summary():
    model = VariationalAutoencoder(467, 16, 512)
    assert count_parameters(model) == (1_554_931, 1_554_931)
    model.latent_logvar_layer.requires_grad_(False)
    assert count_parameters(model)[1] == 1_554_931 - (512 * 16 + 16)
    text = print_model_summary(model)
    assert "Total parameters: 1,554,931" in text and "Model size: 5.93 MB" in text
    assert "encoder_network" in text
    logits, mu, logvar = model(torch.zeros(3, 467))
    assert logits.shape == (3, 467) and mu.shape == logvar.shape == (3, 16)


def test_model_args_rebuild_the_architecture():
    task = VAETask({}, {"hidden_size": 32, "latent_dim": 4})
    x = np.zeros((5, 7), np.float32)
    x[:, 0] = 1
    model = task.build_model({"x": x})
    args = task.model_args(model)
    assert args == {"input_dimension": 7, "latent_dimension": 4, "hidden_dimension": 32}
    clone = task.model_from_args(args)
    clone.load_state_dict(model.state_dict())  # same shapes, strict
    # The output bias starts at the training prevalence (1 for species 0, ~0 elsewhere).
    probs = torch.sigmoid(model.decoder_network[-1].bias)
    assert probs[0] > 0.99 and (probs[1:] < 0.01).all()


def test_vae_loss_matches_its_definition():
    torch.manual_seed(0)
    logits, target = torch.randn(4, 6), (torch.rand(4, 6) < 0.3).float()
    mu, logvar = torch.randn(4, 3), torch.randn(4, 3)
    total, recon, kl = vae_loss(logits, target, mu, logvar, beta=0.5)
    p = torch.sigmoid(logits)
    bce = -(target * p.log() + (1 - target) * (1 - p).log()).sum(1).mean()
    kl_ref = (0.5 * (mu**2 + logvar.exp() - 1 - logvar)).sum(1).mean()
    assert torch.allclose(recon, bce, atol=1e-5, rtol=1e-5) and torch.allclose(
        kl, kl_ref, atol=1e-5, rtol=1e-5
    )
    assert torch.allclose(total, bce + 0.5 * kl_ref, atol=1e-5, rtol=1e-5)
    _, _, kl0 = vae_loss(logits, target, torch.zeros(4, 3), torch.zeros(4, 3))
    assert float(kl0) == 0.0


def test_add_noise_is_reproducible_from_the_generator():
    clean = torch.zeros(500, 40)
    a = add_noise(clean, 0.1, torch.Generator().manual_seed(5))
    b = add_noise(clean, 0.1, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    assert abs(float(a.std()) - 0.1) < 0.005 and not torch.equal(a, clean)
    assert torch.equal(add_noise(clean, 0.0), clean)


# ------------------------------------------------------------------ training
def test_vae_beats_the_frequency_baseline(trained, small_splits):
    task, model = trained
    val = task.evaluate(model, small_splits["validation"], CPU)
    base = task.baseline(small_splits["train"], small_splits["validation"])
    assert all(isinstance(v, float) for v in val.values())
    assert set(val) >= {"loss", "recon", "kl", "auc", "bce_per_entry"}
    assert val["recon"] < base["recon"] - 2.0, (val, base)
    assert val["auc"] > base["auc"] + 0.03, (val, base)
    assert base["auc"] > 0.5 and val["auc"] > 0.5
    assert val["kl"] > 0.1  # the latent space is used (no posterior collapse)
    assert val["loss"] == pytest.approx(val["recon"] + val["kl"])


def test_training_is_deterministic(small_splits):
    task = VAETask(SMALL, SMALL_TRAINING)
    a = train(task, small_splits, epochs=2, seed=7)
    b = train(task, small_splits, epochs=2, seed=7)
    c = train(task, small_splits, epochs=2, seed=8)
    for key, value in a.state_dict().items():
        torch.testing.assert_close(value, b.state_dict()[key], rtol=0, atol=0)
    assert any(not torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())


def test_minibatch_epoch_clips_and_skips_non_finite_batches(small_splits):
    task = VAETask(SMALL, {**SMALL_TRAINING, "clip_grad_norm": 1e-3})
    n_batches = int(np.ceil(len(small_splits["train"]["x"]) / SMALL_TRAINING["batch_size"]))
    torch.manual_seed(0)
    model = task.build_model(small_splits["train"])
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    before = [p.detach().clone() for p in model.parameters()]
    row = minibatch_epoch(task, model, optimizer, small_splits["train"], torch.Generator(), CPU)
    assert row["grad_norm_mean"] > 1e-3  # recorded before clipping
    step = (
        sum(
            float((p.detach() - q).norm() ** 2)
            for p, q in zip(model.parameters(), before, strict=True)
        )
        ** 0.5
    )
    assert step <= 1e-3 * n_batches + 1e-6  # each step's norm was clipped
    with torch.no_grad():
        model.latent_mean_layer.weight[0, 0] = float("nan")
    frozen = [p.detach().clone() for p in model.parameters()]
    row = minibatch_epoch(task, model, optimizer, small_splits["train"], torch.Generator(), CPU)
    assert np.isnan(row["train_loss"]) and row["skipped_batches"] == n_batches
    for p, q in zip(model.parameters(), frozen, strict=True):
        torch.testing.assert_close(p.detach(), q, equal_nan=True)


def test_plot_writes_both_figures(trained, small_splits, tmp_path):
    task, model = trained
    history = {
        f"{p}_{k}": [3.0 - 0.1 * e for e in range(4)]
        for p in ("train", "val")
        for k in ("loss", "recon", "kl")
    }
    out = {name: tmp_path / "figs" / name for name in task.figures}
    task.plot(model, small_splits, history, out, title="small")
    for path in out.values():
        assert path.is_file() and path.stat().st_size > 5000
    assert out["latent_space.png"].read_bytes()[:4] == b"\x89PNG"
