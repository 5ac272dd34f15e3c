"""The `vae` task: a denoising variational autoencoder on a species presence/absence matrix.

Rows are sites (checklists, survey plots), columns are species, a cell is 1 when the species
was recorded there. The VAE compresses each site into a few latent coordinates and decodes
them into per-species occurrence probabilities; with Gaussian noise on the inputs during
training (never at evaluation) it learns to rebuild the clean community from a perturbed one,
which regularises it the way the seed's training module describes.

Reconstruction loss alone flatters an autoencoder (it sees the answer in its input), so the
honest score is the *held-out-presence AUC*: a fixed share of each site's presences is hidden
(set to 0 in the input) and the model must rank those hidden species above the true absences.
The baseline that every number is compared with is the per-species frequency model, which
predicts each species' training prevalence at every site.

Data come from `generate_matrix` (sites drawn from habitat types, species with
habitat-specific occurrence, so the latent space has a structure to find) or from the user's
CSV / `.npy` matrix; either way the whole matrix is validated before it is split.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..validation import DatasetError, is_number, load_array, read_csv_strict
from .base import SPLITS, Arrays, BatchTask, split_rows

MIN_SITES = 10
MIN_SPECIES = 2
PROB_CLIP = 1e-4  # the frequency baseline never predicts exactly 0 or 1 (finite BCE)
EVAL_CHUNK = 4096  # rows per forward pass at evaluation (bounded memory on big matrices)
SPLIT_KEYS = ("x", "habitat", "holdout")

SPEC_DEFAULTS: dict[str, Any] = {
    "sites": 1500,
    "species": 200,
    "habitats": 5,
    "min_species_observations": 30,
    "seed": 0,
    "split": {"validation": 0.15, "test": 0.15},
    "holdout_fraction": 0.2,
    "path": None,
}


# ==================================================================== model
class VariationalAutoencoder(nn.Module):
    """Encoder → (mu, logvar) → reparameterised z → decoder → per-species logits.

    Three hidden layers of width `hidden_dimension` on each side: with the seed's example
    (467 species, latent 16, hidden 512) this is the 1,554,931-parameter model its
    `print_model_summary` output shows. The decoder ends in logits, not probabilities, so the
    loss can use the numerically stable `binary_cross_entropy_with_logits`.
    """

    def __init__(
        self, input_dimension: int, latent_dimension: int = 16, hidden_dimension: int = 512
    ) -> None:
        super().__init__()
        # Kept as attributes so `VAETask.model_args` can rebuild the architecture.
        self.input_dimension = int(input_dimension)
        self.latent_dimension = int(latent_dimension)
        self.hidden_dimension = int(hidden_dimension)
        h = self.hidden_dimension
        self.encoder_network = nn.Sequential(
            nn.Linear(self.input_dimension, h),
            nn.ReLU(),
            nn.Linear(h, h),
            nn.ReLU(),
            nn.Linear(h, h),
            nn.ReLU(),
        )
        self.latent_mean_layer = nn.Linear(h, self.latent_dimension)
        self.latent_logvar_layer = nn.Linear(h, self.latent_dimension)
        self.decoder_network = nn.Sequential(
            nn.Linear(self.latent_dimension, h),
            nn.ReLU(),
            nn.Linear(h, h),
            nn.ReLU(),
            nn.Linear(h, h),
            nn.ReLU(),
            nn.Linear(h, self.input_dimension),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance of each site's latent coordinates."""
        hidden = self.encoder_network(x)
        return self.latent_mean_layer(hidden), self.latent_logvar_layer(hidden)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """z = mu + sigma·eps, so gradients flow through the sample.

        eps comes from the global torch RNG, which the trainer seeds and checkpoints.
        """
        std = torch.exp(0.5 * logvar)
        return mu + std * torch.randn_like(std)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Per-species logits (apply a sigmoid for occurrence probabilities)."""
        return self.decoder_network(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar)), mu, logvar


class _Reconstruction(nn.Module):
    """x -> sigmoid(decode(mu(x))): the VAE without its sampling, as `predict` runs it."""

    def __init__(self, model: VariationalAutoencoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, _ = self.model.encode(x)
        return torch.sigmoid(self.model.decode(mu))


def add_noise(
    data: torch.Tensor, noise_std: float = 0.1, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Gaussian noise on the inputs (training only): the denoising strategy.

    The noise is drawn on the generator's device (the trainer's per-epoch CPU generator, so
    a resumed run draws the same noise) and moved to the data's device.
    """
    if noise_std <= 0:
        return data
    device = generator.device if generator is not None else data.device
    noise = torch.randn(data.shape, generator=generator, dtype=data.dtype, device=device)
    return data + noise_std * noise.to(data.device)


def vae_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    beta: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, reconstruction, KL), each a per-site mean over the batch.

    Reconstruction is the Bernoulli negative log-likelihood summed over species; KL is the
    closed-form divergence of N(mu, sigma²) from N(0, I) summed over latent dimensions.
    Summing (not averaging) over species keeps the two terms on the scale of the ELBO, so
    beta = 1 is the textbook VAE whatever the number of species.
    """
    n = max(int(target.shape[0]), 1)
    recon = F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / n
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / n
    return recon + beta * kl, recon, kl


# ==================================================================== data
def generate_matrix(spec: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic sites × species presence/absence matrix with habitat structure.

    Why this shape: real survey matrices are sparse (most species absent from most sites),
    dominated by a few common species, and structured by habitat, with some species tied to
    one habitat and others found everywhere; sites also differ in overall richness (survey
    effort). Each species gets an overall logit commonness; its habitat effects are strong
    for specialists (one home habitat, rare elsewhere), near zero for generalists and
    moderate for the rest; a site-level richness term shifts all species together. Cells are
    Bernoulli draws. As in the seed's preprocessing, species with fewer than
    `min_species_observations` presences are dropped, then sites left with no presence.

    Returns (matrix uint8 (sites, species) of 0/1, habitat int64 (sites,)); the same spec
    (including `seed`) always gives the same arrays.
    """
    n_sites = int(spec.get("sites", SPEC_DEFAULTS["sites"]))
    n_species = int(spec.get("species", SPEC_DEFAULTS["species"]))
    k = int(spec.get("habitats", SPEC_DEFAULTS["habitats"]))
    min_obs = int(spec.get("min_species_observations", SPEC_DEFAULTS["min_species_observations"]))
    seed = int(spec.get("seed", SPEC_DEFAULTS["seed"]))
    if n_sites < 1 or n_species < 1 or k < 1:
        raise ValueError(
            f"sites ({n_sites}), species ({n_species}) and habitats ({k}) must all be >= 1"
        )
    rng = np.random.default_rng(seed)
    # Unequal habitat areas: some habitat types are surveyed more than others.
    habitat = rng.choice(k, size=n_sites, p=rng.dirichlet(np.full(k, 4.0)))
    base = rng.normal(-2.6, 0.9, size=n_species)  # overall commonness (logit)
    kind = rng.choice(3, size=n_species, p=[0.3, 0.2, 0.5])  # specialist/generalist/other
    effect = rng.normal(0.0, 0.9, size=(k, n_species))
    effect[:, kind == 1] *= 0.15
    specialists = np.flatnonzero(kind == 0)
    home = rng.integers(k, size=specialists.size)
    effect[:, specialists] = rng.normal(-1.5, 0.3, size=(k, specialists.size))
    effect[home, specialists] = rng.normal(2.8, 0.4, size=specialists.size)
    richness = rng.normal(0.0, 0.35, size=n_sites)
    logits = base[None, :] + effect[habitat] + richness[:, None]
    presence = rng.random((n_sites, n_species)) < 1.0 / (1.0 + np.exp(-logits))
    presence = presence[:, presence.sum(axis=0) >= min_obs]
    occupied = presence.any(axis=1)
    return presence[occupied].astype(np.uint8), habitat[occupied].astype(np.int64)


def _where(index: int, names: np.ndarray | None) -> str:
    return f" ('{names[index]}')" if names is not None else ""


def check_matrix(
    matrix: np.ndarray,
    path: str | Path | None = None,
    species_names: np.ndarray | None = None,
    site_ids: np.ndarray | None = None,
) -> np.ndarray:
    """Validate a whole presence/absence matrix; return it as float32 or raise DatasetError.

    Runs before splitting so that a problem is reported once, against the user's own rows and
    columns, rather than as a confusing failure in one split.
    """
    matrix = np.asarray(matrix)
    if matrix.ndim != 2:
        raise DatasetError(
            path,
            "2-D",
            f"the matrix has shape {matrix.shape}; expected 2-D (sites, species).",
            "Save one row per site and one column per species, e.g. numpy.save(path, m) with "
            "m.shape == (n_sites, n_species).",
        )
    if not (np.issubdtype(matrix.dtype, np.number) or matrix.dtype == np.bool_):
        raise DatasetError(
            path,
            "dtype",
            f"the matrix has dtype {matrix.dtype}; expected numbers 0/1.",
            "Save it as integers or floats, e.g. matrix.astype(numpy.uint8).",
        )
    n_sites, n_species = matrix.shape
    if n_species < MIN_SPECIES:
        raise DatasetError(
            path,
            "species",
            f"the matrix has {n_species} species column(s); at least {MIN_SPECIES} are needed.",
            "Check the file's orientation (rows = sites, columns = species), or lower "
            "data.min_species_observations for generated data.",
        )
    if n_sites < MIN_SITES:
        raise DatasetError(
            path,
            "sites",
            f"the matrix has {n_sites} site row(s); at least {MIN_SITES} are needed to split "
            "it into train/validation/test.",
            "Provide more sites (rows = sites, columns = species).",
        )
    values = matrix.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        row, col = _first_bad_cell(finite)
        raise DatasetError(
            path,
            "finite",
            f"site row {row}{_where(row, site_ids)}, species column {col}"
            f"{_where(col, species_names)} holds {values[row, col]} (an empty or non-numeric "
            "cell); every cell must be 0 or 1.",
            "Fill missing cells with 0 (absent) or drop the site.",
        )
    binary = (values == 0) | (values == 1)
    if not binary.all():
        row, col = _first_bad_cell(binary)
        raise DatasetError(
            path,
            "binary",
            f"site row {row}{_where(row, site_ids)}, species column {col}"
            f"{_where(col, species_names)} holds {values[row, col]:g}; presence/absence cells "
            "must be exactly 0 or 1.",
            "Convert counts to presence with (counts > 0).astype(int)."
            + (
                " If the first column holds numeric site ids, make them non-numeric "
                "(e.g. 'site_1') or drop that column."
                if col == 0
                else ""
            ),
        )
    empty_species = np.flatnonzero(values.sum(axis=0) == 0)
    if empty_species.size:
        col = int(empty_species[0])
        raise DatasetError(
            path,
            "species present",
            f"{empty_species.size} species column(s) are never present, the first is column "
            f"{col}{_where(col, species_names)}; a species with no presence teaches nothing.",
            "Drop species columns whose sum is 0.",
        )
    empty_sites = np.flatnonzero(values.sum(axis=1) == 0)
    if empty_sites.size:
        row = int(empty_sites[0])
        raise DatasetError(
            path,
            "site non-empty",
            f"{empty_sites.size} site row(s) have no presence, the first is row {row}"
            f"{_where(row, site_ids)}; an empty site has no community to encode.",
            "Drop site rows whose sum is 0.",
        )
    return values.astype(np.float32)


def _first_bad_cell(ok: np.ndarray) -> tuple[int, int]:
    """(row, column) of the first False of a 2-D mask, for the error message."""
    row = int(np.flatnonzero(~ok.all(axis=1))[0])
    return row, int(np.flatnonzero(~ok[row])[0])


def check_matrix_rows(x: np.ndarray, path: str | Path) -> np.ndarray:
    """Per-split content checks: finite, binary, no empty site (species columns may be empty,
    a rare species can miss a small split)."""
    values = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        row, col = _first_bad_cell(finite)
        raise DatasetError(
            path,
            "finite",
            f"x at site row {row}, species column {col} holds {values[row, col]}.",
            "Regenerate the splits; cells must be 0 or 1.",
        )
    binary = (values == 0) | (values == 1)
    if not binary.all():
        row, col = _first_bad_cell(binary)
        raise DatasetError(
            path,
            "binary",
            f"x at site row {row}, species column {col} holds {values[row, col]:g}; "
            "expected 0 or 1.",
            "Regenerate the splits.",
        )
    empty = np.flatnonzero(values.sum(axis=1) == 0)
    if empty.size:
        raise DatasetError(
            path,
            "site non-empty",
            f"{empty.size} site row(s) have no presence, the first is row {int(empty[0])}.",
            "Regenerate the splits (empty sites are dropped before splitting).",
        )
    return values


def _read_npy(path: Path) -> np.ndarray:
    """The project's safe reader: header checked by hand, no pickles, no complex values."""
    return load_array(path, kinds="fiub")


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(matrix, species names, site ids or None) from a CSV with a header of species names."""
    import pandas as pd

    frame = read_csv_strict(path, "a header row of species names, then one row of 0/1 per site")
    site_ids = None
    numeric = pd.api.types.is_numeric_dtype  # bool counts as numeric; text (object/str) not
    if frame.shape[1] and not numeric(frame.dtypes.iloc[0]):
        # An optional first column of (non-numeric) site ids.
        site_ids = frame.iloc[:, 0].astype(str).to_numpy()
        frame = frame.iloc[:, 1:]
    names = np.array([str(c) for c in frame.columns])
    if names.size and all(is_number(n) for n in names):
        raise DatasetError(
            path,
            "header",
            f"the first row holds numbers ({', '.join(names[:5])}...) where species names are "
            "expected.",
            "Add a header row of species names.",
        )
    for j, column in enumerate(frame.columns):
        if not numeric(frame[column].dtype):
            parsed = pd.to_numeric(frame[column], errors="coerce")
            row = int(np.flatnonzero(parsed.isna() & frame[column].notna())[0])
            raise DatasetError(
                path,
                "numeric",
                f"site row {row}{_where(row, site_ids)}, species column {j} ('{column}') holds "
                f"'{frame[column].iloc[row]}'; cells must be 0 or 1.",
                "Only the first column may hold (non-numeric) site ids; write 0/1 elsewhere.",
            )
    return frame.to_numpy(dtype=np.float64, na_value=np.nan), names, site_ids


def load_matrix(path: str | Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Read and validate a user's matrix: (float32 matrix, species names, site ids).

    A `.csv` has a header of species names and an optional first column of site ids; a
    `.npy` is a 2-D numeric array, read without ever unpickling.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            path,
            "exists",
            "the file does not exist.",
            "Check data.path in your config (or remove it to use generated data).",
        )
    suffix = path.suffix.lower()
    species_names = site_ids = None
    if suffix == ".npy":
        matrix = _read_npy(path)
    elif suffix == ".csv":
        matrix, species_names, site_ids = _read_csv(path)
    else:
        raise DatasetError(
            path,
            "format",
            f"unsupported extension '{path.suffix}'; expected .csv or .npy.",
            "Save the sites × species matrix as CSV (header of species names) or with numpy.save.",
        )
    return check_matrix(matrix, path, species_names, site_ids), species_names, site_ids


def holdout_mask(matrix: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Which presences are hidden for the held-out-presence AUC (fixed by `seed`).

    Per site, round(fraction × presences) of them, at least one when the site has two or
    more and always leaving one visible, so every site still has something to encode.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {fraction}")
    present = matrix > 0
    counts = present.sum(axis=1)
    k = np.zeros_like(counts)
    if fraction > 0:
        k = np.minimum(np.maximum(1, np.round(fraction * counts)), counts - 1).astype(np.int64)
    rng = np.random.default_rng([int(seed), 1])  # a stream separate from the generator's
    keys = np.where(present, rng.random(matrix.shape), np.inf)
    ranks = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
    return present & (ranks < k[:, None])


# ==================================================================== metrics
def heldout_auc(scores: np.ndarray, x: np.ndarray, holdout: np.ndarray) -> float:
    """ROC-AUC of `scores`: hidden presences (positives) against true absences (negatives).

    NaN when either group is empty (e.g. holdout_fraction = 0).
    """
    from sklearn.metrics import roc_auc_score

    holdout = holdout.astype(bool)
    positives = scores[holdout]
    negatives = scores[x == 0]
    if positives.size == 0 or negatives.size == 0:
        return float("nan")
    labels = np.concatenate([np.ones(positives.size), np.zeros(negatives.size)])
    return float(roc_auc_score(labels, np.concatenate([positives, negatives])))


# ==================================================================== task
class VAETask(BatchTask):
    """Denoising VAE on a presence/absence matrix (see the module docstring)."""

    name: ClassVar[str] = "vae"
    monitor: ClassVar[str] = "val_loss"
    selection_metric: ClassVar[str] = "loss"
    mode: ClassVar[str] = "min"
    figures: ClassVar[tuple[str, ...]] = ("vae_losses.png", "latent_space.png")

    def _spec(self, key: str) -> Any:
        return self.spec.get(key, SPEC_DEFAULTS[key])

    # ---------------------------------------------------------------- data
    def make_splits(self) -> dict[str, Arrays]:
        """Full matrix → whole-matrix validation → fixed-seed row split, holdout per site."""
        seed = int(self._spec("seed"))
        path = self._spec("path")
        if path:
            matrix, _, _ = load_matrix(path)
            habitat = np.full(matrix.shape[0], -1, dtype=np.int64)
        else:
            raw, habitat = generate_matrix(self.spec)
            matrix = check_matrix(raw, "<generated>")
        holdout = holdout_mask(matrix, float(self._spec("holdout_fraction")), seed)
        rows = split_rows(matrix.shape[0], self._spec("split"), seed)
        return {
            s: {
                "x": np.ascontiguousarray(matrix[rows[s]], dtype=np.float32),
                "habitat": np.ascontiguousarray(habitat[rows[s]], dtype=np.int64),
                "holdout": np.ascontiguousarray(holdout[rows[s]], dtype=bool),
            }
            for s in SPLITS
        }

    def validate(self, arrays: Mapping[str, np.ndarray], path: str | Path) -> dict[str, Any]:
        """Check one split dict; return counts for the report or raise DatasetError."""
        missing = [k for k in SPLIT_KEYS if k not in arrays]
        if missing:
            raise DatasetError(
                path,
                "arrays",
                f"the split lacks the array(s) {missing} (it holds {sorted(arrays)}).",
                "Regenerate the splits (the vae task writes x, habitat and holdout).",
            )
        x = np.asarray(arrays["x"])
        if x.ndim != 2 or x.shape[0] == 0:
            raise DatasetError(
                path,
                "2-D",
                f"x has shape {x.shape}; expected a non-empty 2-D (sites, species) matrix.",
                "Regenerate the splits.",
            )
        x = check_matrix_rows(x, path)
        n, m = x.shape
        habitat = np.asarray(arrays["habitat"])
        if habitat.shape != (n,) or not np.issubdtype(habitat.dtype, np.integer):
            raise DatasetError(
                path,
                "habitat",
                f"habitat has shape {habitat.shape} and dtype {habitat.dtype}; expected "
                f"integers of shape ({n},) (-1 where unknown).",
                "Regenerate the splits.",
            )
        holdout = np.asarray(arrays["holdout"])
        if holdout.shape != x.shape:
            raise DatasetError(
                path,
                "holdout",
                f"holdout has shape {holdout.shape}; expected {x.shape} like x.",
                "Regenerate the splits.",
            )
        holdout = holdout.astype(bool)
        stray = holdout & (x == 0)
        if stray.any():
            row = int(np.flatnonzero(stray.any(axis=1))[0])
            col = int(np.flatnonzero(stray[row])[0])
            raise DatasetError(
                path,
                "holdout",
                f"site row {row}, species column {col} is marked held out but x is 0 there; "
                "only presences can be held out.",
                "Regenerate the splits.",
            )
        return {
            "sites": int(n),
            "species": int(m),
            "prevalence": float(x.mean()),
            "habitats": int(np.unique(habitat[habitat >= 0]).size),
            "heldout_presences": int(holdout.sum()),
        }

    # ---------------------------------------------------------------- model
    def build_model(self, train: Mapping[str, np.ndarray]) -> nn.Module:
        """A fresh VAE whose output bias starts at the logit of each species' prevalence.

        Why: from the default init every species starts at probability ~0.5, and on a sparse
        matrix the first hundreds of steps only learn how rare each species is; during that
        phase the KL term pushes the posterior onto the prior and the latent space can
        collapse for good. Starting from the frequency baseline (the model to beat), training
        spends its steps on the site-to-site structure instead.
        """
        x = np.asarray(train["x"], dtype=np.float64)
        model = VariationalAutoencoder(
            int(x.shape[1]),
            int(self.training["latent_dim"]),
            int(self.training["hidden_size"]),
        )
        prevalence = np.clip(x.mean(axis=0), PROB_CLIP, 1 - PROB_CLIP)
        with torch.no_grad():
            model.decoder_network[-1].bias.copy_(
                torch.as_tensor(np.log(prevalence / (1 - prevalence)), dtype=torch.float32)
            )
        return model

    def model_args(self, model: nn.Module) -> dict[str, Any]:
        return {
            "input_dimension": int(model.input_dimension),
            "latent_dimension": int(model.latent_dimension),
            "hidden_dimension": int(model.hidden_dimension),
        }

    def model_from_args(self, args: Mapping[str, Any]) -> nn.Module:
        return VariationalAutoencoder(
            int(args["input_dimension"]),
            int(args["latent_dimension"]),
            int(args["hidden_dimension"]),
        )

    # ---------------------------------------------------------------- training
    def training_step(
        self, model: nn.Module, batch: Mapping[str, torch.Tensor], generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Noisy input, clean target: the model learns to denoise (noise_std 0 = plain VAE)."""
        clean = batch["x"].float()
        noisy = add_noise(clean, float(self.training["noise_std"]), generator)
        logits, mu, logvar = model(noisy)
        loss, recon, kl = vae_loss(logits, clean, mu, logvar, float(self.training["beta"]))
        return loss, {"train_recon": float(recon.detach()), "train_kl": float(kl.detach())}

    @torch.no_grad()
    def _encode_decode(
        self, model: nn.Module, x: np.ndarray, device: torch.device
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probabilities, mu, logvar) with z = mu, in chunks: the deterministic model."""
        model.eval()
        probs, mus, logvars = [], [], []
        for start in range(0, x.shape[0], EVAL_CHUNK):
            xb = torch.as_tensor(x[start : start + EVAL_CHUNK], dtype=torch.float32).to(device)
            mu, logvar = model.encode(xb)
            probs.append(torch.sigmoid(model.decode(mu)).cpu().double().numpy())
            mus.append(mu.cpu().double().numpy())
            logvars.append(logvar.cpu().double().numpy())
        return np.concatenate(probs), np.concatenate(mus), np.concatenate(logvars)

    def evaluate(
        self, model: nn.Module, split: Mapping[str, np.ndarray], device: torch.device
    ) -> dict[str, float]:
        """Frozen metrics: loss/recon/kl on the clean input, and the held-out-presence AUC."""
        x = np.asarray(split["x"], dtype=np.float32)
        holdout = np.asarray(split["holdout"], dtype=bool)
        beta = float(self.training["beta"])
        model.eval()
        recon = kl = 0.0
        with torch.no_grad():
            for start in range(0, x.shape[0], EVAL_CHUNK):
                xb = torch.as_tensor(x[start : start + EVAL_CHUNK]).to(device)
                mu, logvar = model.encode(xb)
                _, r, k = vae_loss(model.decode(mu), xb, mu, logvar, beta)
                recon += float(r) * xb.shape[0]
                kl += float(k) * xb.shape[0]
        n = max(x.shape[0], 1)
        recon, kl = recon / n, kl / n
        masked = np.where(holdout, 0.0, x).astype(np.float32)
        probs, _, _ = self._encode_decode(model, masked, device)
        return {
            "loss": float(recon + beta * kl),
            "recon": float(recon),
            "kl": float(kl),
            "auc": heldout_auc(probs, x, holdout),
            "bce_per_entry": float(recon / max(x.shape[1], 1)),
        }

    def predict(
        self, model: nn.Module, split: Mapping[str, np.ndarray], device: torch.device
    ) -> dict[str, np.ndarray]:
        """Per site, the reconstructed presence probability of every species (z = mu)."""
        probs, _, _ = self._encode_decode(model, np.asarray(split["x"], np.float32), device)
        width = len(str(probs.shape[1] - 1))
        return {f"p_{j:0{width}d}": probs[:, j] for j in range(probs.shape[1])}

    # ---------------------------------------------------------------- ONNX
    def onnx_graph(self, model: nn.Module) -> Any:
        """The deterministic model as deployed: presences x (B, species) -> probabilities
        (B, species), through z = mu (what `predict` writes)."""
        from ..export import OnnxGraph

        n = int(model.input_dimension)
        return OnnxGraph(
            module=_Reconstruction(model),
            example=(torch.zeros(2, n),),
            inputs=("x",),
            outputs=("probabilities",),
            dynamic_axes={"x": {0: "batch"}, "probabilities": {0: "batch"}},
            doc=(
                f"statetrain vae: x (B,{n}) 0/1 presences of a site -> probabilities (B,{n}) of "
                "each species, decoded from the posterior mean (no sampling)."
            ),
            description={
                "input_dimension": n,
                "latent_dimension": int(model.latent_dimension),
                "hidden_dimension": int(model.hidden_dimension),
            },
        )

    def onnx_probe(self, model: nn.Module) -> Arrays:
        rng = np.random.default_rng(0)
        return {"x": rng.binomial(1, 0.1, (64, int(model.input_dimension))).astype(np.float32)}

    def onnx_reference(self, model: nn.Module, split: Mapping[str, np.ndarray]) -> np.ndarray:
        x = np.asarray(split["x"], np.float32)
        return self._encode_decode(model, x, next(model.parameters()).device)[0]

    def baseline(self, train: Mapping[str, np.ndarray], split: Mapping[str, np.ndarray]) -> dict:
        """The per-species frequency model: every site gets each species' training prevalence."""
        prevalence = np.clip(
            np.asarray(train["x"], dtype=np.float64).mean(axis=0), PROB_CLIP, 1 - PROB_CLIP
        )
        x = np.asarray(split["x"], dtype=np.float64)
        bce = -(x * np.log(prevalence) + (1 - x) * np.log1p(-prevalence))
        recon = float(bce.sum(axis=1).mean())
        scores = np.broadcast_to(prevalence, x.shape)
        return {
            "loss": recon,
            "recon": recon,
            "auc": heldout_auc(scores, x, np.asarray(split["holdout"], dtype=bool)),
            "bce_per_entry": recon / max(x.shape[1], 1),
        }

    # ---------------------------------------------------------------- figures
    def plot(
        self,
        model: nn.Module,
        splits: Mapping[str, Mapping[str, np.ndarray]],
        history: Mapping[str, list],
        out: Mapping[str, str | Path],
        title: str = "",
    ) -> None:
        """Loss components per epoch, and the test sites' latent means (PCA) by habitat."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from ..plots import save_figure as save

        if "vae_losses.png" in out:
            fig, axes = plt.subplots(1, 3, figsize=(14, 4), layout="constrained")
            panels = (
                ("loss", "total loss (recon + β·KL)"),
                ("recon", "reconstruction (BCE summed over species)"),
                ("kl", "KL divergence (nats)"),
            )
            for ax, (key, label) in zip(axes, panels, strict=True):
                for prefix, style, name in (("train", "o-", "train"), ("val", "s-", "val")):
                    values = history.get(f"{prefix}_{key}") or []
                    if values:
                        epochs = history.get("epoch") or list(range(1, len(values) + 1))
                        ax.plot(epochs[: len(values)], values, style, ms=3, label=name)
                ax.set_xlabel("epoch")
                ax.set_ylabel(f"{label} per site")
                ax.set_title(label.split(" (")[0])
                ax.grid(alpha=0.3)
                ax.legend()
            fig.suptitle(title or "VAE training losses")
            save(fig, out["vae_losses.png"])

        if "latent_space.png" in out:
            test = splits["test"]
            device = next(model.parameters()).device
            _, mu, _ = self._encode_decode(model, np.asarray(test["x"], np.float32), device)
            centred = mu - mu.mean(axis=0)
            _, s, vt = np.linalg.svd(centred, full_matrices=False)
            coords = centred @ vt[:2].T
            if coords.shape[1] < 2:
                coords = np.column_stack([coords, np.zeros(len(coords))])
            var = s**2 / max(float((s**2).sum()), 1e-12)
            var = np.concatenate([var, np.zeros(2)])
            habitat = np.asarray(test["habitat"])
            fig, ax = plt.subplots(figsize=(6.5, 5.5))
            if (habitat < 0).all():
                ax.scatter(coords[:, 0], coords[:, 1], s=8, alpha=0.6, label="test sites")
            else:
                cmap = plt.get_cmap("tab10")
                for i, h in enumerate(np.unique(habitat)):
                    sel = habitat == h
                    name = f"habitat {h}" if h >= 0 else "unknown habitat"
                    ax.scatter(
                        coords[sel, 0],
                        coords[sel, 1],
                        s=8,
                        alpha=0.6,
                        color=cmap(i % 10),
                        label=name,
                    )
            ax.set_xlabel(f"latent PC1 ({100 * var[0]:.1f} % of variance)")
            ax.set_ylabel(f"latent PC2 ({100 * var[1]:.1f} % of variance)")
            ax.set_title(title or "Latent means of the test sites (PCA)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, markerscale=2)
            save(fig, out["latent_space.png"])
