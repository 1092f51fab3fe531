"""mixture: the observed domain mixture of a selection, one `mixtures` row; unselected rows are rejects."""

import pytest

from pipelines.stage import account, kept_ids
from pipelines.stages.mixture import mixture
from tests.stages.fixtures import context

P = "tiny-llava@0123456789ab"


@pytest.fixture
def ctx(tmp_path):
    return context("mixture", tmp_path)


def questions(ctx, categories: dict[str, str]):
    return ctx.rows("questions", [{"question_id": q, "asset_ids": ["a"], "question": "?", "answer": "1", "answer_type": "num",
                                   "category": c, "abilities": ["counting"], "reward_route": "rule", "generator": "g"}
                                  for q, c in categories.items()])


def difficulty(ctx, rows: dict[str, tuple[bool | None, float]]):
    """question_id -> (selected, pass_rate)"""
    return ctx.rows("difficulty", [{"difficulty_id": f"d-{q}", "question_id": q, "policy_id": P, "method": "group_stats",
                                    "pass_rate": rate, "reward_std": 0.1, "selected": selected}
                                   for q, (selected, rate) in rows.items()])


def run(table, qs, ctx, **params):
    result = mixture(table, qs, ctx, **params)
    account(mixture, table, result)  # every difficulty row kept or rejected, or AccountingError
    return result


CATEGORIES = {"c1": "counting", "c2": "counting", "c3": "counting", "b1": "bar_chart", "r1": "relations", "r2": "relations",
              "a1": "arithmetic"}


def test_weights_are_each_domains_share_of_the_selection_and_sum_to_one(ctx):
    table = difficulty(ctx, {"c1": (True, 0.5), "c2": (True, 0.25), "c3": (True, 0.75), "b1": (True, 0.5),
                             "r1": (False, 0.0), "r2": (None, 1.0), "a1": (False, 1.0)})
    result = mixture(table, questions(ctx, CATEGORIES), ctx)
    (row,) = result.out.to_pylist()
    assert row["domain_column"] == "category" and row["method"] == "observed"
    assert row["domains"] == ["bar_chart", "counting"]  # only domains the selection has, sorted
    assert row["weights"] == [1 / 4, 3 / 4] and sum(row["weights"]) == 1.0
    assert row["observed"] == pytest.approx((0.5 + 0.25 + 0.75 + 0.5) / 4)
    assert row["predicted"] is None
    counts = account(mixture, table, result)
    assert (counts.n_in, counts.n_out, counts.n_rejected) == (7, 4, 3)
    assert counts.by_reason == {"mixture.not_selected": 3}
    assert sorted(result.rejects["subject_id"].to_pylist()) == ["d-a1", "d-r1", "d-r2"]  # selected None is not selected
    assert kept_ids(mixture, table, result) == ["d-c1", "d-c2", "d-c3", "d-b1"]


def test_weights_match_the_counts_for_any_selection(ctx):
    selection = {"c1": (True, 1.0), "c2": (True, 1.0), "b1": (True, 0.0), "r1": (True, 0.5), "r2": (True, 0.5),
                 "a1": (True, 0.5), "c3": (True, 0.0)}
    (row,) = run(difficulty(ctx, selection), questions(ctx, CATEGORIES), ctx).out.to_pylist()
    expected = {"arithmetic": 1, "bar_chart": 1, "counting": 3, "relations": 2}
    assert dict(zip(row["domains"], row["weights"])) == {d: n / 7 for d, n in expected.items()}
    assert sum(row["weights"]) == pytest.approx(1.0)


def test_the_same_selection_gives_the_same_mixture_id(ctx):
    table, qs = difficulty(ctx, {"c1": (True, 1.0), "b1": (True, 0.0)}), questions(ctx, CATEGORIES)
    assert run(table, qs, ctx).out["mixture_id"].to_pylist() == run(table, qs, ctx).out["mixture_id"].to_pylist()
    other = difficulty(ctx, {"c1": (True, 1.0), "c2": (True, 1.0), "b1": (True, 0.0)})
    assert run(other, qs, ctx).out["mixture_id"][0] != run(table, qs, ctx).out["mixture_id"][0]


def test_another_question_column_can_be_the_domain(ctx):
    qs = questions(ctx, CATEGORIES)
    (row,) = run(difficulty(ctx, {"c1": (True, 1.0), "b1": (True, 0.0)}), qs, ctx, domain_column="answer_type").out.to_pylist()
    assert (row["domain_column"], row["domains"], row["weights"]) == ("answer_type", ["num"], [1.0])


def test_nothing_selected_gives_no_mixture_and_rejects_every_row(ctx):
    table = difficulty(ctx, {"c1": (False, 1.0), "b1": (False, 0.0)})
    result = mixture(table, questions(ctx, CATEGORIES), ctx)
    assert result.out.num_rows == 0 and result.kept == []
    counts = account(mixture, table, result)
    assert (counts.n_out, counts.n_rejected) == (0, 2)


def test_an_unknown_domain_column_lists_the_columns(ctx):
    with pytest.raises(ValueError, match=r"questions have no column 'family'; columns: question_id, asset_ids, question, "):
        mixture(difficulty(ctx, {"c1": (True, 1.0)}), questions(ctx, CATEGORIES), ctx, domain_column="family")


def test_a_question_selected_by_two_methods_counts_once(ctx):
    """group_stats and mcts rows of one question both selected (rules: [thinklite_online, mcts_hard])."""
    qs = questions(ctx, {"c1": "counting", "b1": "bar_chart"})
    rows = difficulty(ctx, {"c1": (True, 0.5), "b1": (True, 0.25)}).to_pylist()
    rows.append({**rows[0], "difficulty_id": "m-c1", "method": "mcts", "pass_rate": None, "mcts_iters": 9})
    table = ctx.rows("difficulty", [{k: v for k, v in r.items() if k not in ("run_id", "stage", "stage_version",
                                                                             "config_hash", "row_hash")} for r in rows])
    result = run(table, qs, ctx)
    (row,) = result.out.to_pylist()
    assert dict(zip(row["domains"], row["weights"])) == {"bar_chart": 0.5, "counting": 0.5}
    assert row["observed"] == pytest.approx(0.375)  # the mcts row has no pass rate: it is not averaged in
    assert result.rejects.to_pylist()[0]["reason"] == "mixture.same_question"
    assert result.rejects["subject_id"].to_pylist() == ["m-c1"]
