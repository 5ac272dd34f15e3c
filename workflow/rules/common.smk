# Config validation and the helpers every rule file uses. All the logic lives in the
# statetrain library, so a script run by hand sees exactly what a rule sees.
import re

import pandas as pd
from snakemake.utils import Paramspace

from statetrain import config as stconfig
from statetrain.scripting import grid_point_name
from statetrain.tasks import task_info

# Validate against workflow/schemas/config.schema.yaml, fill the defaults, fail before any job.
_validated = stconfig.validate_config(config)
config.clear()
config.update(_validated)

SPLITS = stconfig.SPLITS
TASK = task_info(
    config["task"]
)  # frequency | vae | classifier: see src/statetrain/tasks
DATA_EXT = "npz" if TASK.batch else "npy"
DATASETS = list(config["datasets"])
SPECS = {name: stconfig.dataset_spec(config, name) for name in DATASETS}
POINTS = stconfig.grid_points(config)
# The grid as wildcards, one path segment `key~value` per key. Paramspace lives here, on the
# workflow side, so that the library needs no snakemake; statetrain.scripting.grid_point_name
# spells the same names.
GRID = Paramspace(pd.DataFrame(POINTS), param_sep="~")
# Run names per dataset: the same grid everywhere, except that with an empty grid a scenario
# may set its own training.seed (one run named seed~<its seed>).
POINT_NAMES = {
    name: [grid_point_name(p) for p in stconfig.grid_points(config, name)]
    for name in DATASETS
}


# Expert combinations (frequency task): one ExpertLSTM from several one-stream datasets.
EXPERTS = dict(config["experts"])
SPECS.update({name: stconfig.expert_spec(config, name) for name in EXPERTS})
DATASET_RE = "|".join(re.escape(name) for name in DATASETS)
EXPERTS_RE = "|".join(re.escape(name) for name in EXPERTS) or "(?!x)x"


wildcard_constraints:
    **{key: "[^/]+" for key in POINTS[0]},
    dataset="|".join(re.escape(name) for name in [*DATASETS, *EXPERTS]),
    split="train|validation|test",


def split_file(dataset, split):
    """The user's file when a frequency scenario names one, else the prepared split (batch
    tasks always prepare their splits: a user's file is split by generate_data)."""
    if not TASK.batch and SPECS[dataset].get(f"{split}_path"):
        return SPECS[dataset][f"{split}_path"]
    return f"results/data/{dataset}/{split}.{DATA_EXT}"


def split_input(wildcards):
    return split_file(wildcards.dataset, wildcards.split)


def train_inputs(wildcards):
    files = {s: split_file(wildcards.dataset, s) for s in stconfig.SPLITS}
    for s in stconfig.SPLITS:
        files[f"{s}_report"] = f"results/data/{wildcards.dataset}/{s}.validation.json"
    return files


def grid_point(wildcards):
    """The grid point of a train job, values cast back to plain Python types."""
    point = {}
    for key, value in GRID.instance(wildcards).items():
        value = value.item() if hasattr(value, "item") else value
        point[key] = None if isinstance(value, float) and value != value else value
    return point


def train_params(wildcards):
    return stconfig.training_config(config, grid_point(wildcards), wildcards.dataset)


def run_labels(wildcards):
    return {
        "dataset": wildcards.dataset,
        "grid_point": grid_point_name(grid_point(wildcards)),
    }


def run_files(dataset, filename):
    return [
        f"results/runs/{dataset}/{name}/{filename}" for name in POINT_NAMES[dataset]
    ]


def select_inputs(wildcards):
    return {
        "metrics": run_files(wildcards.dataset, "metrics.json"),
        "models": run_files(wildcards.dataset, "best_model.pth"),
    }


def sweep_histories(wildcards):
    return run_files(wildcards.dataset, "training_history.json")


def final_outputs():
    outputs = ["results/sweep/summary.csv", "results/sweep/headline.csv"]
    if not TASK.batch:
        outputs.append("results/plots/learnability.png")
    for name in EXPERTS:
        outputs += [
            f"results/best/{name}/best_model.pth",
            f"results/plots/{name}/graph1.png",
            f"results/plots/{name}/graph2.png",
        ]
    for dataset in DATASETS:
        outputs += [
            f"results/best/{dataset}/best_model.pth",
            f"results/plots/{dataset}/sweep_loss_curves.png",
        ]
        outputs += [f"results/plots/{dataset}/{name}" for name in TASK.figures]
        outputs += run_files(dataset, "loss_curves.png")
        if config["export"]["onnx"]:
            outputs += [
                f"results/best/{dataset}/model.onnx",
                f"results/best/{dataset}/onnx_check.json",
            ]
    return outputs
