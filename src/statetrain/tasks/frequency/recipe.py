"""The config side of the recipe experts → one assembled LSTM → fine-tune (issue 19).

What the workflow (workflow/rules/common.smk, assemble.smk) reads at parse time, so that a bad
`assemble:` entry or `training.init_from` fails before any job, with one paragraph naming the
key: which data an assembly is scored on, its options with their defaults, and which file a
dataset's ``init_from`` names. No torch here: the Snakefile imports it while planning.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ... import config as stconfig
from ...config import ConfigError

# An `assemble:` entry's options and their defaults (the schema's; the schema does not fill
# defaults inside a mapping of named entries).
ASSEMBLY_DEFAULTS: dict[str, Any] = {
    "hidden_size": 64,
    "closing_weight": -30.0,
    "close_forget": True,
    "bias_unit": False,
}


def assembly_options(cfg: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The `assemble.<name>` entry with every default filled in."""
    return {**ASSEMBLY_DEFAULTS, **dict(cfg["assemble"][name])}


def assembly_spec(cfg: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The data an assembly is scored on (its experts' common data, every stream); refuses an
    entry whose experts cannot be assembled into ``hidden_size`` units.

    The members follow the rules of `experts:` (generated datasets keeping one stream each,
    otherwise identical data, every frequency covered), and each member's LSTM, at every grid
    point, must be one layer deep and small enough that the largest expert of each frequency
    fits beside the others (plus one unit with ``bias_unit: true``).
    """
    task = cfg.get("task", "frequency")
    if task != "frequency":
        raise ConfigError(
            f"`assemble` builds one frequency-task LSTM from per-frequency experts; remove it "
            f"for task {task}."
        )
    if name in cfg["experts"]:
        raise ConfigError(
            f"assemble '{name}' has the name of an `experts` combination; rename one of them."
        )
    options = assembly_options(cfg, name)
    members = list(options["experts"])
    try:
        spec = stconfig.expert_spec({**cfg, "experts": {name: members}}, name)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace(f"experts '{name}'", f"assemble '{name}'", 1)) from None
    largest: dict[float, int] = {}
    for member in members:
        stream = stconfig.dataset_spec(cfg, member)["streams"][0]
        for point in stconfig.grid_points(cfg, member, check=False):
            training = stconfig.training_config(cfg, point, member, check=False)
            if training["num_layers"] != 1:
                raise ConfigError(
                    f"assemble '{name}': member '{member}' trains {training['num_layers']} "
                    f"layers at grid point {point}; the assembly places one-layer experts side "
                    "by side. Set its training.num_layers: 1."
                )
            largest[stream] = max(largest.get(stream, 0), int(training["hidden_size"]))
    need = sum(largest.values()) + int(options["bias_unit"] is True)
    if need > options["hidden_size"]:
        raise ConfigError(
            f"assemble '{name}': the experts need {need} hidden units (the largest expert per "
            f"frequency: {', '.join(f'{f:g} Hz {h}' for f, h in sorted(largest.items()))}"
            f"{', plus the bias unit' if options['bias_unit'] is True else ''}), more than "
            f"assemble.{name}.hidden_size = {options['hidden_size']}. Make the experts smaller "
            "(their training.hidden_size) or the assembly larger."
        )
    return spec


def init_from_model(cfg: Mapping[str, Any], dataset: str) -> str | None:
    """The dataset or `assemble` entry a dataset's ``training.init_from`` names, else None (no
    init_from, or a path)."""
    value = ((cfg["datasets"].get(dataset) or {}).get("training") or {}).get("init_from")
    value = value if value is not None else cfg["training"].get("init_from")
    if value is not None and (value in cfg["datasets"] or value in cfg.get("assemble", {})):
        return str(value)
    return None


def init_from_path(
    cfg: Mapping[str, Any], dataset: str, model_file: Callable[[str], str]
) -> str | None:
    """The checkpoint a dataset's runs start from (``training.init_from``), or None.

    A name of a dataset or an `assemble` entry means that model, ``model_file(name)`` (in the
    workflow: its run at the same grid point, so that each seed's chain stays its own);
    anything else is a path, used as it is. Refused here: init_from on
    another task, a dataset starting from itself, an `experts` combination (an ExpertLSTM is
    several LSTMs, not weights of one), and an assembly of another size than the run's LSTM.
    """
    value = ((cfg["datasets"].get(dataset) or {}).get("training") or {}).get("init_from")
    value = value if value is not None else cfg["training"].get("init_from")
    if value is None:
        return None
    where = f"dataset '{dataset}': training.init_from '{value}'"
    if cfg.get("task", "frequency") != "frequency":
        raise ConfigError(
            f"{where}: starting from given weights is a frequency-task option; remove it for "
            f"task {cfg.get('task')}."
        )
    if value == dataset:
        raise ConfigError(f"{where} names the dataset itself; name another model to start from.")
    if value in cfg["experts"]:
        raise ConfigError(
            f"{where} names an `experts` combination, an ExpertLSTM of several LSTMs that "
            "cannot be the weights of one. List its members under `assemble:` and start from "
            "that assembly."
        )
    hidden = {
        stconfig.training_config(cfg, p, dataset, check=False)["hidden_size"]
        for p in stconfig.grid_points(cfg, dataset, check=False)
    }
    if value in cfg.get("assemble", {}):
        size = assembly_options(cfg, value)["hidden_size"]
        if hidden != {size}:
            raise ConfigError(
                f"{where}: the assembly has {size} hidden units, but this dataset trains "
                f"hidden_size {sorted(hidden)}. A run starts from weights of its own shape "
                f"only: set its training.hidden_size: {size} (and no hidden_size grid)."
            )
        return model_file(value)
    if value in cfg["datasets"]:
        return model_file(value)
    return str(value)
