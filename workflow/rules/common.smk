# Config validation and the helpers every rule file uses. All the logic lives in the
# statetrain library, so a script run by hand sees exactly what a rule sees.
import re

import pandas as pd
from snakemake.utils import Paramspace

from statetrain import config as stconfig
from statetrain.experiment import split_paths
from statetrain.layout import Layout
from statetrain.scripting import grid_point_name
from statetrain.tasks import task_info
from statetrain.tasks.frequency import recipe

# Validate against workflow/schemas/config.schema.yaml, fill the defaults, fail before any job.
_validated = stconfig.validate_config(config)
config.clear()
config.update(_validated)

SPLITS = stconfig.SPLITS
TASK = task_info(
    config["task"]
)  # frequency | vae | classifier: see src/statetrain/tasks
DATA_EXT = TASK.split_suffix
DATASETS = list(config["datasets"])
SPECS = {name: stconfig.dataset_spec(config, name) for name in DATASETS}
POINTS = stconfig.grid_points(config, check=False)  # validate_config checked them
# The grid as wildcards, one path segment `key~value` per key. Paramspace lives here, on the
# workflow side, so that the library needs no snakemake; statetrain.scripting.grid_point_name
# spells the same names.
GRID = Paramspace(pd.DataFrame(POINTS), param_sep="~")
# Where every file lives (statetrain/layout.py): results/, or results/<experiment>/ for a
# config that names its experiment. Each is a path template with a {dataset} wildcard.
LAYOUT = Layout.of(config)
ROOT = LAYOUT.root
DATA = LAYOUT.data
BEST = LAYOUT.best
PLOTS = LAYOUT.plots
SWEEP = LAYOUT.sweep
LOGS = LAYOUT.logs
RUNS = LAYOUT.runs.replace("{grid_point}", GRID.wildcard_pattern)
# Run names per dataset: the same grid everywhere, except that with an empty grid a scenario
# may set its own training.seed (one run named seed~<its seed>).
POINT_NAMES = {
    name: [grid_point_name(p) for p in stconfig.grid_points(config, name, check=False)]
    for name in DATASETS
}


# Expert combinations (frequency task): one ExpertLSTM from several one-stream datasets.
EXPERTS = dict(config["experts"])
SPECS.update({name: stconfig.expert_spec(config, name) for name in EXPERTS})
SPLIT_PATHS = {name: split_paths(config, name) for name in DATASETS}
DATASET_RE = "|".join(re.escape(name) for name in DATASETS)
EXPERTS_RE = "|".join(re.escape(name) for name in EXPERTS) or "(?!x)x"

# Assemblies (frequency task): per-frequency experts placed block-diagonally into ONE LSTM
# (rule assemble_experts), once per grid point from the experts' runs at that point, and then
# selected on frozen validation like a dataset; a dataset's `training.init_from: <name>`
# starts each of its runs from the named model's run at the same grid point, so every seed of
# the grid is a chain of its own: experts → assembly → fine-tune
# (statetrain.tasks.frequency.recipe).
ASSEMBLIES = {
    name: recipe.assembly_options(config, name) for name in config["assemble"]
}
SPECS.update({name: recipe.assembly_spec(config, name) for name in ASSEMBLIES})
ASSEMBLE_RE = "|".join(re.escape(name) for name in ASSEMBLIES) or "(?!x)x"
POINT_NAMES.update(
    {
        name: [grid_point_name(p) for p in stconfig.grid_points(config, check=False)]
        for name in ASSEMBLIES
    }
)
SELECTED_RE = "|".join(re.escape(name) for name in [*DATASETS, *ASSEMBLIES])


def source_point(model, point):
    """The run of `model` that the chain at grid point `point` uses: the run of that name, or
    a model's only run (a dataset with its own training.seed and no grid)."""
    names = POINT_NAMES[model]
    if point in names:
        return point
    if len(names) == 1:
        return names[0]
    raise stconfig.ConfigError(
        f"'{model}' has no run at grid point {point} (its runs: {', '.join(names)}); give "
        "the datasets of one chain the same grid"
    )


def source_file(model, point, filename):
    return f"{LAYOUT.run_dir(model, source_point(model, point))}/{filename}"


# Per dataset, what its runs start from (training.init_from): a path, or the named model's run
# at the same grid point (built first); None without init_from.
INIT_FROM = {
    name: recipe.init_from_path(config, name, lambda model: model) for name in DATASETS
}
INIT_MODEL = {name: recipe.init_from_model(config, name) for name in DATASETS}
for _name, _model in INIT_MODEL.items():  # every chain resolvable before any job
    for _point in POINT_NAMES[_name] if _model else []:
        source_point(_model, _point)


def init_file(dataset, point):
    if INIT_MODEL[dataset]:
        return source_file(INIT_MODEL[dataset], point, "best_model.pth")
    return INIT_FROM[dataset]


wildcard_constraints:
    **{key: "[^/]+" for key in POINTS[0]},
    dataset="|".join(re.escape(name) for name in [*DATASETS, *EXPERTS, *ASSEMBLIES]),
    split="train|validation|test",


def split_file(dataset, split):
    """The user's file where the task trains on it as it is, else the prepared split."""
    # a combination or an assembly is scored on its members' full splits
    if dataset in EXPERTS or dataset in ASSEMBLIES:
        return f"{DATA.format(dataset=dataset)}/{split}.{DATA_EXT}"
    return SPLIT_PATHS[dataset][split]


def test_split(wildcards):
    """The test split a dataset's selected model is scored, plotted and exported on."""
    return split_file(wildcards.dataset, "test")


def all_splits(wildcards):
    """Every split of a dataset, in SPLITS order (a batch task's figures read all three)."""
    return [split_file(wildcards.dataset, s) for s in SPLITS]


def validation_split(wildcards):
    return split_file(wildcards.dataset, "validation")


def member_models(wildcards):
    """An experts combination's members: each one's selected model."""
    return expand(f"{BEST}/best_model.pth", dataset=EXPERTS[wildcards.dataset])


def member_metrics(wildcards):
    return expand(f"{BEST}/metrics.json", dataset=EXPERTS[wildcards.dataset])


def scored_split_reports(wildcards):
    """The validation reports of the splits a combination is scored on."""
    return expand(
        f"{DATA}/{{split}}.validation.json",
        dataset=wildcards.dataset,
        split=["validation", "test"],
    )


def member_streams(wildcards):
    """The one stream (frequency) each member of an experts combination was trained on."""
    return [SPECS[m]["streams"][0] for m in EXPERTS[wildcards.dataset]]


def task_title(wildcards):
    return f"{config['task']}, dataset {wildcards.dataset}"


def sweep_title(wildcards):
    return f"Sweep on {wildcards.dataset}: frozen {TASK.monitor}"


def dataset_title(wildcards):
    return f"dataset {wildcards.dataset}"


def split_input(wildcards):
    return split_file(wildcards.dataset, wildcards.split)


def train_inputs(wildcards):
    files = {s: split_file(wildcards.dataset, s) for s in stconfig.SPLITS}
    for s in stconfig.SPLITS:
        files[f"{s}_report"] = (
            f"{DATA.format(dataset=wildcards.dataset)}/{s}.validation.json"
        )
    if INIT_FROM[wildcards.dataset]:  # the weights a fresh run starts from
        files["init"] = init_file(
            wildcards.dataset, grid_point_name(grid_point(wildcards))
        )
    return files


# Each grid point by its wildcard values, and each (dataset, point)'s training section, built
# once: the input functions run several times per job, and a 10,000-point grid must plan in
# seconds (Paramspace.instance and schema validation per call took most of a minute).
GRID_KEYS = list(GRID.columns)
POINT_BY_VALUES = {}
for pattern, point in zip(GRID.instance_patterns, POINTS):
    values = dict(part.split("~", 1) for part in pattern.split("/"))
    POINT_BY_VALUES[tuple(values[k] for k in GRID_KEYS)] = {
        k: point.get(k) for k in GRID_KEYS
    }
TRAINING_SECTIONS = {}


def grid_point(wildcards):
    """The grid point of a train job, as the config wrote its values (a scenario's own seed,
    outside the grid's table, is cast back from its wildcard by Paramspace)."""
    key = tuple(wildcards[k] for k in GRID_KEYS)
    if key not in POINT_BY_VALUES:
        point = {}
        for name, value in GRID.instance(wildcards).items():
            value = value.item() if hasattr(value, "item") else value
            point[name] = None if isinstance(value, float) and value != value else value
        POINT_BY_VALUES[key] = point
    return POINT_BY_VALUES[key]


def train_params(wildcards):
    key = (wildcards.dataset, *(wildcards[k] for k in GRID_KEYS))
    if key not in TRAINING_SECTIONS:
        training = stconfig.training_config(
            config, grid_point(wildcards), wildcards.dataset, check=False
        )  # validate_config has checked every point of every dataset
        if INIT_FROM[wildcards.dataset]:
            training["init_from"] = init_file(
                wildcards.dataset, grid_point_name(grid_point(wildcards))
            )
        TRAINING_SECTIONS[key] = training
    return TRAINING_SECTIONS[key]


def train_priority(wildcards):
    """Longest runs first: a run's epoch cap stands for its length (the 1 Hz experts' 2,000
    against the others' 300), so that two cores do not end on one long run started last.
    """
    return int(train_params(wildcards)["epochs"])


def run_labels(wildcards):
    return {
        "dataset": wildcards.dataset,
        "grid_point": grid_point_name(grid_point(wildcards)),
    }


def run_files(dataset, filename):
    return [
        f"{LAYOUT.run_dir(dataset, name)}/{filename}" for name in POINT_NAMES[dataset]
    ]


def select_inputs(wildcards):
    return {
        "metrics": run_files(wildcards.dataset, "metrics.json"),
        "models": run_files(wildcards.dataset, "best_model.pth"),
    }


def sweep_histories(wildcards):
    return run_files(wildcards.dataset, "training_history.json")


def final_outputs():
    outputs = [f"{SWEEP}/summary.csv", f"{SWEEP}/headline.csv"]
    if not TASK.batch:
        outputs.append(f"{ROOT}/plots/learnability.png")
    for dataset in [*EXPERTS, *ASSEMBLIES]:
        outputs += [
            f"{BEST.format(dataset=dataset)}/best_model.pth",
            f"{PLOTS.format(dataset=dataset)}/graph1.png",
            f"{PLOTS.format(dataset=dataset)}/graph2.png",
        ]
    for dataset in (
        [*DATASETS, *EXPERTS, *ASSEMBLIES] if config["export"]["onnx"] else []
    ):
        outputs += [
            f"{BEST.format(dataset=dataset)}/model.onnx",
            f"{BEST.format(dataset=dataset)}/onnx_check.json",
        ]
    for dataset in DATASETS:
        outputs += [
            f"{BEST.format(dataset=dataset)}/best_model.pth",
            f"{PLOTS.format(dataset=dataset)}/sweep_loss_curves.png",
        ]
        outputs += [f"{PLOTS.format(dataset=dataset)}/{name}" for name in TASK.figures]
        outputs += run_files(dataset, "loss_curves.png")
    return outputs


# Rule assemble_experts (assemble.smk): one grid point's experts -> one LSTM.
def assembly_inputs(wildcards):
    point = run_point(wildcards)
    members = ASSEMBLIES[wildcards.dataset]["experts"]
    data = DATA.format(dataset=wildcards.dataset)
    return {
        "models": [source_file(m, point, "best_model.pth") for m in members],
        "metrics": [source_file(m, point, "metrics.json") for m in members],
        "validation": split_file(wildcards.dataset, "validation"),
        "test": split_file(wildcards.dataset, "test"),
        "reports": [f"{data}/{s}.validation.json" for s in ("validation", "test")],
    }


def run_point(wildcards):
    return grid_point_name(grid_point(wildcards))


def assembly_members(wildcards):
    return ASSEMBLIES[wildcards.dataset]["experts"]


def assembly_member_streams(wildcards):
    return [SPECS[m]["streams"][0] for m in assembly_members(wildcards)]


def assembly_frequencies(wildcards):
    return SPECS[wildcards.dataset]["frequencies"]


def assembly_settings(wildcards):
    return {k: v for k, v in ASSEMBLIES[wildcards.dataset].items() if k != "experts"}
