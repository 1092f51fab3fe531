"""End to end: `build-video-qa` as a real Prefect flow on a real DuckLake catalog, offline, at a small size.

Synthetic clips (one a planted re-encode) go through ingest → dedup → caption → synthesize_qa →
distill_cot → verify → rollouts; every check reads the lake back with SQL, the way a user would.
"""

import json

import pytest

from stores.lake import Lake

pytestmark = pytest.mark.slow

OVERRIDES = ["source.synthetic.scenes=6", "rollouts.group_size=2"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from flows.recipe_flow import run
    from stores.lake import dataset_root

    home = tmp_path_factory.mktemp("home")
    first = run("build-video-qa", OVERRIDES, home=home)
    again = run("build-video-qa", OVERRIDES, home=home)
    return {"root": dataset_root(home, "video-qa"), "first": first, "again": again}


def sql(built, query):
    with Lake.open(built["root"], read_only=True) as lake:
        return lake.sql(query).to_pylist()


def test_the_run_commits_a_version_with_videos_frames_and_questions_about_videos(built):
    assert built["first"]["version"] == 1
    kinds = {r["kind"]: r["n"] for r in sql(built, "SELECT kind, count(*) AS n FROM assets GROUP BY kind")}
    assert kinds == {"video": 7, "frame": 56}  # six clips and one re-encoded copy, eight frames each
    frames = sql(built, """SELECT f.parent_asset_id, count(*) AS n, list(f.frame_ts ORDER BY f.frame_ts) AS ts
                           FROM assets f JOIN assets v ON v.asset_id = f.parent_asset_id AND v.kind = 'video'
                           WHERE f.kind = 'frame' GROUP BY 1""")
    assert len(frames) == 7 and all(r["n"] == 8 and r["ts"][0] == 0.0 and r["ts"] == sorted(set(r["ts"])) for r in frames)
    questions = sql(built, """SELECT q.question, q.abilities, a.kind FROM questions q
                              JOIN assets a ON a.asset_id = q.asset_ids[1]""")
    assert questions and {q["kind"] for q in questions} == {"video"}
    assert all("temporal_reasoning" in q["abilities"] and len(q["abilities"]) >= 2 for q in questions)
    assert sql(built, "SELECT count(*) AS n FROM rollouts")[0]["n"] > 0


def test_every_stage_accounts_for_every_item_and_frames_are_never_items(built):
    run_id = built["first"]["run_id"]
    counts = {r["stage"]: r for r in sql(built, f"SELECT * FROM stage_stats WHERE run_id = '{run_id}'")}
    assert list(counts) == ["ingest", "dedup", "caption", "synthesize_qa", "distill_cot", "verify", "rollouts"]
    for stage, row in counts.items():
        assert row["n_in"] == row["n_out"] + row["n_rejected"], stage
        assert sum(json.loads(row["rejected_by_reason"]).values()) == row["n_rejected"], stage
    assert counts["ingest"]["n_in"] == counts["ingest"]["n_out"] == 7  # one per file, its frames included
    assert counts["dedup"]["n_in"] == 7 and counts["caption"]["n_in"] == counts["dedup"]["n_out"] == 6
    assert counts["synthesize_qa"]["n_in"] == counts["caption"]["n_out"]
    for before, after in [("distill_cot", "verify"), ("verify", "rollouts")]:
        assert counts[after]["n_in"] == counts[before]["n_out"], after


def test_the_reencoded_copy_is_linked_to_its_original_and_frames_never_are(built):
    links = sql(built, """SELECT c.source_ref AS copy, o.source_ref AS original FROM assets c
                          JOIN assets o ON o.asset_id = c.duplicate_of""")
    assert len(links) == 1 and links[0]["copy"] == links[0]["original"] + "#reencoded"
    assert sql(built, "SELECT count(*) AS n FROM assets WHERE kind = 'frame' AND duplicate_of IS NOT NULL")[0]["n"] == 0
    dedup_subjects = sql(built, """SELECT a.kind FROM rejects r JOIN assets a ON a.asset_id = r.subject_id
                                   WHERE r.stage = 'dedup'""")
    assert [r["kind"] for r in dedup_subjects] == ["video"]
    # Same frames seen twice in a still stretch look alike; they are still separate assets of their video.
    n_frames, n_ids = sql(built, "SELECT count(*) AS n, count(DISTINCT asset_id) AS ids FROM assets WHERE kind = 'frame'")[0].values()
    assert n_frames == n_ids


def test_captions_of_videos_are_written_over_time(built):
    captions = sql(built, "SELECT c.style, c.text, c.prompt_version FROM captions c JOIN assets a USING (asset_id) "
                          "WHERE a.kind = 'video'")
    assert len(captions) == 12 and {c["prompt_version"] for c in captions} == {"caption-video-v1"}
    assert all("First, at the start" in c["text"] and "then" in c["text"] for c in captions if c["style"] == "fine")


def test_a_rerun_with_nothing_changed_is_all_cached_and_commits_nothing(built):
    again = built["again"]
    assert again["version"] is None
    assert all(step["n_shards_cached"] == step["n_shards"] for step in again["steps"]), again["steps"]


def test_hub_export_shows_a_video_question_by_its_first_frame(built, tmp_path):
    import datasets
    import pyarrow.parquet as pq
    from huggingface_hub import DatasetCard

    from stores.exports.hub import write_folder

    with Lake.open(built["root"], read_only=True) as lake:
        export = write_folder(lake, tmp_path / "hub", version=1)
    samples = datasets.load_dataset(str(export.folder), "samples", split="train", cache_dir=str(tmp_path / "cache"))
    assert samples.num_rows == sql(built, "SELECT count(*) AS n FROM questions")[0]["n"]
    assert set(samples["asset_kind"]) == {"video"} and all(image.size == (160, 160) for image in samples["image"])
    first_frames = {r["asset_id"]: (built["root"] / r["media_uri"]).read_bytes() for r in sql(built, """
        SELECT DISTINCT ON (parent_asset_id) parent_asset_id AS asset_id, media_uri FROM assets
        WHERE kind = 'frame' ORDER BY parent_asset_id, frame_ts""")}
    raw = pq.read_table(export.folder / export.configs["samples"].files[0]).to_pylist()
    assert all(row["image"]["bytes"] == first_frames[row["asset_id"]] for row in raw)
    # The recipe has no difficulty step: no empty config, and the card says why.
    assert "difficulty" not in export.configs
    assert "difficulty" in DatasetCard.load(export.folder / "README.md").data.thinkmill["not_exported"]
