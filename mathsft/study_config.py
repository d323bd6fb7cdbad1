"""The study config of ``run_study.py``: ``--config studies/<name>.yaml`` plus command-line overrides, validated in
full before the study writes anything.

Per-method settings are mappings keyed by the method names of the registry (``mathsft.methods``)::

    recipes: {adamw: recipes/smoke/adamw.yaml, sgd: recipes/smoke/sgd.yaml, lora: recipes/smoke/lora.yaml}
    learning_rates: {sgd: [0.1, 0.3]}      # a grid per method; without one, the recipe's rate
    seeds: [1, 2]                          # each grid point trained once per seed (default: the recipe's seed)
    evaluation: {dataset: assets/smoke/data, max_new_tokens: 48}   # run_eval.py options

A mapping given on the command line as JSON (``--evaluation '{"limit": 8}'``) is merged key by key into the config
file's mapping, so one setting can change without restating the others.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mathsft.artifacts import check_writable_dir
from mathsft.config_files import load_yaml_mapping
from mathsft.errors import UserError, reject_unknown_keys
from mathsft.methods import METHOD_NAMES, METHODS, get_method, method_of_recipe

LAUNCHERS = ("python", "accelerate")
# Set by the study itself for every run; an override would make runs collide or lie about their grid point.
RESERVED_OVERRIDES = {"config", "output_dir", "learning_rate", "resume_from_checkpoint", "overwrite"}
MAPPING_FIELDS = ("recipes", "learning_rates", "evaluation", "train_overrides")


@dataclass
class StudyConfig:
    """Arguments of ``run_study.py``: ``--config studies/<name>.yaml`` plus command-line overrides."""

    # ---- Where ----
    study_dir: str = field(default="runs/study", metadata={"help": "Output folder of the study: train/, eval/."})
    report_dir: str | None = field(default=None, metadata={"help": "Report folder (default: <study_dir>/report)."})

    # ---- Training ----
    methods: list[str] = field(
        default_factory=lambda: list(METHOD_NAMES),
        metadata={"help": f"Methods to run, a subset of {', '.join(METHOD_NAMES)}."},
    )
    recipes: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "train_sft.py recipe of each method: {method: path} (JSON on the CLI)."}
    )
    learning_rates: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Learning-rate grid per method: {method: [rates]}; default: the recipe's rate."},
    )
    lora_ranks: list[int] | None = field(
        default=None,
        metadata={"help": "LoRA rank grid (default: the recipe's rank); lora_alpha keeps the recipe's alpha/r."},
    )
    train_overrides: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "train_sft.py options applied to every run: a YAML mapping, or JSON on the command line."},
    )
    seeds: list[int] | str | None = field(
        default=None,
        metadata={
            "help": "Training seeds, e.g. [1, 2] (JSON on the CLI): each grid point is trained once per seed; "
            "the data split (split_seed) stays fixed. Default: one run at the recipe's seed."
        },
    )

    # ---- Launcher ----
    launcher: str = field(
        default="python",
        metadata={"help": "How to start train_sft.py: python (one process) or accelerate.", "choices": list(LAUNCHERS)},
    )
    accelerate_config: str | None = field(
        default=None, metadata={"help": "accelerate config file (launcher: accelerate)."}
    )
    num_processes: int = field(default=1, metadata={"help": "Training processes (GPUs) for accelerate launch."})

    # ---- Evaluation ----
    evaluation: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "run_eval.py options of every evaluation, e.g. {dataset: ..., max_new_tokens: 1024}."},
    )

    # ---- Behaviour ----
    overwrite: bool = field(
        default=False,
        metadata={"help": "Redo stages whose recorded command differs (removes only their own old outputs)."},
    )
    dry_run: bool = field(default=False, metadata={"help": "Print the plan and the commands, run nothing."})
    stream: bool = field(default=False, metadata={"help": "Also echo every stage's output on the console."})
    log_scale: bool = field(default=False, metadata={"help": "Log-scale loss axes in the report's figures."})
    eval_checkpoints: bool = field(
        default=False,
        metadata={
            "help": "Also evaluate every saved checkpoint of each method's best run(s) (accuracy by step); "
            "the training runs then keep all their checkpoints."
        },
    )

    @property
    def report_path(self) -> Path:
        return Path(self.report_dir) if self.report_dir else Path(self.study_dir) / "report"

    # Typed views of the mappings, valid after normalize_config.
    @property
    def recipe_paths(self) -> dict[str, str]:
        return dict(self.recipes or {})  # type: ignore[arg-type]

    @property
    def rate_grids(self) -> dict[str, list[float]]:
        return dict(self.learning_rates or {})  # type: ignore[arg-type]

    @property
    def eval_settings(self) -> dict[str, Any]:
        return dict(self.evaluation or {})  # type: ignore[arg-type]

    @property
    def overrides(self) -> dict[str, Any]:
        return dict(self.train_overrides or {})  # type: ignore[arg-type]

    @property
    def seed_list(self) -> list[int | None]:
        """The seeds of every grid point: ``[None]`` (the recipe's seed, today's run names) without ``seeds``."""
        return list(self.seeds) if self.seeds else [None]  # type: ignore[arg-type]


def parse_study_args(argv: list[str] | None = None) -> StudyConfig:
    """``--config study.yaml`` plus CLI overrides -> a validated :class:`StudyConfig`."""
    from mathsft.cli import parse_command_line
    from mathsft.help_pages import STUDY_HELP

    argv = list(sys.argv[1:] if argv is None else argv)
    (config,), command_line = parse_command_line(
        (StudyConfig,), argv, STUDY_HELP, "run_study.py", "study config", key_kind="study"
    )
    for key in MAPPING_FIELDS:  # a mapping on the command line changes the file's mapping key by key
        from_file = command_line.config.get(key)
        if key in command_line.given and isinstance(from_file, dict):
            setattr(config, key, from_file | _mapping(getattr(config, key), key))
    normalize_config(config)
    return config


def _mapping(value: Any, key: str) -> dict[str, Any]:
    """A YAML mapping, or JSON text from the command line, as a dict."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as err:
            raise UserError(f"{key} is not a JSON mapping: {err.msg}") from err
    if not isinstance(value, dict):
        raise UserError(f"{key} must be a mapping, got {type(value).__name__}")
    return value


def _numbers(values: Any, kind: type, key: str) -> list[Any]:
    """YAML reads ``1e-5`` (no dot) as a string; grids are coerced here, and must be positive."""
    if not isinstance(values, list | tuple):
        values = [values]
    out = []
    for value in values:
        try:
            number = kind(value)
        except (TypeError, ValueError) as err:
            raise UserError(f"{key}: '{value}' is not a number") from err
        if kind is int and number != float(value):
            raise UserError(f"{key}: '{value}' is not an integer")
        if not number > 0 or number == float("inf"):
            raise UserError(f"{key}: values must be finite and > 0, got {value}")
        out.append(number)
    if not out:
        raise UserError(f"{key} is empty; leave it out to use the recipe's value")
    if len(set(out)) != len(out):
        raise UserError(f"{key} lists a value twice: {values}")
    return out


def _per_method(mapping: dict[str, Any], key: str) -> None:
    """The keys of a per-method mapping must be registered methods."""
    reject_unknown_keys([str(name) for name in mapping], METHODS, "method", key)


def normalize_config(config: StudyConfig) -> None:
    """Coerce YAML/CLI values to their types and check what the parser cannot; each failure is one line."""
    if isinstance(config.methods, str):
        config.methods = [config.methods]
    for name in config.methods:
        get_method(name)
    if not config.methods or len(set(config.methods)) != len(config.methods):
        raise UserError(f"methods must be a non-empty list of distinct methods of {', '.join(METHODS)}")
    config.methods = [m for m in METHODS if m in config.methods]  # the registry's order, for every table

    recipes = _mapping(config.recipes, "recipes")
    _per_method(recipes, "recipes")
    for method in config.methods:
        if not recipes.get(method):
            raise UserError(f"missing recipe for {method}: set recipes: {{{method}: <path>}} or drop it from methods")
    config.recipes = {m: str(recipes[m]) for m in config.methods}

    rates = _mapping(config.learning_rates, "learning_rates")
    _per_method(rates, "learning_rates")
    config.learning_rates = {m: _numbers(v, float, f"learning_rates.{m}") for m, v in rates.items()}
    if config.lora_ranks is not None:
        config.lora_ranks = _numbers(config.lora_ranks, int, "lora_ranks")

    config.seeds = _seeds(config.seeds)
    overrides = _mapping(config.train_overrides, "train_overrides")
    reserved = {"lora_r", "lora_alpha"} if config.lora_ranks is not None else set()
    reserved |= {"seed"} if config.seeds else set()
    reserved |= {"save_total_limit"} if config.eval_checkpoints else set()  # every checkpoint is kept then
    _check_overrides(overrides, reserved)
    config.train_overrides = overrides
    _check_launcher(config)

    from mathsft.evaluation import eval_args_from_mapping

    config.evaluation = _mapping(config.evaluation, "evaluation")
    eval_args_from_mapping(config.evaluation, "the study's evaluation settings")
    # The report is written last: a report_dir that cannot be a folder must fail before hours of stages, not after.
    check_writable_dir(config.study_dir, "study_dir")
    check_writable_dir(config.report_path, "report_dir")


def _check_launcher(config: StudyConfig) -> None:
    if config.launcher == "python" and config.num_processes != 1:
        raise UserError("num_processes > 1 needs launcher: accelerate (and an accelerate_config)")
    if config.num_processes < 1:
        raise UserError(f"num_processes must be >= 1, got {config.num_processes}")
    if config.launcher == "accelerate":
        if not config.accelerate_config:
            raise UserError("launcher: accelerate needs accelerate_config (e.g. accelerate_configs/single_gpu.yaml)")
        if not Path(config.accelerate_config).is_file():
            raise UserError(f"accelerate config not found: {config.accelerate_config}")


MAX_SEED = 2**32 - 1  # numpy's seed range, which transformers' set_seed also seeds


def _seeds(value: Any) -> list[int] | None:
    """``[1, 2]`` from YAML, or JSON text (``'[1, 2]'``, ``'3'``) from the command line: distinct integers."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else None
        except json.JSONDecodeError as err:
            raise UserError(f"seeds is not a JSON list of integers, e.g. '[1, 2]': {err.msg}") from err
        if value is None:
            return None
    values = value if isinstance(value, list) else [value]
    if not values:
        raise UserError("seeds is empty; leave it out to train each grid point once at the recipe's seed")
    for seed in values:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise UserError(f"seeds: {seed!r} is not an integer between 0 and {MAX_SEED}")
    if len(set(values)) != len(values):
        raise UserError(f"seeds lists a seed twice: {values}")
    return list(values)


def _check_overrides(overrides: dict[str, Any], study_owned: set[str]) -> None:
    from mathsft.cli import check_config_types
    from mathsft.configs import REPLACED_FIELDS
    from mathsft.recipes import TRAINING_DATACLASSES, training_keys

    reserved = RESERVED_OVERRIDES | study_owned
    for key, value in overrides.items():
        if key in reserved:
            raise UserError(f"train_overrides may not set '{key}': the study sets it for every run")
        if key in REPLACED_FIELDS and (key != "trust_remote_code" or value):
            raise UserError(f"train_overrides: '{key}' is not used by this project: {REPLACED_FIELDS[key]}")
        reject_unknown_keys([key], training_keys(), "train_sft.py option", "train_overrides")
        if value is None:
            raise UserError(f"train_overrides: '{key}' is null; remove it to keep the recipe's value")
    check_config_types(overrides, TRAINING_DATACLASSES, "train_overrides")


def load_recipes(config: StudyConfig) -> dict[str, dict[str, Any]]:
    """Each method's recipe mapping (with the study's train_overrides), checked to train that method."""
    recipes = {}
    for method, path in config.recipe_paths.items():
        recipe = load_yaml_mapping(path, "recipe") | config.overrides
        trains = method_of_recipe(recipe).name
        if trains != method:
            raise UserError(f"recipes.{method} {path} trains {trains}, not {method}")
        recipes[method] = recipe
    return recipes
