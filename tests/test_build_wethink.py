"""End to end: `build-wethink` as a real Prefect flow on a real DuckLake catalog, offline.

One small dataset is built once for the session (the `built` fixture in conftest.py) (synthetic scenes plus an image folder of broken
files), then re-run unchanged, then re-run with one stage parameter changed. Every check reads the
lake back with SQL, the way a user would.
"""

import json

import pytest

from stores.lake import Lake

pytestmark = pytest.mark.slow


def sql(built, query):
    with Lake.open(built["root"], read_only=True) as lake:
        return lake.sql(query).to_pylist()


def test_first_run_is_version_1_and_every_table_has_rows(built):
    assert built["first"]["version"] == 1
    with Lake.open(built["root"], read_only=True) as lake:
        for table in ("assets", "captions", "questions", "cots", "verdicts", "rollouts", "difficulty", "mixtures",
                      "policies", "rejects", "versions", "stage_stats"):
            assert lake.table(table, version=1).num_rows > 0, table


def test_every_stage_accounts_for_every_item_by_sql(built):
    run_id = built["first"]["run_id"]
    counts = {r["stage"]: r for r in sql(built, f"SELECT * FROM stage_stats WHERE run_id = '{run_id}'")}
    assert len(counts) == 12
    for stage, row in counts.items():
        assert row["n_in"] == row["n_out"] + row["n_rejected"], stage
        rejected = sql(built, f"""SELECT count(DISTINCT input_id) AS n FROM rejects
                                  WHERE stage = '{stage}' AND run_id = '{run_id}'""")[0]["n"]
        assert rejected >= row["n_rejected"], stage  # every rejected item has a reject row with its reason
        assert sum(json.loads(row["rejected_by_reason"]).values()) == row["n_rejected"]
    # Each stage takes exactly what the one before it passed on.
    chain = ["dedup", "caption", "synthesize_qa"]
    for before, after in zip(chain, chain[1:]):
        assert counts[after]["n_in"] == counts[before]["n_out"], after
    assert counts["ingest"]["n_out"] == sql(built, "SELECT count(*) AS n FROM assets AT (VERSION => 1)")[0]["n"]
    n_questions = sql(built, "SELECT count(*) AS n FROM questions AT (VERSION => 1)")[0]["n"]
    assert counts["distill_cot"]["n_in"] == n_questions
    for before, after in [("distill_cot", "verify"), ("verify", "rollouts"), ("rollouts", "difficulty"), ("difficulty", "select")]:
        assert counts[after]["n_in"] == counts[before]["n_out"], after
    assert counts["grpo"]["n_in"] == counts["select"]["n_out"] > 0
    assert counts["rescore"]["n_in"] == counts["rollouts"]["n_out"]
    # Every model call of the run is counted by exactly one stage.
    assert sum(row["n_calls_made"] for row in counts.values()) == built["first"]["model_calls"]["misses"] > 0


def test_bad_media_is_quarantined_with_its_reason_and_the_run_completes(built):
    rows = sql(built, "SELECT subject_id, reason, detail FROM rejects AT (VERSION => 1) WHERE stage = 'ingest'")
    got = {r["subject_id"].split(":")[-1]: r["reason"] for r in rows}
    for name, reason in built["expected_rejects"].items():
        assert got[name] == reason, name
    assert all(r["detail"] for r in rows)
    # Real photos are ingested; the scripted teacher only knows synthetic scenes, so caption refuses them, with a reason.
    photos = sql(built, "SELECT asset_id FROM assets WHERE source = 'image_folder'")
    assert len(photos) == 2
    reasons = sql(built, f"SELECT reason FROM rejects WHERE stage = 'caption' AND subject_id IN "
                         f"({', '.join(repr(p['asset_id']) for p in photos)})")
    assert {r["reason"] for r in reasons} == {"caption.engine_error"}


def test_planted_duplicates_are_linked_not_deleted(built):
    rows = sql(built, "SELECT source_ref, duplicate_of FROM assets WHERE source = 'synthetic' AND duplicate_of IS NOT NULL")
    assert rows, "the recipe plants near-copies; dedup must link them"
    originals = {r["asset_id"]: r["source_ref"] for r in sql(built, "SELECT asset_id, source_ref FROM assets")}
    for row in rows:
        assert "#" in row["source_ref"] and originals[row["duplicate_of"]] == row["source_ref"].split("#")[0]
    captioned = {r["asset_id"] for r in sql(built, "SELECT DISTINCT asset_id FROM captions")}
    assert not captioned & {r["duplicate_of"] and r["source_ref"] for r in rows}


def test_rerun_with_the_same_config_does_no_work_and_commits_nothing(built):
    again = built["again"]
    assert again["version"] is None and again["previous_version"] == 1
    assert not any(again["added"].values()) and not any(again["removed"].values())
    assert all(step["n_shards_cached"] == step["n_shards"] for step in again["steps"]), again["steps"]
    assert [v["version"] for v in sql(built, "SELECT version FROM versions")] == [1, 2]  # 2 = the changed run


def test_a_changed_parameter_reruns_that_stage_and_later_ones_only(built):
    changed = built["changed"]
    assert changed["version"] == 2
    steps = {s["stage"]: s for s in changed["steps"]}
    order = [s["stage"] for s in changed["steps"]]
    for stage in order[: order.index("select")]:
        assert steps[stage]["n_shards_cached"] == steps[stage]["n_shards"], stage
    for stage in order[order.index("select"):]:
        assert steps[stage]["n_shards_cached"] == 0, stage


def test_time_travel_and_diff_see_each_version(built):
    with Lake.open(built["root"], read_only=True) as lake:
        v1 = {r["reason"] for r in lake.sql("SELECT DISTINCT reason FROM difficulty AT (VERSION => 1) WHERE reason IS NOT NULL").to_pylist()}
        v2 = {r["reason"] for r in lake.sql("SELECT DISTINCT reason FROM difficulty AT (VERSION => 2) WHERE reason IS NOT NULL").to_pylist()}
        assert all(r.startswith("dapo:") for r in v1) and all(r.startswith("easyr1:") for r in v2 if "grpo" not in r)
        changes = lake.diff(1, 2)
        assert changes["assets"] == {"added": [], "removed": [], "changed": []}
        assert changes["difficulty"]["changed"] and changes["policies"]["added"]
        assert lake.table("policies", version=1).num_rows == 1 and lake.table("policies").num_rows == 2


def test_grpo_trains_a_new_policy_and_rescore_scores_questions_for_it(built):
    (policy,) = sql(built, "SELECT policy_id, base_policy_id, path, steps FROM policies AT (VERSION => 1)")
    assert policy["policy_id"] != policy["base_policy_id"] and policy["steps"] == 4
    by_policy = {r["policy_id"]: r["n"] for r in sql(built, "SELECT policy_id, count(*) AS n FROM difficulty AT (VERSION => 1) GROUP BY 1")}
    assert by_policy.get(policy["policy_id"], 0) > 0 and by_policy.get(policy["base_policy_id"], 0) > 0
    rescored = sql(built, f"SELECT count(*) AS n FROM rollouts AT (VERSION => 1) WHERE policy_id = '{policy['policy_id']}'")
    assert rescored[0]["n"] > 0


def test_each_run_leaves_a_markdown_summary_artifact(built):
    from prefect.artifacts import Artifact

    artifact = Artifact.get("run-wethink")
    assert artifact is not None and artifact.type == "markdown"
    assert "Committed **version 2**" in artifact.data and "| select |" in artifact.data


def test_only_transient_engine_errors_are_retried():
    from flows.recipe_flow import _is_transient
    from prefect.states import Completed, Failed
    from schemas.errors import AccountingError, EngineTimeout, EngineUnavailable, RecipeError

    def failed(error):
        return Failed(data=error)

    assert _is_transient(None, None, failed(EngineTimeout("slow")))
    assert _is_transient(None, None, failed(EngineUnavailable("down")))
    assert not _is_transient(None, None, failed(AccountingError("s", 1, 0, 0, ["x"])))
    assert not _is_transient(None, None, failed(RecipeError("r", ["bad"])))
    assert not _is_transient(None, None, Completed())


def test_a_rerun_without_its_staged_shards_replays_every_model_call(tmp_path):
    """Stage work is redone (the shard files are gone) but no model is asked again: the call cache answers."""
    import shutil

    from flows.recipe_flow import run
    from stores.lake import dataset_root

    small = ["source.synthetic.scenes=4", "rollouts.group_size=4", "rescore.group_size=4", "grpo.max_steps=2"]
    first = run("build-wethink", small, dataset="replay", home=tmp_path)
    assert first["model_calls"]["misses"] > 0
    shutil.rmtree(dataset_root(tmp_path, "replay") / "staging")
    again = run("build-wethink", small, dataset="replay", home=tmp_path)
    assert again["model_calls"]["misses"] == 0 and again["model_calls"]["hits"] > 0
    # The replayed answers rebuild exactly the same rows. (GRPO itself trains again: training is not
    # a model call, and a CPU run is not bit-for-bit repeatable, so the policy and its rescore differ.)
    for table in ("assets", "captions", "questions", "cots", "verdicts", "mixtures"):
        assert again["added"].get(table, 0) == 0 and again["removed"].get(table, 0) == 0, table
    assert all(step["n_shards_cached"] == 0 for step in again["steps"])
