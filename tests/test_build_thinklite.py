"""End to end: `build-thinklite` as a real Prefect flow on a real DuckLake catalog, offline, at a tiny size.

Synthetic scenes -> WeThink QA -> rollouts of the tiny policy -> group statistics -> MCTS with the tiny
policy and the scripted judge -> `mcts_hard`. Every check reads the lake back with SQL.
"""

import json

import pytest

from stores.lake import Lake

pytestmark = pytest.mark.slow

OVERRIDES = ["source.synthetic.scenes=4", "rollouts.group_size=4", "mcts.max_iterations=2", "mcts.max_steps=2",
             "mcts.max_step_tokens=8"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from flows.recipe_flow import run
    from stores.lake import dataset_root

    home = tmp_path_factory.mktemp("home")
    summary = run("build-thinklite", OVERRIDES, home=home)
    return {"root": dataset_root(home, "thinklite"), "summary": summary}


def sql(built, query):
    with Lake.open(built["root"], read_only=True) as lake:
        return lake.sql(query).to_pylist()


def test_every_question_searched_has_an_mcts_row_next_to_its_group_statistics(built):
    steps = {s["stage"]: s for s in built["summary"]["steps"]}
    assert list(steps)[-3:] == ["difficulty", "mcts", "select"]
    assert steps["mcts"]["n_in"] > 0 and steps["mcts"]["n_in"] == steps["mcts"]["n_out"] + steps["mcts"]["n_rejected"]
    rows = sql(built, "SELECT question_id, method, mcts_iters, mcts_path, detail FROM difficulty")
    searched = {r["question_id"] for r in rows if r["method"] == "mcts"}
    assert len(searched) == steps["mcts"]["n_out"]
    assert searched <= {r["question_id"] for r in rows if r["method"] == "group_stats"}
    for row in (r for r in rows if r["method"] == "mcts"):
        detail = json.loads(row["detail"])
        assert (detail["max_iterations"], detail["max_steps"], detail["max_step_tokens"], detail["open_ended"]) == (2, 2, 8, True)
        assert detail["prefix"] == "continued" and detail["policy_requests"] >= 1
        assert row["mcts_iters"] in (None, 1, 2) and (row["mcts_path"] is None) == (row["mcts_iters"] is None)


def test_select_keeps_exactly_the_unsolved_and_the_late_solved_and_marks_them(built):
    rows = sql(built, "SELECT difficulty_id, method, mcts_iters, selected, reason FROM difficulty")
    mcts = [r for r in rows if r["method"] == "mcts"]
    # two iterations at most: nothing is solved after the fifth, so exactly the unsolved are kept
    assert {r["difficulty_id"] for r in mcts if r["selected"]} == {r["difficulty_id"] for r in mcts if r["mcts_iters"] is None}
    assert all("unsolved" in r["reason"] for r in mcts if r["selected"])
    assert all(r["selected"] is None for r in rows if r["method"] == "group_stats")  # no rule here reads them
    dropped = sql(built, "SELECT subject_id, reason FROM rejects WHERE stage = 'select'")
    assert {r["subject_id"] for r in dropped} == {r["difficulty_id"] for r in mcts if not r["selected"]}
    assert {r["reason"] for r in dropped} <= {"select.mcts_hard"}


def test_every_stage_accounts_for_every_item(built):
    counts = sql(built, "SELECT stage, n_in, n_out, n_rejected FROM stage_counts")
    assert {c["stage"] for c in counts} >= {"rollouts", "difficulty", "mcts", "select"}
    assert all(c["n_in"] == c["n_out"] + c["n_rejected"] for c in counts)
