"""The lake: one snapshot per commit, upsert by id + row hash, time travel, diff, read-only queries."""

import pyarrow as pa
import pytest

from pipelines.stage import StageContext
from schemas.errors import ReadOnlyLake, UnknownDataset, UnknownTable, UnknownVersion
from stores.lake import Lake


def captions(ctx, texts: dict[str, str]) -> pa.Table:
    rows = [{"caption_id": cid, "asset_id": "asset-1", "style": "fine", "text": text, "row_hash": f"h-{text}"}
            for cid, text in texts.items()]
    return ctx.rows("captions", rows)


@pytest.fixture
def ctx(tmp_path):
    return StageContext(run_id="run-1", stage="caption", stage_version=1, config_hash="c0", root=tmp_path / "ds")


def commit(lake, tables, run_id="run-1"):
    return lake.commit(tables, run_id=run_id, recipe="test", config_hash="c0", config={"k": 1})


def test_first_commit_is_version_1_and_a_repeat_commits_nothing(ctx):
    with Lake.open(ctx.root, create=True) as lake:
        first = commit(lake, {"captions": captions(ctx, {"c1": "a", "c2": "b"})})
        again = commit(lake, {"captions": captions(ctx, {"c1": "a", "c2": "b"})}, run_id="run-2")
        assert (first.version, first.added["captions"]) == (1, 2)
        assert again.version is None and again.added["captions"] == 0
        assert [v["version"] for v in lake.versions()] == [1]
        assert lake.table("captions").num_rows == 2


def test_changed_content_replaces_the_row_and_time_travel_sees_the_old_one(ctx):
    with Lake.open(ctx.root, create=True) as lake:
        commit(lake, {"captions": captions(ctx, {"c1": "a", "c2": "b"})})
        second = commit(lake, {"captions": captions(ctx, {"c1": "a!", "c3": "c"})}, run_id="run-2")
        assert second.version == 2 and second.added["captions"] == 2 and second.removed["captions"] == 1
        now = {r["caption_id"]: r["text"] for r in lake.table("captions").to_pylist()}
        then = {r["caption_id"]: r["text"] for r in lake.table("captions", version=1).to_pylist()}
        assert now == {"c1": "a!", "c2": "b", "c3": "c"}
        assert then == {"c1": "a", "c2": "b"}
        changes = lake.diff(1, 2)["captions"]
        assert changes == {"added": ["c3"], "removed": [], "changed": ["c1"]}
        assert lake.versions()[1]["commit_message"].startswith("test run run-2")


def test_every_table_is_written_in_one_snapshot(ctx):
    with Lake.open(ctx.root, create=True) as lake:
        reject = ctx.rejects([ctx.reject("asset-9", "caption.too_short", "2 words")])
        commit(lake, {"captions": captions(ctx, {"c1": "a"}), "rejects": reject})
        snapshots = lake._con.execute("SELECT snapshot_id FROM lake.snapshots() WHERE snapshot_id > 0").fetchall()
        assert snapshots == [(1,)]


def test_sql_is_read_only_with_clear_errors(ctx):
    with Lake.open(ctx.root, create=True) as lake:
        commit(lake, {"captions": captions(ctx, {"c1": "a"})})
    with Lake.open(ctx.root, read_only=True) as lake:
        assert lake.sql("SELECT count(*) AS n FROM captions AT (VERSION => 1)").to_pylist() == [{"n": 1}]
        for statement in ["DELETE FROM captions", "INSERT INTO captions SELECT * FROM captions",
                          "ATTACH '/tmp/other.db' AS other", "CREATE TABLE t AS SELECT 1", "COPY captions TO '/tmp/x.csv'",
                          "SELECT 1; DROP TABLE captions"]:
            with pytest.raises(ReadOnlyLake, match="read-only"):
                lake.sql(statement)
        with pytest.raises(ReadOnlyLake):  # files outside the dataset are out of reach too
            lake.sql("SELECT * FROM read_csv('/etc/passwd')")
        assert lake.table("captions").num_rows == 1


def test_unknown_dataset_table_and_version_name_what_exists(ctx, tmp_path):
    with pytest.raises(UnknownDataset, match="flow run"):
        Lake.open(tmp_path / "datasets" / "nope", read_only=True)
    with Lake.open(ctx.root, create=True) as lake:
        commit(lake, {"captions": captions(ctx, {"c1": "a"})})
        with pytest.raises(UnknownTable, match="captions"):
            lake.table("captoins")
        with pytest.raises(UnknownVersion, match="versions are: 1"):
            lake.table("captions", version=7)


def test_diff_of_one_table_and_of_an_unknown_one(ctx):
    with Lake.open(ctx.root, create=True) as lake:
        commit(lake, {"captions": captions(ctx, {"c1": "a", "c2": "b"})})
        commit(lake, {"captions": captions(ctx, {"c1": "a!", "c3": "c"}),
                      "rejects": ctx.rejects([ctx.reject("asset-9", "caption.too_short", "2 words")])}, run_id="run-2")
        assert lake.diff(1, 2, tables=["captions"]) == {"captions": {"added": ["c3"], "removed": [], "changed": ["c1"]}}
        assert len(lake.diff(1, 2)["rejects"]["added"]) == 1
        with pytest.raises(UnknownTable, match="captions"):
            lake.diff(1, 2, tables=["captoins"])
