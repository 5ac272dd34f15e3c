"""One place that turns YAML into a validated experiment: defaults, datasets, grid points.

The Snakefile and every script call these functions, so a config that Snakemake accepts is the
config a script run by hand accepts, with the same defaults and the same error messages.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import itertools
import json
import math
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .validation import is_number

SPLITS = ("train", "validation", "test")
# Training keys that do not change the weights a run converges to: raising `epochs` continues
# a run, `threads` only pins the BLAS pool (results are reproducible at a fixed count), and
# `checkpoint` only decides which extra files are written.
# `early_stopping` only decides when a run stops, like `epochs`.
NON_IDENTITY_KEYS = frozenset(
    {"epochs", "threads", "max_bad_steps", "checkpoint", "early_stopping"}
)
# Training keys only one kind of task reads (mini-batch tasks, stateful tasks): they are not
# part of the other kind's identity, so a key added for one kind never restarts the other's
# runs.
BATCH_KEYS = frozenset(
    {
        "batch_size",
        "latent_dim",
        "beta",
        "noise_std",
        "dropout",
        "bidirectional",
        "pos_weight",
        "threshold",
    }
)
STATEFUL_KEYS = frozenset(
    {"engine", "forget_bias", "loss", "tbptt_steps", "mode", "window", "state_reset"}
)


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and what is allowed."""


@functools.cache
def _schema() -> dict[str, Any]:
    text = resources.files("statetrain").joinpath("schemas/config.schema.yaml").read_text()
    return yaml.safe_load(text)


@functools.cache
def schema(task: str = "frequency") -> dict[str, Any]:
    """The config schema of `task`, built once per process and shared: callers only read it
    (a 10,000-point grid validates every point). Batch tasks swap the frequency task's `data`
    keys for their own."""
    sch = copy.deepcopy(_schema())
    defs = sch.pop("$defs")
    if task != "frequency":
        props = copy.deepcopy(defs[f"{task}_data"])
        props["split"] = {**copy.deepcopy(defs["split_fractions"]), "default": {}}
        sch["properties"]["data"]["properties"] = props
    training = sch["properties"]["training"]["properties"]
    for key, sub in defs.get(f"{task}_training", {}).get("properties", {}).items():
        training[key]["default"] = sub["default"]
    scenario = sch["properties"]["datasets"]["additionalProperties"]["oneOf"][1]
    scenario["properties"] = copy.deepcopy(sch["properties"]["data"]["properties"])
    # A scenario may override training keys (no defaults here: they come from `training`).
    overrides = copy.deepcopy(sch["properties"]["training"])
    overrides.pop("default", None)
    for sub in overrides["properties"].values():
        sub.pop("default", None)
    scenario["properties"]["training"] = overrides
    own_grid = copy.deepcopy(sch["properties"]["grid"])  # a scenario's own grid (grid_of)
    own_grid.pop("default", None)
    own_grid["description"] = "This dataset's own grid, replacing `grid` for its runs."
    scenario["properties"]["grid"] = own_grid
    return sch


def training_defaults(task: str = "frequency") -> dict[str, Any]:
    """Every `training` key's default for `task`, read from the schema: the one place a default
    is written, so a model rebuilt from a checkpoint or built by hand trains and scores with
    the values a config would have given it."""
    out: dict[str, Any] = {}
    _fill_defaults(schema(task)["properties"]["training"], out)
    return out


def _fill_defaults(node: dict[str, Any], value: dict[str, Any]) -> None:
    """Fill schema defaults, recursing only through declared `properties`.

    Dataset scenarios (under `additionalProperties`) deliberately stay sparse: a key a scenario
    leaves out is inherited from `data`, not reset to the schema default.
    """
    for key, sub in node.get("properties", {}).items():
        if key not in value and "default" in sub:
            value[key] = copy.deepcopy(sub["default"])
        if isinstance(value.get(key), dict) and sub.get("type") == "object":
            _fill_defaults(sub, value[key])


def _deepest(err: Any) -> Any:
    """For "not valid under any of the given schemas", the sub-error that explains why
    (e.g. 'datasets.f1.training.epochs: 0 is less than the minimum of 1')."""
    from jsonschema.exceptions import best_match

    while err.validator in ("oneOf", "anyOf") and err.context:
        # The branch that got furthest into the value names the key that is really wrong
        # (datasets.spec.seeds: 5 is "not an object", not "datasets.spec is not null").
        depth = max(len(e.absolute_path) for e in err.context)
        deepest = [e for e in err.context if len(e.absolute_path) == depth]
        inner = [e for e in deepest if e.validator != "type" or len(deepest) == 1]
        err = best_match(inner or deepest)
    return err


def _format_error(err: Any) -> str:
    where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
    sub = err.schema if isinstance(err.schema, dict) else {}
    allowed = ""
    if err.validator == "type" and isinstance(err.instance, str) and is_number(err.instance):
        allowed = (
            f" YAML reads '{err.instance}' as text: write exponents with a sign and a dot "
            "(1.0e+12, 1.0e-3) or write the number out."
        )
    elif "enum" in sub:
        allowed = f" Allowed values: {', '.join(map(str, sub['enum']))}."
    elif err.validator == "additionalProperties":
        allowed = f" Known keys here: {', '.join(sorted(sub.get('properties', {})))}."
    elif err.validator == "propertyNames" and "enum" in sub.get("propertyNames", {}):
        allowed = f" Allowed keys: {', '.join(sub['propertyNames']['enum'])}."
    message = (
        err.message if len(err.message) <= 300 else f"{err.message[:200]} … {err.message[-80:]}"
    )
    return f"config key '{where}': {message}.{allowed}"


# A real experiment config holds a few hundred values; YAML aliases can make a 550-byte file
# expand to billions (an "alias bomb"), which validation would then walk.
MAX_CONFIG_VALUES = 100_000
MAX_GRID_POINTS = 100_000
MAX_CONFIG_DEPTH = 32


def _check_size(cfg: Any) -> None:
    """Count the config's values as a tree (aliases expanded), stopping at the limit."""
    count = 0
    stack: list[tuple[Any, int]] = [(cfg, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_CONFIG_VALUES or depth > MAX_CONFIG_DEPTH:
            raise ConfigError(
                f"Invalid configuration: it expands to more than {MAX_CONFIG_VALUES:,} values "
                f"or nests deeper than {MAX_CONFIG_DEPTH} levels (YAML aliases '*name' "
                "repeating a large anchor do that). Write the values out instead of aliasing "
                "them; config/README.md documents every key."
            )
        if isinstance(node, Mapping):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node)


def _non_finite(node: Any, where: str = "") -> list[str]:
    """Key paths holding NaN or ±Inf: JSON Schema's minimum/maximum let NaN through (every
    comparison with NaN is false), so they are found here, before the schema runs."""
    if isinstance(node, float) and not math.isfinite(node):
        return [where or "(top level)"]
    if isinstance(node, Mapping):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in node.items())
    elif isinstance(node, (list, tuple)):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(node))
    else:
        return []
    return [bad for key, v in items for bad in _non_finite(v, key)]


def check_finite(values: Any, where: str = "") -> None:
    """ConfigError naming every NaN/Inf value; the fix is always a finite number."""
    bad = _non_finite(values, where)
    if bad:
        raise ConfigError(
            "Invalid configuration:\n  "
            + "\n  ".join(f"config key '{b}': NaN or infinity is not a usable value." for b in bad)
            + "\nGive finite numbers (YAML reads .nan and .inf as such); config/README.md "
            "documents every key and its range."
        )


def validate_config(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return a validated copy of `cfg` with every default filled in.

    Raises ConfigError naming every offending key, before any job starts.
    """
    import jsonschema

    from .tasks import TASK_NAMES, task_info

    if cfg is not None and not isinstance(cfg, Mapping):
        raise ConfigError(
            f"Invalid configuration: the top level is a {type(cfg).__name__}, not a mapping of "
            "keys. Start the file with keys such as `task:`, `data:` and `training:`."
        )
    _check_size(cfg)
    check_finite(cfg)
    cfg = copy.deepcopy(dict(cfg or {}))
    task = cfg.setdefault("task", "frequency")
    if task not in TASK_NAMES:
        raise ConfigError(
            f"Invalid configuration:\n  config key 'task': '{task}' is not a known task. "
            f"Allowed values: {', '.join(TASK_NAMES)}.\nFix it in your config file; "
            "config/README.md documents every key."
        )
    info = task_info(task)
    sch = schema(task)
    training = cfg.setdefault("training", {})
    if isinstance(training, dict):
        # null monitor = the task's; a monitor you name is minimised unless you say otherwise
        default_mode = "min"
        if training.get("monitor") is None:
            training["monitor"], default_mode = info.monitor, info.mode
        if training.get("monitor_mode") is None:
            training["monitor_mode"] = default_mode
    _fill_defaults(sch, cfg)
    validator = jsonschema.Draft202012Validator(sch)
    errors = sorted(
        (_deepest(e) for e in validator.iter_errors(cfg)),
        key=lambda e: list(map(str, e.absolute_path)),
    )
    if errors:
        lines = "\n  ".join(_format_error(e) for e in errors)
        raise ConfigError(
            f"Invalid configuration:\n  {lines}\n"
            "Fix the key(s) above in your config file; config/README.md documents every key."
        )
    if cfg["logging"]["mlflow_experiment"] is None:  # one MLflow experiment per config
        cfg["logging"]["mlflow_experiment"] = cfg["experiment"] or "statetrain"
    for name in cfg["datasets"]:
        cfg["datasets"][name] = cfg["datasets"][name] or {}
        dataset_spec(cfg, name)  # parse every scenario now: a bad one fails before any job
    _check_dataset_grids(cfg)
    grid_points(cfg)
    if task != "frequency" and cfg["experts"]:
        raise ConfigError(f"`experts` combines frequency-task datasets; remove it for task {task}.")
    for name in cfg["experts"]:
        expert_spec(cfg, name)
    return cfg


def load_config(*paths: str | Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Merge YAML files in order (mappings key by key, like Snakemake), then validate."""
    merged: dict[str, Any] = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Config file '{path}' does not exist. Pass an existing YAML file.")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
            detail = " ".join(str(exc).split())[:300]
            raise ConfigError(
                f"Config file '{path}' is not valid YAML text ({detail}). Fix the syntax (a "
                "YAML linter points at the line) or pass the right file."
            ) from None
        if not isinstance(data, dict):
            raise ConfigError(f"Config file '{path}' must hold a mapping at the top level.")
        deep_update(merged, data)
    if overrides:
        deep_update(merged, dict(overrides))
    return validate_config(merged)


def deep_update(base: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def dataset_spec(cfg: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The full data description of scenario `name`: `data` overridden by the scenario."""
    if name not in cfg["datasets"]:
        known = ", ".join(cfg["datasets"])
        raise ConfigError(f"Unknown dataset '{name}'. Datasets in this config: {known}.")
    spec = copy.deepcopy(dict(cfg["data"]))
    deep_update(spec, cfg["datasets"][name] or {})
    spec.pop("training", None)  # a scenario's training overrides: see training_config
    spec.pop("grid", None)  # a scenario's own grid: see grid_of
    from .tasks import task_class

    # What the schema cannot say of one scenario (sums, combinations, physics): the task's.
    return task_class(cfg.get("task", "frequency")).check_spec(name, spec)


def check_split_files(name: str, spec: Mapping[str, Any]) -> None:
    """A scenario that replaces its splits by the user's files gives all three, each its own
    (for tasks whose `train_path`/`validation_path`/`test_path` mean exactly that)."""
    given = [s for s in SPLITS if f"{s}_path" in spec]
    if given and len(given) != len(SPLITS):
        missing = ", ".join(f"{s}_path" for s in SPLITS if s not in given)
        raise ConfigError(
            f"dataset '{name}' gives some but not all of its files; add {missing} "
            "(user data replaces all three generated splits)."
        )
    _distinct_files(name, {s: spec[f"{s}_path"] for s in given})


def _distinct_files(name: str, paths: Mapping[str, str]) -> None:
    """One file given for two splits would score the model on its own training data."""
    seen: dict[str, str] = {}
    for split, path in paths.items():
        key = str(Path(path).resolve())
        if key in seen:
            raise ConfigError(
                f"dataset '{name}': {split}_path and {seen[key]}_path name the same file "
                f"'{path}'. Validation and test must be data the model never trained on; give "
                "each split its own file."
            )
        seen[key] = split


def expert_spec(cfg: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The data of an expert combination: its members' common data with every stream.

    Each member must be a generated dataset keeping exactly one stream, the members must
    cover every frequency (several members of one frequency compete on their own frozen
    validation), and apart from `streams` their data must be identical (so that the combined
    model is scored on the very splits its experts were scored on).
    """
    members = cfg["experts"][name]
    if name in cfg["datasets"]:
        raise ConfigError(f"experts '{name}' has the name of a dataset; rename one of them.")
    unknown = [m for m in members if m not in cfg["datasets"]]
    if unknown:
        raise ConfigError(
            f"experts '{name}': {unknown} are not datasets; known: {', '.join(cfg['datasets'])}."
        )
    specs = [dataset_spec(cfg, m) for m in members]
    base = {k: v for k, v in specs[0].items() if k != "streams"}
    for member, spec in zip(members, specs, strict=True):
        streams = spec.get("streams") or []
        if len(streams) != 1 or user_paths(spec):
            raise ConfigError(
                f"experts '{name}': member '{member}' must be a generated dataset with exactly "
                f"one stream (e.g. streams: [1]); it has streams {streams or 'all'}."
            )
        if {k: v for k, v in spec.items() if k != "streams"} != base:
            raise ConfigError(
                f"experts '{name}': member '{member}' has other data settings than "
                f"'{members[0]}'; experts must differ only in `streams`."
            )
    covered = {spec["streams"][0] for spec in specs}
    if covered != set(base["frequencies"]):
        raise ConfigError(
            f"experts '{name}': the members cover frequencies {sorted(covered)}, but the data "
            f"has {base['frequencies']}; give at least one member per frequency."
        )
    return base


def user_paths(spec: Mapping[str, Any]) -> dict[str, str]:
    return {s: spec[f"{s}_path"] for s in SPLITS if f"{s}_path" in spec}


def grid_of(cfg: Mapping[str, Any], dataset: str | None = None) -> dict[str, list]:
    """The grid a dataset's runs fan out over: its own `grid` where the scenario sets one,
    else the config's `grid`."""
    scenario = (cfg["datasets"].get(dataset) or {}) if dataset else {}
    grid = scenario["grid"] if "grid" in scenario else cfg.get("grid")
    return dict(grid or {})


def _points(cfg: Mapping[str, Any], grid: Mapping[str, list], dataset: str | None) -> list:
    if grid:
        size = math.prod(len(v) for v in grid.values())
        if size > MAX_GRID_POINTS:
            raise ConfigError(
                f"The grid has {size:,} points, more than {MAX_GRID_POINTS:,}: every point is "
                "a training run. Split the sweep into several configs or use fewer values."
            )
        keys = list(grid)
        return [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*grid.values())]
    scenario = (cfg["datasets"].get(dataset) or {}) if dataset else {}
    seed = (scenario.get("training") or {}).get("seed", cfg["training"]["seed"])
    return [{"seed": seed}]


def grid_points(
    cfg: Mapping[str, Any], dataset: str | None = None, *, check: bool = True
) -> list[dict[str, Any]]:
    """Every combination of the grid's values (the dataset's own grid where it has one), in a
    stable order.

    An empty grid means one run at the `training` values; it is named by its seed (the
    dataset's own `training.seed` when the scenario overrides it) so that the run directory
    still says what it is.
    """
    points = _points(cfg, grid_of(cfg, dataset), dataset)
    if check:  # each point must give a valid training section (validate_config checks once)
        groups: dict[str, str] = {}
        for name in [dataset] if dataset else list(cfg["datasets"]):
            # datasets with the same training overrides and the same grid check alike
            scenario = cfg["datasets"].get(name) or {}
            key = json.dumps([scenario.get("training"), grid_of(cfg, name)], sort_keys=True)
            groups.setdefault(key, name)
        for name in groups.values():
            grid = grid_of(cfg, name)
            own = _points(cfg, grid, name)
            # The schema constrains each training key on its own (no rule spans two keys), so
            # checking every grid value once against the schema checks every combination: a
            # 10,000-point grid costs tens of validations, not 10,000. Rules that span keys
            # (window mode) run per point below, in plain Python.
            for key, values in grid.items():
                for value in values:
                    training_config(cfg, {**own[0], key: value}, name)
            if not grid:
                training_config(cfg, own[0], name)
            for point in own:
                training_config(cfg, point, name, check=False)
    return points


def _check_dataset_grids(cfg: Mapping[str, Any]) -> None:
    """A dataset's own grid must vary the keys the config's grid varies (an empty grid stands
    for `seed`): every run directory of an experiment is named by the same keys."""
    keys = sorted(cfg.get("grid") or {}) or ["seed"]
    for name, scenario in cfg["datasets"].items():
        if scenario and "grid" in scenario:
            own = sorted(scenario["grid"] or {}) or ["seed"]
            if own != keys:
                raise ConfigError(
                    f"datasets.{name}.grid varies {', '.join(own)}, but the config's grid "
                    f"varies {', '.join(keys)}: run directories are named by the config's grid "
                    "keys, so a dataset's own grid must use the same keys (other values, or {} "
                    "for one run when the config's grid varies only seed). Change one of them."
                )


@functools.cache
def _training_validator(task: str) -> Any:
    """One compiled validator of a task's `training` section per process (every grid point
    of every dataset is checked with it)."""
    import jsonschema

    return jsonschema.Draft202012Validator(schema(task)["properties"]["training"])


def training_config(
    cfg: Mapping[str, Any],
    point: Mapping[str, Any],
    dataset: str | None = None,
    *,
    check: bool = True,
) -> dict[str, Any]:
    """The `training` section of one run: `training`, then the scenario's own `training`
    overrides, then the grid point's values; validated (`check=False`: only the rules that
    span several keys, for a point whose values `grid_points` has checked)."""

    training = copy.deepcopy(dict(cfg["training"]))
    if dataset is not None:
        deep_update(training, (cfg["datasets"].get(dataset) or {}).get("training") or {})
    training.update(point)
    where = f"grid point {dict(point)}" + (f" of dataset '{dataset}'" if dataset else "")
    if check:
        check_finite(dict(point), "training")
    errors = (
        list(_training_validator(cfg.get("task", "frequency")).iter_errors(training))
        if check
        else []
    )
    if errors:
        msgs = "; ".join(f"'{'.'.join(map(str, e.absolute_path))}': {e.message}" for e in errors)
        raise ConfigError(
            f"{where} gives an invalid training section: {msgs}. "
            "Fix the values listed under `grid:`."
        )
    if training["mode"] == "window":
        if training["state_reset"] != "stream":
            raise ConfigError(
                f"{where}: training.mode 'window' starts every window from a "
                "zero state at the stream start; set training.state_reset: stream."
            )
        if training["scheduler"]["type"] != "none":
            raise ConfigError(
                f"{where}: training.mode 'window' sets the learning rate itself "
                "(it cools as the window grows); set training.scheduler.type: none."
            )
        window = training["window"]
        decay = max(window["signal_decay"], window["polish_signal_decay"])
        top_lr = max(training["lr"], window["polish_lr"])
        if top_lr * decay >= 1:
            raise ConfigError(
                f"{where}: training.window.signal_decay (or polish_signal_decay) {decay:g} at "
                f"lr {top_lr:g} would shrink the weights on S by a factor "
                f"1 - lr · decay = {1 - top_lr * decay:g} per step, flipping their sign; "
                "keep lr · decay well below 1 (e.g. 100 at lr 3e-3: 0.7 per step)."
            )
        if window["polish_optimizer"] == "lbfgs" and window["polish_ema"] > 0:
            raise ConfigError(
                f"{where}: training.window.polish_ema averages the iterates of Adam's "
                "polishing steps, and polish_optimizer lbfgs takes none (each polishing epoch "
                "is one L-BFGS run whose end is validated); set polish_ema: 0 or "
                "polish_optimizer: adam."
            )
    if training["early_stopping"].get("after_polishing") and not (
        training["mode"] == "window" and training["window"]["polish_lr"] > 0
    ):
        raise ConfigError(
            f"{where}: training.early_stopping.after_polishing counts the patience from the "
            "first polishing epoch, and this run never polishes (it needs training.mode: "
            "window and training.window.polish_lr > 0); set one, or after_polishing: false."
        )
    return training


def identity(
    training: Mapping[str, Any], data_digests: Iterable[str] = (), task: str = "frequency"
) -> dict[str, Any]:
    """What a run's weights depend on: the training keys the task reads (but
    NON_IDENTITY_KEYS), and the data."""
    from .tasks import task_info

    unused = BATCH_KEYS if task_info(task).stateful else STATEFUL_KEYS
    ident = {
        k: v for k, v in sorted(training.items()) if k not in NON_IDENTITY_KEYS and k not in unused
    }
    if task != "frequency":
        ident["task"] = task
    ident["data"] = list(data_digests)
    return ident


def config_hash(ident: Mapping[str, Any]) -> str:
    blob = json.dumps(ident, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
