"""Recipe contracts: within each profile the recipes differ only in the keys their methods own (mathsft.methods), so
the comparison stays fair when someone edits one recipe; and every recipe parses and trains its registered method."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO
from mathsft.config_files import load_yaml_mapping
from mathsft.methods import IDENTITY_KEYS, METHODS, method_of_recipe
from mathsft.recipes import training_keys

PROFILES = sorted(p for p in (REPO / "recipes").iterdir() if p.is_dir())


def _recipes(profile: Path) -> dict[str, dict]:
    return {path.stem: load_yaml_mapping(str(path), "recipe") for path in sorted(profile.glob("*.yaml"))}


def allowed_differences(method_a: str, method_b: str) -> set[str]:
    return {*IDENTITY_KEYS, *METHODS[method_a].owned_keys(), *METHODS[method_b].owned_keys()}


def unfair_differences(recipes: dict[str, dict]) -> list[str]:
    """Keys in which two recipes of one profile differ although neither method owns them."""
    problems = []
    names = sorted(recipes)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            keys = set(recipes[a]) | set(recipes[b])
            differing = {k for k in keys if recipes[a].get(k, "<unset>") != recipes[b].get(k, "<unset>")}
            problems += [f"{a} vs {b}: {k}" for k in sorted(differing - allowed_differences(a, b))]
    return problems


@pytest.mark.parametrize("profile", PROFILES, ids=[p.name for p in PROFILES])
def test_recipes_of_a_profile_differ_only_in_method_owned_keys(profile: Path) -> None:
    recipes = _recipes(profile)
    assert sorted(recipes) == sorted(METHODS), f"{profile.name} needs one recipe per registered method"
    for name, recipe in recipes.items():
        assert method_of_recipe(recipe).name == name, f"{profile.name}/{name}.yaml trains another method"
        assert set(recipe) <= training_keys() | {"env"}, f"{profile.name}/{name}.yaml has unknown keys"
    assert unfair_differences(recipes) == []


def test_the_parity_check_catches_an_unfair_edit() -> None:
    recipes = _recipes(REPO / "recipes" / "smoke")
    recipes["sgd"] = recipes["sgd"] | {"num_train_epochs": 9, "max_length": 64}
    assert unfair_differences(recipes) == ["adamw vs sgd: max_length", "adamw vs sgd: num_train_epochs",
                                           "lora vs sgd: max_length", "lora vs sgd: num_train_epochs"]  # fmt: skip
