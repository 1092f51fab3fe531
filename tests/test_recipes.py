"""Every shipped recipe matches the code, and recipe mistakes are reported with what is valid."""

from pathlib import Path

import pytest

from flows.recipes import configs_dir, load_recipe
from schemas.errors import RecipeError

RECIPES = sorted((configs_dir() / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_matches_stage_signatures(path: Path):
    recipe = load_recipe(str(path))  # unknown stage, unknown parameter or wrong type raises RecipeError
    assert recipe.steps and recipe.dataset


def test_unknown_recipe_lists_the_known_ones():
    with pytest.raises(RecipeError) as error:
        load_recipe("build-wethnik")
    assert "build-wethink" in str(error.value) and "Did you mean" in str(error.value)


def test_bad_set_key_names_the_valid_keys():
    with pytest.raises(RecipeError) as error:
        load_recipe("build-wethink", ["caption.style=[coarse]"])
    message = str(error.value)
    assert "caption.styles" in message and "rollouts.group_size" in message


def test_every_problem_is_reported_at_once():
    with pytest.raises(RecipeError) as error:
        load_recipe("build-wethink", ["rollouts.group_size=many", "models.policy=no-such-profile", "nonsense"])
    assert len(error.value.problems) == 3
    assert any("group_size" in p and "integer" in p for p in error.value.problems)
    assert any("tiny-llava" in p for p in error.value.problems)  # lists the profiles there are


def test_overrides_change_the_config_hash_and_fill_defaults():
    base = load_recipe("build-wethink")
    changed = load_recipe("build-wethink", ["source.synthetic.scenes=8", "select.rule=easyr1"])
    assert changed.source["synthetic"]["scenes"] == 8
    assert {s.stage: s.params for s in changed.steps}["select"]["rule"] == "easyr1"
    assert base.config_hash != changed.config_hash
    assert "max_pixels" in {s.stage: s.params for s in base.steps}["ingest"]
