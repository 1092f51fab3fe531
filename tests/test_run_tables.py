"""flows/run_tables.py: video frames ride with their video, into shards and into the assets a question names."""

import pyarrow as pa

from flows.run_tables import related, shards, with_row_hash
from pipelines.stage import StageContext, StageResult, account, kept_ids
from pipelines.stages.caption import caption

CTX = StageContext(run_id="r", stage="caption", stage_version=1, config_hash="c", root=None)


def assets(layout: list[tuple[str, str | None]]) -> pa.Table:
    """Asset rows from (asset_id, parent_asset_id) pairs: a parent makes the row a frame."""
    return CTX.rows("assets", [{"asset_id": a, "kind": "frame" if p else ("video" if a.startswith("v") else "image"),
                                "parent_asset_id": p, "frame_ts": 0.5 * k if p else None}
                               for k, (a, p) in enumerate(layout)])


# Frames are not next to their video: ingest writes them after it, and later writes may reorder rows.
TABLE = assets([("v1", None), ("i1", None), ("v2", None), ("f1a", "v1"), ("f2a", "v2"), ("i2", None), ("f1b", "v1"),
                ("f2b", "v2"), ("i3", None)])


def ids(table: pa.Table) -> list[str]:
    return table["asset_id"].to_pylist()


def test_shards_count_items_only_and_keep_each_video_with_its_frames():
    cut = shards(TABLE, 2)
    assert [ids(s) for s in cut] == [["v1", "f1a", "f1b", "i1"], ["v2", "f2a", "f2b", "i2"], ["i3"]]


def test_without_frames_shards_are_plain_slices():
    plain = assets([("i1", None), ("i2", None), ("i3", None)])
    assert [ids(s) for s in shards(plain, 2)] == [["i1", "i2"], ["i3"]]
    assert [s.num_rows for s in shards(plain.slice(0, 0), 2)] == [0]


def test_related_assets_bring_the_frames_of_the_videos_a_question_names():
    questions = pa.table({"question_id": ["q1", "q2"], "asset_ids": [["v2"], ["i1"]]})
    assert sorted(ids(related(TABLE, questions))) == ["f2a", "f2b", "i1", "v2"]


def test_frames_are_neither_counted_nor_rejected_and_stay_live_with_their_video():
    captions = CTX.rows("captions", [{"caption_id": "c1", "asset_id": "v1", "style": "fine", "text": "t"},
                                     {"caption_id": "c2", "asset_id": "i1", "style": "fine", "text": "t"}])
    rejects = CTX.rejects([CTX.reject("v2", "caption.too_short", "fine caption: 1 word")])
    subject = TABLE.filter(pa.compute.is_in(TABLE["asset_id"], pa.array(["v1", "f1a", "f1b", "i1", "v2", "f2a", "f2b"])))
    result = StageResult(captions, rejects)
    counts = account(caption, subject, result)
    assert (counts.n_in, counts.n_out, counts.n_rejected) == (3, 2, 1)
    assert kept_ids(caption, subject, result) == ["v1", "i1", "f1a", "f1b"]


def test_row_hashes_keep_the_schema_so_empty_and_full_shards_concatenate():
    empty, full = CTX.rejects([]), CTX.rejects([CTX.reject("x", "caption.too_short", "short")])
    assert pa.concat_tables([with_row_hash("rejects", full), with_row_hash("rejects", empty)]).num_rows == 1


def test_rows_two_steps_write_to_one_table_stay_live_together():
    """difficulty gets group_stats rows from `difficulty` and mcts rows from `mcts` (both about questions):
    `select`, reading difficulty next, must see both."""
    from flows.run_tables import RunTables
    from pipelines.stages.difficulty import difficulty
    from pipelines.stages.mcts import mcts

    tables = RunTables(lambda name: CTX.empty(name))
    questions = CTX.rows("questions", [{"question_id": q, "asset_ids": ["a"], "question": "?", "answer": "1", "answer_type": "num",
                                        "category": "c", "abilities": [], "reward_route": "rule", "generator": "g"} for q in ("q1", "q2")])
    tables.put("questions", questions)
    group_stats = CTX.rows("difficulty", [{"difficulty_id": f"g-{q}", "question_id": q, "policy_id": "p", "method": "group_stats"}
                                          for q in ("q1", "q2")])
    tables.apply(difficulty, group_stats, CTX.rejects([]), {}, ["q1", "q2"])
    searched = CTX.rows("difficulty", [{"difficulty_id": "m-q1", "question_id": "q1", "policy_id": "p", "method": "mcts"}])
    mcts_ctx = StageContext(run_id="r", stage="mcts", stage_version=1, config_hash="c", root=None)
    rejected = mcts_ctx.rejects([mcts_ctx.reject("q2", "mcts.engine_error", "HTTP 503")])
    tables.apply(mcts, searched, rejected, {}, ["q1"])
    assert sorted(tables.read("difficulty")["difficulty_id"].to_pylist()) == ["g-q1", "g-q2", "m-q1"]
    assert tables.read("questions")["question_id"].to_pylist() == ["q1"]
