"""Config validation: defaults, clear errors naming the key, datasets and grid points."""

import math

import pytest

from statetrain.config import (
    ConfigError,
    dataset_spec,
    grid_points,
    load_config,
    training_config,
    validate_config,
)
from statetrain.scripting import grid_point_name
from statetrain.tasks.frequency.validation import parse_angle

from .conftest import ROOT


@pytest.mark.parametrize("name", ["config.yaml", "quick.yaml", "learnability.yaml"])
def test_shipped_configs_are_valid(name):
    cfg = load_config(ROOT / "config" / name)
    assert "spec" in cfg["datasets"]
    assert math.isclose(dataset_spec(cfg, "spec")["phase_jitter"], math.pi)


def test_defaults_are_filled_and_scenarios_inherit_from_data():
    cfg = validate_config({"data": {"duration_s": 1.0}, "datasets": {"a": {"phase_jitter": 0}}})
    assert cfg["training"]["hidden_size"] == 64 and cfg["training"]["tbptt_steps"] == 1
    spec = dataset_spec(cfg, "a")
    assert spec["phase_jitter"] == 0.0 and spec["duration_s"] == 1.0
    assert spec["seeds"] == {"train": 1, "validation": 3, "test": 2}


@pytest.mark.parametrize(
    ("cfg", "fragment"),
    [
        ({"trainig": {}}, "'(top level)'"),
        ({"training": {"lr": -1}}, "training.lr"),
        ({"training": {"epochs": 0}}, "training.epochs"),
        ({"training": {"hidden_size": "big"}}, "training.hidden_size"),
        ({"training": {"state_reset": "never"}}, "Allowed values: epoch, stream"),
        ({"training": {"bogus": 1}}, "Known keys here"),
        ({"grid": {"lr": []}}, "grid.lr"),
        ({"grid": {"colour": [1]}}, "'colour' is not one of"),
        ({"grid": {"hidden_size": [16, "x"]}}, "hidden_size"),
        ({"datasets": {"a b": {}}}, "datasets"),
        ({"data": {"phase_jitter": "tau"}}, "phase_jitter"),
    ],
)
def test_bad_configs_name_the_key(cfg, fragment):
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    assert fragment in str(info.value)


def test_partial_user_paths_and_short_streams_are_refused():
    with pytest.raises(ConfigError, match="validation_path, test_path"):
        validate_config({"datasets": {"mine": {"train_path": "x.npy"}}})
    with pytest.raises(ConfigError, match="min_stream_length"):
        validate_config({"data": {"duration_s": 0.05}})


def test_parse_angle():
    assert parse_angle("pi/4") == pytest.approx(math.pi / 4)
    assert parse_angle("3*pi/4") == pytest.approx(3 * math.pi / 4)
    assert parse_angle(0.5) == 0.5
    with pytest.raises(ConfigError):
        parse_angle("2pi")


def test_grid_points_and_their_run_names():
    cfg = validate_config({"grid": {"hidden_size": [16, 32], "lr": [0.001, 0.003]}})
    points = grid_points(cfg)
    assert len(points) == 4 and points[0] == {"hidden_size": 16, "lr": 0.001}
    assert grid_point_name(points[1]) == "hidden_size~16/lr~0.003"
    assert training_config(cfg, points[3])["hidden_size"] == 32
    empty = validate_config({"grid": {}})
    assert grid_points(empty) == [{"seed": 42}]


def _keys(node, prefix=""):
    for key, sub in node.get("properties", {}).items():
        yield f"{prefix}{key}"
        if sub.get("type") == "object":
            yield from _keys(sub, f"{prefix}{key}.")


def test_config_readme_documents_every_schema_key():
    from statetrain.config import schema

    readme = (ROOT / "config" / "README.md").read_text()

    def documented(key):  # `lr`, `scheduler.type` or `training.scheduler.type`
        parts = key.split(".")
        return any(f"`{'.'.join(parts[i:])}`" in readme for i in range(len(parts)))

    from statetrain.tasks import TASK_NAMES

    missing = sorted({k for t in TASK_NAMES for k in _keys(schema(t)) if not documented(k)})
    assert not missing, f"config/README.md does not document: {missing}"


@pytest.mark.parametrize("task", ["frequency", "vae", "classifier"])
def test_training_defaults_come_from_the_schema_alone(task):
    """A task built by hand (or from a checkpoint) reads the same training values as one
    built from a validated config: both come from the schema, the one place they are written."""
    from statetrain.config import training_defaults
    from statetrain.tasks import get_task, task_class

    cfg = validate_config({"task": task})
    defaults = training_defaults(task)
    by_hand = get_task(task, {}, {}).training
    for key, value in defaults.items():
        if key not in ("monitor", "monitor_mode"):  # resolved to the task's by validate_config
            assert cfg["training"][key] == value, key
        assert by_hand[key] == value, key
    assert not hasattr(task_class(task), "training_defaults")
    if task == "vae":
        assert defaults["hidden_size"] == 512 and defaults["epochs"] == 50
    if task == "classifier":
        assert defaults["num_layers"] == 2 and defaults["batch_size"] == 64
    # A value given wins over the default.
    assert get_task(task, {}, {"epochs": 3}).training["epochs"] == 3


def test_run_identity_keeps_the_keys_each_kind_of_task_reads():
    """A stateful task's runs differ by tbptt_steps (it trains differently), a batch task's
    do not; a batch task's runs differ by batch_size, a stateful task's do not."""
    from statetrain.config import identity

    base = validate_config({})["training"]
    for task, reads, ignores in (
        ("frequency", "tbptt_steps", "batch_size"),
        ("sequence", "tbptt_steps", "batch_size"),
        ("classifier", "batch_size", "tbptt_steps"),
        ("vae", "batch_size", "tbptt_steps"),
    ):
        one = identity(base, ["d"], task)
        assert identity({**base, reads: 7}, ["d"], task) != one, (task, reads)
        assert identity({**base, ignores: 7}, ["d"], task) == one, (task, ignores)


def test_mlflow_experiment_defaults_to_the_configs_experiment():
    assert validate_config({})["logging"]["mlflow_experiment"] == "statetrain"
    named = validate_config({"experiment": "ucr_rerun"})
    assert named["logging"]["mlflow_experiment"] == "ucr_rerun"
    mine = validate_config({"experiment": "x", "logging": {"mlflow_experiment": "mine"}})
    assert mine["logging"]["mlflow_experiment"] == "mine"


def test_a_classifier_test_path_alone_is_the_benchmark_split_not_a_partial_set():
    """`test_path` alone means the classifier's own test split; for the frequency task it is
    one of three files, and alone it is refused."""
    ok = validate_config(
        {
            "task": "classifier",
            "datasets": {
                "d": {
                    "path": "x.npy",
                    "labels_path": "y.npy",
                    "test_path": "t.npy",
                    "test_labels_path": "u.npy",
                }
            },
        }
    )
    assert dataset_spec(ok, "d")["test_path"] == "t.npy"
    with pytest.raises(ConfigError, match="some but not all of its files"):
        validate_config({"datasets": {"d": {"test_path": "t.npy"}}})


def test_a_dataset_may_have_its_own_grid_over_the_same_keys():
    """The default experiment's chain fans out over seeds while the seed-loop baseline runs
    once: datasets.<name>.grid replaces `grid` for that dataset's runs."""
    cfg = validate_config(
        {
            "datasets": {"spec": {"grid": {}}, "w0": {"phase_jitter": 0, "grid": {"seed": [9]}}},
            "grid": {"seed": [1, 2, 3]},
            "training": {"seed": 42},
        }
    )
    assert grid_points(cfg) == [{"seed": 1}, {"seed": 2}, {"seed": 3}]
    assert grid_points(cfg, "spec") == [{"seed": 42}]
    assert grid_points(cfg, "w0") == [{"seed": 9}]
    assert "grid" not in dataset_spec(cfg, "w0")
    for bad in ({"hidden_size": [8, 16]}, {"seed": [1], "lr": [0.1]}):
        with pytest.raises(ConfigError, match=r"datasets\.spec\.grid varies") as exc:
            validate_config({"datasets": {"spec": {"grid": bad}}, "grid": {"seed": [1, 2]}})
        assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match=r"datasets\.spec\.grid"):  # {} stands for seed
        validate_config({"datasets": {"spec": {"grid": {}}}, "grid": {"lr": [0.1, 0.2]}})
    with pytest.raises(ConfigError, match="hidden_size"):  # its values are checked as well
        validate_config(
            {"datasets": {"spec": {"grid": {"hidden_size": [0]}}}, "grid": {"hidden_size": [8]}}
        )
