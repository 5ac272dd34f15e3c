"""Per-frequency experts combined into one model: the frequency task's `experts:` option.

Each member dataset trains one expert on one stream (`streams: [f]`) and selects its best grid
point on its own frozen validation split. The combined `ExpertLSTM` routes every row to the
expert of its one-hot C and is scored frozen, state carried from each stream start, on the full
validation and test splits (the same seeds, so each expert meets exactly the rows it was
scored on).
"""

from __future__ import annotations

import logging

import torch

from ...checkpoint import load_model, save_checkpoint_file
from ...io import read_json, write_json
from .model import ExpertLSTM
from .trainer import predict

log = logging.getLogger("statetrain")


def write_member_records(
    name: str,
    grid_point: str,
    members: list[str],
    order: list[int],
    member_metrics: list[dict],
    scores: dict,
    out_metrics: str,
    out_selection: str,
    *,
    extra: dict | None = None,
    criterion: str = "",
    seconds: float = 0.0,
) -> dict:
    """metrics.json and selection.json of a model made from selected experts (a combination
    or an assembly): which member serves each frequency, and why, in one place."""
    metrics = {
        "dataset": name,
        "grid_point": grid_point,
        "members": [members[i] for i in order],
        **(extra or {}),
        "engine": "torch",
        "epochs": max(m["epochs"] for m in member_metrics),
        "best_epoch": None,
        # the experts' training time, plus `seconds` of whatever made the model of them
        "train_seconds": sum(m["train_seconds"] for m in member_metrics) + seconds,
        # a member's selected grid point (best/), or the run itself (an assembly's point)
        "member_selection": {
            members[i]: member_metrics[i].get("selected", member_metrics[i].get("grid_point"))
            for i in order
        },
        "candidates": {
            m: member_metrics[i]["validation"]["overall"]["mse"] for i, m in enumerate(members)
        },
        **scores,
    }
    write_json(metrics, out_metrics)
    write_json(
        {
            "dataset": name,
            "criterion": "each expert selected on its own frozen validation split; several "
            "members of one frequency: the lowest validation MSE" + criterion,
            "selected": grid_point,
            "members": metrics["member_selection"],
        },
        out_selection,
    )
    return metrics


def combine_experts(
    name: str,
    members: list[str],
    member_streams: list[float],
    frequencies: list[float],
    model_paths: list[str],
    metrics_paths: list[str],
    split_paths: dict[str, str],
    out_model: str,
    out_metrics: str,
    out_selection: str,
) -> dict:
    """Route each row to its frequency's expert and score the combination frozen on the
    full validation and test splits; write the combined checkpoint, metrics and selection.

    Nothing here chooses on the test split: each member was selected on its own frozen
    validation split, and where several members train one frequency, the lowest validation
    MSE on their own split serves.
    """
    loaded = [load_model(p) for p in model_paths]
    member_metrics = [read_json(p) for p in metrics_paths]
    order = choose_members(members, member_streams, frequencies, member_metrics)
    model = ExpertLSTM([loaded[i][0] for i in order])
    scores = score_splits(model, split_paths, frequencies)
    payload = {
        "epoch": None,
        "model_state_dict": model.state_dict(),
        "model_args": {"experts": [loaded[i][1]["model_args"] for i in order]},
        "frequencies": list(frequencies),
        "state_reset": "stream",
        "members": [members[i] for i in order],
    }
    save_checkpoint_file(payload, out_model)
    metrics = write_member_records(
        name,
        "experts",
        members,
        order,
        member_metrics,
        scores,
        out_metrics,
        out_selection,
    )
    log.info(
        "%s: %d experts, validation MSE %.6f, test MSE %.6f (%s)",
        name,
        len(order),
        scores["validation"]["overall"]["mse"],
        scores["test"]["overall"]["mse"],
        ", ".join(f"{k} {v['mse']:.5f}" for k, v in scores["test"].items() if k != "overall"),
    )
    return metrics


def choose_members(
    members: list[str],
    member_streams: list[float],
    frequencies: list[float],
    member_metrics: list[dict],
) -> list[int]:
    """The index of the member serving each frequency, in the order of ``frequencies``.

    Expert k serves frequency k (the k-th one-hot column). Where several members train an
    expert for the same frequency (another seed, another recipe), the lowest frozen validation
    MSE on their own split wins; the test split plays no part. Shared by `combine_experts`
    and the assembly (statetrain.tasks.frequency.assemble), so both choose alike.
    """
    order = []
    for f in frequencies:
        candidates = [i for i, s in enumerate(member_streams) if s == f]
        if not candidates:
            raise ValueError(
                f"no member trains {f:g} Hz (members {members} train {member_streams}); give "
                "one dataset with `streams: [f]` per frequency."
            )
        val = [member_metrics[i]["validation"]["overall"]["mse"] for i in candidates]
        order.append(candidates[val.index(min(val))])
        if len(candidates) > 1:
            log.info(
                "%g Hz: %s chosen among %s (validation MSE %s)",
                f,
                members[order[-1]],
                [members[i] for i in candidates],
                ", ".join(f"{v:.6f}" for v in val),
            )
    return order


def score_splits(
    model: torch.nn.Module, split_paths: dict[str, str], frequencies: list[float]
) -> dict[str, dict]:
    """Frozen metrics per split, the state from a zero state at every stream start."""
    from . import FrequencyTask
    from .metrics import evaluate_streams

    scores = {}
    for split, path in split_paths.items():
        data = FrequencyTask({"frequencies": list(frequencies)}).read_split(path)
        pred = predict(model, data, "stream")
        scores[split] = evaluate_streams(data.y, pred, data.starts, data.columns, frequencies)
    return scores
