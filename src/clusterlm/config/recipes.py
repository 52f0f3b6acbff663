"""Run recipes shipped with the package (`clusterlm/configs/*.yaml`), found by name.

`quickstart` (what `make run` trains) and `cpu-60min` are package data, read through
`importlib.resources`, so an installed wheel has them as well as a checkout. Anywhere a run
config file is accepted, a recipe name works too: `clusterlm train cpu-60min data.dir=…`.
"""

from __future__ import annotations

import difflib
from importlib.resources import files
from pathlib import Path

from clusterlm.errors import ConfigError

QUICKSTART = "quickstart"


def recipes_dir() -> Path:
    # A regular (non-zip) install: package data are plain files next to the modules.
    return Path(str(files("clusterlm") / "configs"))


def recipe_names() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


def resolve_config_path(text: str) -> Path:
    """A run config YAML: an existing file, or the name of a shipped recipe."""
    path = Path(text)
    if path.is_file():
        return path
    recipe = recipes_dir() / f"{text}.yaml"
    if not path.suffix and recipe.is_file():
        return recipe
    names = recipe_names()
    close = difflib.get_close_matches(text, names, n=1)
    hint = f"; did you mean the recipe '{close[0]}'?" if close else f" (recipes: {', '.join(names)})"
    raise ConfigError(f"config file not found: {text}{hint}")
