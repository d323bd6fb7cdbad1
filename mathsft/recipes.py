"""Training recipes: ``--config recipe.yaml`` plus command-line overrides, parsed into the three dataclasses of
``train_sft.py`` by ``trl.TrlParser``. The bench parses recipes through here too, so both read them alike."""

from __future__ import annotations

import dataclasses

import yaml
from trl import ModelConfig, TrlParser

from mathsft.config_files import config_path, load_yaml_mapping
from mathsft.configs import DataArguments, MathSFTConfig
from mathsft.errors import UserError, reject_unknown_keys

TRAINING_DATACLASSES = (DataArguments, MathSFTConfig, ModelConfig)
TrainingArgs = tuple[DataArguments, MathSFTConfig, ModelConfig]


def training_keys() -> set[str]:
    """Every key a recipe (or ``--key value`` override) may set."""
    return {f.name for cls in TRAINING_DATACLASSES for f in dataclasses.fields(cls)}


def check_recipe_keys(argv: list[str]) -> None:
    """Unknown recipe keys are an error (with a suggestion), before any dataclass validation runs."""
    path = config_path(argv)
    if path is not None:
        reject_unknown_keys(load_yaml_mapping(path, "recipe"), training_keys() | {"env"}, "recipe", path)


def parse_training_args(argv: list[str]) -> TrainingArgs:
    """A recipe plus overrides -> ``(DataArguments, MathSFTConfig, ModelConfig)``; each failure is one line."""
    parser = TrlParser(TRAINING_DATACLASSES)
    try:
        check_recipe_keys(argv)
        data_args, training_args, model_args = parser.parse_args_and_config(args=argv)
    except FileNotFoundError as err:
        raise UserError(f"recipe not found: {err.filename}") from err
    except yaml.YAMLError as err:
        raise UserError(f"malformed recipe YAML: {str(err).splitlines()[0]}") from err
    except (ValueError, TypeError) as err:
        raise UserError(f"bad recipe: {str(err).splitlines()[0]}") from err
    return data_args, training_args, model_args
