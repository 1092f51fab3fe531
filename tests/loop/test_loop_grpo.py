"""`loop-grpo` with two rounds through the real flow: each round trains from the last round's policy,
selects on that policy's difficulty rows only, never touches the held-out questions, and reports."""

import json

import pytest
from typer.testing import CliRunner

from flows.cli import app

from .conftest import LOOP_OVERRIDES

pytestmark = pytest.mark.slow


def rounds_of(sql) -> list[dict]:
    return sql("SELECT * FROM loop_rounds ORDER BY round")


def test_two_rounds_train_two_policies_each_from_the_last(looped, sql):
    first, second = rounds_of(sql)
    start = sql("SELECT DISTINCT policy_id FROM rollouts WHERE stage = 'rollouts'")
    assert [r["policy_id"] for r in start] == [first["scored_by"]]  # round 1 starts from the recipe's policy
    policies = {p["policy_id"]: p for p in sql("SELECT policy_id, base_policy_id, kind, steps FROM policies")}
    assert set(policies) == {first["policy_id"], second["policy_id"]} and len(policies) == 2
    assert policies[first["policy_id"]]["base_policy_id"] == first["scored_by"]
    assert second["scored_by"] == first["policy_id"] == policies[second["policy_id"]]["base_policy_id"]
    assert all(p["kind"] == "grpo" and p["steps"] == 2 for p in policies.values())


def test_each_new_policy_has_its_own_rollouts_and_difficulty_rows(looped, sql):
    first, second = rounds_of(sql)
    difficulty = {r["policy_id"]: r["n"] for r in sql("SELECT policy_id, count(*) AS n FROM difficulty WHERE method = 'group_stats' GROUP BY 1")}
    rollouts = {r["policy_id"]: r["n"] for r in sql("SELECT policy_id, count(DISTINCT question_id) AS n FROM rollouts GROUP BY 1")}
    for policy_id in (first["scored_by"], first["policy_id"], second["policy_id"]):
        assert difficulty[policy_id] > 0 and rollouts[policy_id] == difficulty[policy_id], policy_id
    assert first["n_rescored"] == second["n_rescored"] == difficulty[second["policy_id"]]  # subset: all


def test_each_round_selects_on_the_last_round_policy_only(looped, sql):
    first, second = rounds_of(sql)
    held_out = {r["question_id"] for r in sql("SELECT question_id FROM splits WHERE split = 'held_out'")}
    marked = {r["policy_id"]: r for r in sql("""SELECT policy_id, count(selected) AS n_judged, count(*) AS n,
                                                 count(*) FILTER (WHERE selected) AS n_selected
                                                 FROM difficulty WHERE method = 'group_stats' GROUP BY 1""")}
    # Round 1 judged the starting policy's rows, round 2 the first trained policy's; no round judged the last one's.
    for round_row in (first, second):
        judged = marked[round_row["scored_by"]]
        assert judged["n_judged"] == judged["n"] - len(held_out) == round_row["n_candidates"]
        assert judged["n_selected"] == round_row["n_selected"]
    assert marked[second["policy_id"]]["n_judged"] == 0
    counts = {(r["stage"], r["step_index"]): r for r in sql("SELECT * FROM stage_stats")}
    for round_row in (first, second):
        select_index, _, grpo_index, _ = round_row["step_indexes"]
        assert counts[("select", select_index)]["n_in"] == round_row["n_candidates"]
        assert counts[("grpo", grpo_index)]["n_in"] == round_row["n_selected"] == round_row["n_trained"]


def test_held_out_questions_are_set_aside_and_never_selected(looped, sql):
    splits = {r["split"]: r["n"] for r in sql("SELECT split, count(*) AS n FROM splits GROUP BY 1")}
    assert splits["held_out"] > 0 and splits["train"] > splits["held_out"]
    selected_held_out = sql("""SELECT count(*) AS n FROM difficulty d JOIN splits s USING (question_id)
                               WHERE s.split = 'held_out' AND d.selected IS NOT NULL""")
    assert selected_held_out[0]["n"] == 0
    # ... yet every policy was measured on them.
    measured = sql("""SELECT policy_id, count(DISTINCT r.question_id) AS n FROM rollouts r JOIN splits s USING (question_id)
                      WHERE s.split = 'held_out' GROUP BY 1""")
    assert len(measured) == 3 and all(r["n"] == splits["held_out"] for r in measured)
    assert all(r["n_held_out"] == splits["held_out"] for r in rounds_of(sql))


def test_every_step_of_every_round_accounts_for_its_items(looped, sql):
    rows = sql("SELECT * FROM stage_stats ORDER BY step_index")
    assert [r["stage"] for r in rows][-8:] == ["select", "mixture", "grpo", "rescore"] * 2
    assert [r["step_index"] for r in rows] == list(range(len(rows)))
    for row in rows:
        assert row["n_in"] == row["n_out"] + row["n_rejected"], row
        assert sum(json.loads(row["rejected_by_reason"]).values()) == row["n_rejected"], row
    assert [s["stage"] + str(s.get("round", "")) for s in looped["summary"]["steps"]][-4:] == ["select2", "mixture2", "grpo2", "rescore2"]


def test_the_report_has_one_entry_per_round_and_round_two_held_out_reward(looped, monkeypatch):
    monkeypatch.setenv("THINKMILL_HOME", str(looped["home"]))
    result = CliRunner().invoke(app, ["report", "loop", "--dataset", "loop", "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [r["round"] for r in report["rounds"]] == [1, 2] and report["version"] == looped["summary"]["version"]
    first, second = report["rounds"]
    assert second["trained_from"] == first["policy_id"] and first["trained_from"] == report["start"]["policy_id"]
    assert 0.0 <= second["held_out_reward"] <= 1.0 and second["n_held_out_scored"] == report["n_held_out"] > 0
    assert report["start"]["held_out_reward"] is not None
    assert sum(second["histogram"]) == second["n_paired"] == sum(second["histogram_before"]) > 0
    assert second["mean_pass_rate_before"] == pytest.approx(first["mean_pass_rate"], abs=1e-9)  # round 2 starts where round 1 ended
    assert report["thresholds"] == {"min_easy_pass_rate": 0.9, "max_hard_pass_rate": 0.1}


def test_the_report_prints_a_table_for_people(looped, monkeypatch):
    monkeypatch.setenv("THINKMILL_HOME", str(looped["home"]))
    monkeypatch.setenv("COLUMNS", "250")
    report = looped["summary"]["loop"]
    result = CliRunner().invoke(app, ["report", "loop", "-d", "loop", "--version", str(report["version"])])
    assert result.exit_code == 0, result.output
    assert "held-out reward" in result.output and "3 rows" in result.output  # round 0 (the start) and two rounds
    for entry in report["rounds"]:
        assert entry["policy_id"] in result.output
    assert "pass rate ≥ 0.9" in result.output  # the thresholds are stated


def test_the_run_artifact_holds_the_round_table(looped):
    from prefect.artifacts import Artifact

    artifact = Artifact.get("run-loop")
    assert "## Loop rounds" in artifact.data
    assert "| select (round 2) |" in artifact.data and "| 2 | tiny-llava-grpo-grpo@" in artifact.data


def test_report_errors_name_what_exists(looped, monkeypatch):
    monkeypatch.setenv("THINKMILL_HOME", str(looped["home"]))
    result = CliRunner().invoke(app, ["report", "loop", "-d", "loop", "--version", "7"])
    assert "its versions are: 1" in str(result.exception)


def test_a_rerun_of_the_same_loop_does_no_work_and_commits_nothing(looped):
    from flows.recipe_flow import run

    again = run("loop-grpo", LOOP_OVERRIDES, home=looped["home"])
    assert again["version"] is None and again["previous_version"] == looped["summary"]["version"]
    # Only `holdout` works again: it reads the splits the first run committed (a committed split always wins),
    # so its input changed; it writes the same rows, and everything after it is replayed from the cache.
    assert [s["stage"] for s in again["steps"] if s["n_shards_cached"] != s["n_shards"]] == ["holdout"]
    assert again["loop"]["rounds"] == looped["summary"]["loop"]["rounds"]  # the report of the version that stands
