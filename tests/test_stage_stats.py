"""stage_stats: per stage and run, items in/kept/rejected, model calls made and replayed, tokens, seconds.

Counting is per shard task (engines are shared between stages and shards run in threads), so the
unit test drives two "stages" that share one cached engine from many threads at once. The flow tests
run a real recipe and check the table against the dataset's call cache, then run it again on a copy
of that cache, where every call is answered from it. The last tests open a dataset written before
the rename (`stage_counts`, schema version 4) and check that it stays readable and upgrades in place.
"""

import json
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipelines.engines import EngineRegistry
from pipelines.engines.base import Request, user
from pipelines.engines.counting import CountedEngines, add_tallies
from schemas import TABLES
from stores.call_cache import CallCache
from stores.extensions import connect
from stores.lake import Lake, dataset_root

PROFILES = {"teacher": {"engine": "scripted", "model": "scripted-stage-stats-test"},
            "judge": {"engine": "scripted", "model": "scripted-stage-stats-test"}}  # one profile, two roles


def judge(text: str) -> Request:
    return Request(messages=[user(f"Is '{text}' the same as '3 red circles'?")], task="judge", prompt_version="judge-v1",
                   hints={"candidate": text, "reference": "3 red circles"})


def shard_requests(stage: str, shard: int) -> list[Request]:
    if stage == "a":  # 5 distinct calls per shard
        return [judge(f"a{shard}-{i} red circles") for i in range(5)]
    asked = [judge(f"b{shard}-{i} red circles") for i in range(3)]
    return asked + [asked[0]]  # a repeat inside one batch is asked once


def run_shards(registry: EngineRegistry) -> dict[str, list[dict]]:
    """Four shards of stage a (role teacher) and four of stage b (role judge), all at once in threads."""

    def task(stage: str, shard: int) -> tuple[str, dict]:
        counted = CountedEngines(registry)
        role = "teacher" if stage == "a" else "judge"
        for request in shard_requests(stage, shard):  # one request per call, so the threads interleave
            counted.engine(role).generate([request])
        counted.engine(role).generate(shard_requests(stage, shard))  # and the whole shard again as one batch
        return stage, counted.tally.to_dict()

    jobs = [(stage, shard) for shard in range(4) for stage in ("a", "b")]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda job: task(*job), jobs))
    return {stage: [tally for s, tally in results if s == stage] for stage in ("a", "b")}


def expected_tokens(requests: list[Request]) -> tuple[int, int]:
    from pipelines.engines.scripted import ScriptedEngine

    responses = ScriptedEngine("scripted-stage-stats-test").generate(requests)
    return sum(r.usage["prompt_tokens"] for r in responses), sum(r.usage["completion_tokens"] for r in responses)


def test_shards_of_two_stages_sharing_one_engine_count_their_own_calls(tmp_path):
    cache = CallCache(tmp_path / "calls.sqlite")
    registry = EngineRegistry(PROFILES, tmp_path, cache=cache)
    assert registry.engine("teacher") is registry.engine("judge")  # the same CachedEngine behind both roles

    per_stage = {stage: add_tallies(tallies) for stage, tallies in run_shards(registry).items()}
    a_prompt, a_completion = expected_tokens([r for s in range(4) for r in shard_requests("a", s)])
    b_prompt, b_completion = expected_tokens([r for s in range(4) for r in shard_requests("b", s)[:3]])
    # a: 5 calls per shard, then the same 5 again from the cache. b: 3 calls and their repeat one by one
    # (the repeat from the cache), then the batch of 4 all from the cache.
    assert per_stage["a"] == {"n_calls_made": 20, "n_calls_cached": 20, "prompt_tokens": a_prompt, "completion_tokens": a_completion}
    assert per_stage["b"] == {"n_calls_made": 12, "n_calls_cached": 20, "prompt_tokens": b_prompt, "completion_tokens": b_completion}
    assert registry.cache_counts() == {"misses": 32, "hits": 40} and len(cache) == 32

    again = EngineRegistry(PROFILES, tmp_path, cache=CallCache(cache.path))  # a re-run: everything is stored
    per_stage = {stage: add_tallies(tallies) for stage, tallies in run_shards(again).items()}
    assert per_stage["a"] == {"n_calls_made": 0, "n_calls_cached": 40, "prompt_tokens": 0, "completion_tokens": 0}
    assert per_stage["b"] == {"n_calls_made": 0, "n_calls_cached": 32, "prompt_tokens": 0, "completion_tokens": 0}


def test_without_a_call_cache_every_request_is_a_call_made(tmp_path):
    counted = CountedEngines(EngineRegistry(PROFILES, tmp_path))
    counted.engine("judge").generate([judge("3 red circles"), judge("3 red circles")])
    assert counted.tally.to_dict()["n_calls_made"] == 2 and counted.tally.to_dict()["n_calls_cached"] == 0
    assert counted.has("judge") and not counted.has("policy")  # the rest of the registry passes through


# ---- through the flow --------------------------------------------------------------------------

SMALL = ["source.synthetic.scenes=3"]


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """smoke-real-servers on 3 scenes; then the same on a new dataset that starts with a copy of the call cache."""
    from flows.recipe_flow import run

    home = tmp_path_factory.mktemp("home")
    started = time.perf_counter()
    first = run("smoke-real-servers", SMALL, dataset="fresh", home=home)
    first_wall_s = time.perf_counter() - started
    replay_root = dataset_root(home, "replayed")
    replay_root.mkdir(parents=True)
    # SQLite's backup, not a file copy: the cache is in WAL mode, so recent calls may sit in calls.sqlite-wal.
    with sqlite3.connect(dataset_root(home, "fresh") / "calls.sqlite") as source, \
            sqlite3.connect(replay_root / "calls.sqlite") as copy:
        source.backup(copy)
    replayed = run("smoke-real-servers", SMALL, dataset="replayed", home=home)
    return {"home": home, "first": first, "first_wall_s": first_wall_s, "replayed": replayed}


def stats(home, dataset: str) -> dict[str, dict]:
    with Lake.open(dataset_root(home, dataset), read_only=True) as lake:
        return {row["stage"]: row for row in lake.sql("SELECT * FROM stage_stats ORDER BY step_index").to_pylist()}


def calls_by_task(home, dataset: str) -> dict[str, dict]:
    with sqlite3.connect(dataset_root(home, dataset) / "calls.sqlite") as db:
        rows = db.execute("SELECT task, count(*), sum(json_extract(usage, '$.prompt_tokens')), "
                          "sum(json_extract(usage, '$.completion_tokens')) FROM calls GROUP BY task").fetchall()
    return {task: {"n": n, "prompt_tokens": p, "completion_tokens": c} for task, n, p, c in rows}


def test_a_row_per_stage_with_the_calls_and_tokens_the_call_cache_recorded(smoke_runs):
    home, first = smoke_runs["home"], smoke_runs["first"]
    rows = stats(home, "fresh")
    assert list(rows) == [step["stage"] for step in first["steps"]] == \
        ["ingest", "dedup", "caption", "synthesize_qa", "distill_cot", "verify"]
    assert {row["run_id"] for row in rows.values()} == {first["run_id"]}
    calls = calls_by_task(home, "fresh")

    def recorded(prefix: str, field: str = "n") -> int:
        return sum(c[field] for task, c in calls.items() if task.startswith(prefix))

    # Known numbers: two caption styles per image, a raw and a refined CoT per question.
    assert rows["caption"]["n_in"] == 3  # three scenes, none a duplicate
    assert rows["caption"]["n_calls_made"] == 2 * rows["caption"]["n_in"] == recorded("caption.")
    assert rows["distill_cot"]["n_calls_made"] == 2 * rows["distill_cot"]["n_in"] == recorded("distill_cot.")
    for stage in ("caption", "distill_cot"):
        assert rows[stage]["prompt_tokens"] == recorded(f"{stage}.", "prompt_tokens") > 0
        assert rows[stage]["completion_tokens"] == recorded(f"{stage}.", "completion_tokens") > 0
    assert rows["ingest"]["n_calls_made"] == rows["dedup"]["n_calls_made"] == 0
    # Every call made is in the cache exactly once, and nothing else is: the stages' counts add up to it.
    assert sum(row["n_calls_made"] for row in rows.values()) == sum(c["n"] for c in calls.values()) == first["model_calls"]["misses"]
    assert sum(row["n_calls_cached"] for row in rows.values()) == first["model_calls"]["hits"]
    assert sum(row["prompt_tokens"] for row in rows.values()) == recorded("", "prompt_tokens")
    assert all(0 < row["wall_s"] for row in rows.values())
    assert sum(row["wall_s"] for row in rows.values()) < smoke_runs["first_wall_s"]


def test_the_accounting_invariant_holds_in_stage_stats_by_sql(smoke_runs):
    with Lake.open(dataset_root(smoke_runs["home"], "fresh"), read_only=True) as lake:
        broken = lake.sql("SELECT stage FROM stage_stats WHERE n_in != n_out + n_rejected").to_pylist()
        reasons = lake.sql("SELECT stage, n_rejected, rejected_by_reason FROM stage_stats").to_pylist()
    assert broken == []
    assert all(sum(json.loads(r["rejected_by_reason"]).values()) == r["n_rejected"] for r in reasons)


def test_a_run_on_a_stored_call_cache_replays_every_call(smoke_runs):
    home = smoke_runs["home"]
    first, replayed = stats(home, "fresh"), stats(home, "replayed")
    assert smoke_runs["replayed"]["version"] == 1 and smoke_runs["replayed"]["model_calls"]["misses"] == 0
    for stage, row in replayed.items():
        assert (row["n_calls_made"], row["prompt_tokens"], row["completion_tokens"]) == (0, 0, 0), stage
        # The same requests as the first run, now all answered from the cache.
        assert row["n_calls_cached"] == first[stage]["n_calls_made"] + first[stage]["n_calls_cached"], stage
        assert (row["n_in"], row["n_out"], row["n_rejected"]) == (first[stage]["n_in"], first[stage]["n_out"], first[stage]["n_rejected"])


def test_the_run_artifact_and_flow_versions_show_the_calls(smoke_runs, monkeypatch):
    from prefect.artifacts import Artifact

    first = smoke_runs["first"]
    markdown = Artifact.get("run-fresh").data  # the markdown summary the run left in Prefect
    caption = next(s for s in first["steps"] if s["stage"] == "caption")
    assert "model calls (cached)" in markdown and "tokens in / out" in markdown
    assert f"| {caption['n_calls_made']} ({caption['n_calls_cached']}) | {caption['prompt_tokens']} / {caption['completion_tokens']} |" in markdown

    monkeypatch.setenv("THINKMILL_HOME", str(smoke_runs["home"]))
    result = CliRunner().invoke(app, ["versions", "fresh", "--stages", "--format", "json"])
    assert result.exit_code == 0, result.output
    shown = {row["stage"]: row for row in json.loads(result.output)}
    rows = stats(smoke_runs["home"], "fresh")
    assert {stage: (r["calls_made"], r["calls_cached"], r["prompt_tokens"]) for stage, r in shown.items()} == \
        {stage: (r["n_calls_made"], r["n_calls_cached"], r["prompt_tokens"]) for stage, r in rows.items()}
    assert {r["version"] for r in shown.values()} == {1}
    table = CliRunner().invoke(app, ["versions", "fresh", "--stages", "--version", "1"])
    assert table.exit_code == 0 and "6 rows" in table.output
    missing = CliRunner().invoke(app, ["versions", "fresh", "--stages", "--version", "7"])
    assert missing.exit_code != 0 and "no version 7" in str(missing.exception)


# ---- datasets written before the rename ----------------------------------------------------------

OLD_STAGE_COUNTS = pa.schema([("stage_count_id", pa.string()), ("run_id", pa.string()), ("step_index", pa.int64()),
                              ("stage", pa.string()), ("stage_version", pa.int64()), ("unit", pa.string()),
                              ("n_in", pa.int64()), ("n_out", pa.int64()), ("n_rejected", pa.int64()),
                              ("rejected_by_reason", pa.string()), ("n_shards", pa.int64()), ("n_shards_cached", pa.int64()),
                              ("wall_s", pa.float64())])


def old_dataset(root):
    """A catalog as schema version 4 left it: a `stage_counts` table and a versions row, in snapshot 1."""
    (root / "data").mkdir(parents=True)
    con = connect()
    con.execute(f"ATTACH 'ducklake:sqlite:{root}/catalog.sqlite' AS lake (DATA_PATH '{root}/data/', DATA_INLINING_ROW_LIMIT 0)")
    counts = pa.Table.from_pylist([{"stage_count_id": "sc-1", "run_id": "old-run", "step_index": 0, "stage": "ingest",
                                    "stage_version": 1, "unit": "source_item", "n_in": 5, "n_out": 4, "n_rejected": 1,
                                    "rejected_by_reason": '{"ingest.truncated": 1}', "n_shards": 1, "n_shards_cached": 0,
                                    "wall_s": 0.5}], schema=OLD_STAGE_COUNTS)
    version = pa.Table.from_pylist([{"version": 1, "name": "v1", "run_id": "old-run", "recipe": "build-wethink",
                                     "config_hash": "c" * 64, "config": "{}", "counts": "{}",
                                     "created_at": datetime(2026, 1, 1, tzinfo=timezone.utc)}],
                                   schema=TABLES["versions"].schema)
    con.execute("BEGIN TRANSACTION")
    for name, rows in (("stage_counts", counts), ("versions", version)):
        con.register("_rows", rows)
        con.execute(f"CREATE TABLE lake.{name} AS SELECT * FROM _rows")
        con.unregister("_rows")
    con.execute("CALL lake.set_commit_message('thinkmill', 'old run', extra_info => ?)", [json.dumps({"schema_version": 4})])
    con.execute("COMMIT")
    con.close()


def test_a_dataset_from_before_the_rename_reads_its_stage_counts_as_stage_stats(tmp_path, monkeypatch):
    root = dataset_root(tmp_path, "old")
    old_dataset(root)
    with Lake.open(root, read_only=True) as lake:
        (row,) = lake.table("stage_stats").to_pylist()
        assert (row["stage_stats_id"], row["n_in"], row["n_out"], row["n_calls_made"], row["prompt_tokens"]) == ("sc-1", 5, 4, None, None)
        assert lake.sql("SELECT stage, n_rejected, n_calls_made FROM stage_stats").to_pylist() == \
            [{"stage": "ingest", "n_rejected": 1, "n_calls_made": None}]
    monkeypatch.setenv("THINKMILL_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["versions", "old", "--stages", "-f", "json"])
    assert result.exit_code == 0, result.output
    assert [(r["stage"], r["in"], r["calls_made"]) for r in json.loads(result.output)] == [("ingest", 5, None)]


def test_the_next_commit_renames_stage_counts_in_place_and_old_versions_stay_readable(tmp_path):
    root = dataset_root(tmp_path, "old")
    old_dataset(root)
    new_row = {"stage_stats_id": "ss-2", "run_id": "new-run", "step_index": 0, "stage": "ingest", "stage_version": 1,
               "unit": "source_item", "n_in": 2, "n_out": 2, "n_rejected": 0, "rejected_by_reason": "{}", "n_shards": 1,
               "n_shards_cached": 0, "n_calls_made": 0, "n_calls_cached": 0, "prompt_tokens": 0, "completion_tokens": 0,
               "wall_s": 0.25}
    captions = pa.Table.from_pylist([{"caption_id": "c1", "asset_id": "a1", "style": "fine", "text": "x", "run_id": "new-run",
                                      "stage": "caption", "stage_version": 1, "config_hash": "c", "row_hash": "h"}],
                                    schema=TABLES["captions"].schema)
    with Lake.open(root) as lake:
        commit = lake.commit({"captions": captions}, run_id="new-run", recipe="build-wethink", config_hash="c" * 64, config={},
                             stage_stats=pa.Table.from_pylist([new_row], schema=TABLES["stage_stats"].schema))
        assert commit.version == 2
        assert "stage_counts" not in lake.tables() and "stage_stats" in lake.tables()
        now = {r["stage_stats_id"]: r for r in lake.table("stage_stats").to_pylist()}
        assert now["sc-1"]["n_in"] == 5 and now["sc-1"]["n_calls_made"] is None  # the old run: not recorded
        assert now["ss-2"]["wall_s"] == 0.25 and now["ss-2"]["n_calls_made"] == 0  # appended by name, not position
        assert [r["stage_stats_id"] for r in lake.table("stage_stats", version=1).to_pylist()] == ["sc-1"]
        assert lake.sql("SELECT count(*) AS n FROM stage_counts AT (VERSION => 1)").to_pylist() == [{"n": 1}]
