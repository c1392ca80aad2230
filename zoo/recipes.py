"""Registry of zoo recipes by name, imported lazily so ``digits`` never loads transformers."""

from __future__ import annotations

import importlib

from zoo.recipe_base import Recipe
from zoo.sweep_spec import load_sweep_spec

RECIPES: dict[str, tuple[str, str]] = {
    "digits": ("zoo.recipe_digits", "DigitsRecipe"),
    "minilm-topics": ("zoo.recipe_minilm_topics", "MinilmTopicsRecipe"),
    "causal-lm": ("zoo.recipe_causal_lm", "CausalLmRecipe"),
}
"""Recipe name -> (module, class)."""


class UnknownRecipeError(ValueError):
    """The recipe name is not in :data:`RECIPES`."""


BASE_RECIPES = ("causal-lm",)
"""Recipes whose base model is chosen with ``--base`` (and that can train on ``--device cuda``)."""


def make_recipe(
    name: str, steps_scale: float = 1.0, base: str | None = None, device: str = "cpu"
) -> Recipe:
    """Instantiate recipe ``name`` with its committed sweep spec.

    Raises:
        UnknownRecipeError: the name is not a known recipe (the message lists the accepted ones),
            or ``base``/``device`` given to a recipe with a fixed in-house base.
    """
    if name not in RECIPES:
        raise UnknownRecipeError(f"unknown recipe {name!r}; accepted: {', '.join(RECIPES)}")
    module_name, class_name = RECIPES[name]
    cls = getattr(importlib.import_module(module_name), class_name)
    if name in BASE_RECIPES:
        options = {"device": device} if base is None else {"device": device, "base": base}
        return cls(load_sweep_spec(name), steps_scale, **options)
    if base is not None or device != "cpu":
        raise UnknownRecipeError(
            f"recipe {name!r} has a fixed base and trains on cpu; --base and --device apply to: "
            f"{', '.join(BASE_RECIPES)}"
        )
    return cls(load_sweep_spec(name), steps_scale)
