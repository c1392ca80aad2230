"""Registry of zoo recipes by name, imported lazily so ``digits`` never loads transformers."""

from __future__ import annotations

import importlib

from zoo.recipe_base import Recipe
from zoo.sweep_spec import load_sweep_spec

RECIPES: dict[str, tuple[str, str]] = {
    "digits": ("zoo.recipe_digits", "DigitsRecipe"),
    "minilm-topics": ("zoo.recipe_minilm_topics", "MinilmTopicsRecipe"),
}
"""Recipe name -> (module, class)."""


class UnknownRecipeError(ValueError):
    """The recipe name is not in :data:`RECIPES`."""


def make_recipe(name: str, steps_scale: float = 1.0) -> Recipe:
    """Instantiate recipe ``name`` with its committed sweep spec.

    Raises:
        UnknownRecipeError: the name is not a known recipe (the message lists the accepted ones).
    """
    if name not in RECIPES:
        raise UnknownRecipeError(f"unknown recipe {name!r}; accepted: {', '.join(RECIPES)}")
    module_name, class_name = RECIPES[name]
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(load_sweep_spec(name), steps_scale)
