"""modomodo: what the stage checks before any pilot runs (domains, splits, rejects); the pilots themselves
run in tests/test_modomodo.py and through the recipe in tests/test_mix_modomodo.py."""

import pytest

from pipelines.stages.modomodo import modomodo
from tests.stages.fixtures import FakeEngine, Roles, context, ingest_scenes, true_questions


@pytest.fixture
def scenes(tmp_path):
    assets = ingest_scenes(tmp_path, scenes=6, families=["counting", "bar_chart"])
    ctx = context("modomodo", tmp_path, Roles(policy=FakeEngine(lambda r: "never asked")))
    return ctx, assets, true_questions(ctx, assets, types=("num", "des"))


def test_one_training_domain_is_refused_with_what_there_is(scenes):
    ctx, assets, questions = scenes
    with pytest.raises(ValueError) as error:
        modomodo(questions, assets, ctx)
    message = str(error.value)
    assert "1 domain(s) with enough questions to train (counting); a mixture needs two" in message
    assert "Questions by category: bar_chart (" in message and "modomodo.out_of_domain" in message
    assert ctx.engines.engine("policy").requests == []  # nothing ran


def test_the_domain_can_be_an_asset_column_read_through_the_question(scenes):
    ctx, assets, questions = scenes
    with pytest.raises(ValueError, match=r"Questions by source: synthetic \(\d+\)"):
        modomodo(questions, assets, ctx, domain_column="source", out_of_domain=[])


def test_an_unknown_domain_column_names_both_tables_columns(scenes):
    ctx, assets, questions = scenes
    with pytest.raises(ValueError, match=r"domain_column 'family' is neither a question column \(question_id, .*\) "
                                         r"nor an asset column \(asset_id, "):
        modomodo(questions, assets, ctx, domain_column="family")
