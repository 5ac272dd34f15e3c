"""Frozen scores of the sequence task and the baselines it must beat, on the same rows.

Regression, per target in the target's own units: MSE, RMSE, MAE, R². Classification:
per-class precision, recall and F1, macro AUC-PR and AUC-ROC (one vs rest), balanced
accuracy and accuracy. `loss` is what selection reads: the mean normalised MSE over the
targets (regression) or the class-weighted cross-entropy (classification).

Baselines (what a trained model has to beat), fitted on the training split only and scored
on exactly the rows the model is scored on:

* persistence: the target's last value known at the row's time (y(t) for horizon ≥ 1,
  y(t−1) for horizon 0; the training mean at a stream's first row);
* ar: a linear autoregression of each target on its own last `ar_order` values, least
  squares on the training split (missing lags at a stream start: the training mean);
* seasonal: seasonal naive, y(t + h − m·k) for the config's period m (k the smallest that
  reaches a known value), when `data.period` is given;
* prevalence (classification): every step predicted with the training split's class shares;
* logistic (classification): a logistic regression on the current step's inputs alone (no
  memory), fitted on the training split with balanced class weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .data import SeriesTable


def _safe(value: float) -> float:
    return float(value) if math.isfinite(value) else float("nan")


def regression_metrics(
    truth: np.ndarray, pred: np.ndarray, names: Sequence[str]
) -> dict[str, float]:
    """MSE, RMSE, MAE and R² per target (keys `mse_<target>`, ...)."""
    out: dict[str, float] = {}
    for j, name in enumerate(names):
        err = pred[:, j] - truth[:, j]
        mse = float(np.mean(err**2))
        var = float(np.var(truth[:, j]))
        out[f"mse_{name}"] = mse
        out[f"rmse_{name}"] = math.sqrt(mse)
        out[f"mae_{name}"] = float(np.mean(np.abs(err)))
        out[f"r2_{name}"] = _safe(1.0 - mse / var) if var > 0 else float("nan")
    return out


def classification_metrics(
    labels: np.ndarray, probs: np.ndarray, classes: Sequence[Any]
) -> dict[str, float]:
    """Per-class precision/recall/F1, macro AUC-PR/AUC-ROC, balanced accuracy, accuracy."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    k = probs.shape[1]
    pred = probs.argmax(axis=1)
    out: dict[str, float] = {"accuracy": float(np.mean(pred == labels))}
    recalls, aps, rocs = [], [], []
    for c in range(k):
        name = str(classes[c])
        tp = float(np.sum((pred == c) & (labels == c)))
        n_pred = float(np.sum(pred == c))
        n_true = float(np.sum(labels == c))
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_true if n_true else float("nan")
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        out[f"precision_{name}"] = precision
        out[f"recall_{name}"] = recall
        out[f"f1_{name}"] = _safe(f1)
        if n_true:
            recalls.append(recall)
        present = labels == c
        if 0 < present.sum() < len(labels):
            aps.append(float(average_precision_score(present, probs[:, c])))
            rocs.append(float(roc_auc_score(present, probs[:, c])))
    if k == 2:  # binary: the positive class's scores, as is usual
        aps, rocs = aps[1:], rocs[1:]
    out["balanced_accuracy"] = float(np.mean(recalls)) if recalls else float("nan")
    out["auc_pr"] = float(np.mean(aps)) if aps else float("nan")
    out["auc_roc"] = float(np.mean(rocs)) if rocs else float("nan")
    return out


def cross_entropy(labels: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> float:
    """Class-weighted mean cross-entropy (torch's CrossEntropyLoss(weight=...) formula)."""
    p = np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)
    w = weights[labels]
    return float(np.sum(-w * np.log(p)) / np.sum(w))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def class_weights(labels: np.ndarray, k: int) -> np.ndarray:
    """n / (K · n_k) of the training split (a class absent from it gets weight 1)."""
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    return np.where(counts > 0, len(labels) / (k * np.maximum(counts, 1)), 1.0)


# ---------------------------------------------------------------------------------- baselines
def _lagged(series: np.ndarray, table: SeriesTable, rows: np.ndarray, lag: int, fill: float):
    """series[row − lag] within the row's stream, `fill` where that is before its start."""
    stream_start = table.starts[np.searchsorted(table.starts, rows, side="right") - 1]
    src = rows - lag
    out = np.full(len(rows), fill, dtype=np.float64)
    ok = src >= stream_start
    out[ok] = series[src[ok]]
    return out


def _ar_design(series, table, rows, horizon, order, fill):
    first = 0 if horizon >= 1 else 1
    lags = [_lagged(series, table, rows, lag, fill) for lag in range(first, first + order)]
    return np.column_stack([np.ones(len(rows)), *lags])


def fit_ar(train: SeriesTable, order: int) -> dict[str, Any]:
    """Least-squares AR(order) coefficients per target on the training split."""
    rows = train.scored_rows()
    h = train.columns.horizon
    truth = train.ahead()
    coefs, means = [], []
    for j in range(truth.shape[1]):
        series = train.targets[:, j]
        mean = float(series.mean())
        design = _ar_design(series, train, rows, h, order, mean)
        coef, *_ = np.linalg.lstsq(design, truth[:, j], rcond=None)
        coefs.append(coef)
        means.append(mean)
    return {"order": order, "coefs": coefs, "means": means}


def regression_baselines(
    train: SeriesTable,
    table: SeriesTable,
    *,
    ar_order: int,
    period: int | None,
) -> dict[str, np.ndarray]:
    """Each baseline's predictions (rows scored, targets) on `table`."""
    rows = table.scored_rows()
    h = table.columns.horizon
    means = train.targets.mean(axis=0)
    k = table.targets.shape[1]
    persistence = np.column_stack(
        [_lagged(table.targets[:, j], table, rows + h, max(h, 1), means[j]) for j in range(k)]
    )
    ar = fit_ar(train, ar_order)
    ar_pred = np.column_stack(
        [
            _ar_design(table.targets[:, j], table, rows, h, ar_order, ar["means"][j])
            @ ar["coefs"][j]
            for j in range(k)
        ]
    )
    out = {"persistence": persistence, "ar": ar_pred}
    if period:
        lag = period * max(1, math.ceil(h / period))
        out["seasonal"] = np.column_stack(
            [_lagged(table.targets[:, j], table, rows + h, lag, means[j]) for j in range(k)]
        )
    return out


def stateless_classifier(train: SeriesTable, table: SeriesTable, k: int) -> np.ndarray:
    """Class probabilities (rows scored, K) of a multinomial logistic regression on the
    current step's inputs alone, fitted on the training split with balanced class weights:
    what the label is without any memory, so the LSTM's state has to earn its keep."""
    from sklearn.linear_model import LogisticRegression

    mean, std = train.x.mean(axis=0), train.x.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    fit = LogisticRegression(max_iter=2000, class_weight="balanced")
    fit.fit((train.x[train.scored_rows()] - mean) / std, train.ahead())
    probs = np.zeros((len(table.scored_rows()), k))
    probs[:, fit.classes_] = fit.predict_proba((table.x[table.scored_rows()] - mean) / std)
    return probs


def baseline_scores(
    train: SeriesTable,
    table: SeriesTable,
    spec: Mapping[str, Any],
    classes: Sequence[Any] | None,
) -> dict[str, float]:
    """Every baseline's metrics on `table`, keys `<baseline>_<metric>`."""
    scores: dict[str, float] = {}
    if table.columns.objective == "classification":
        k = len(classes or [])
        prevalence = np.bincount(train.ahead(), minlength=k) / len(train.ahead())
        labels = table.ahead()
        probs = {
            "prevalence": np.tile(prevalence, (len(labels), 1)),
            "logistic": stateless_classifier(train, table, k),
        }
        for name, p in probs.items():
            for key, value in classification_metrics(labels, p, classes).items():
                scores[f"{name}_{key}"] = value
        return scores
    truth = table.ahead()
    preds = regression_baselines(
        train, table, ar_order=int(spec.get("ar_order", 5)), period=spec.get("period")
    )
    for name, pred in preds.items():
        for key, value in regression_metrics(truth, pred, table.columns.targets).items():
            scores[f"{name}_{key}"] = value
    return scores
