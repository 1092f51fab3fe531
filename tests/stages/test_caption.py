"""caption: every asset gets a coarse and a fine caption, or one reject saying which style failed and why."""

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipelines.engines.base import images_of
from pipelines.stage import account, kept_ids
from pipelines.stages.caption import PROMPT_VERSION, VIDEO_PROMPT_VERSION, VIDEO_PROMPTS, caption
from pipelines.world import CLIP_FAMILIES, caption_coarse, caption_fine, clip_knowledge, world_from_json
from schemas import make_id
from tests.stages.fixtures import (
    FakeEngine,
    Roles,
    attempt,
    context,
    failing,
    ingest_scenes,
    reasons_by_subject,
    scene_of,
    scripted,
    teacher,
    teachers,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("dataset")


@pytest.fixture(scope="module")
def assets(root):
    return ingest_scenes(root, scenes=4)


def run(assets, root, engines, **params):
    result = caption(assets, context("caption", root, engines), **params)
    return result, account(caption, assets, result)


def test_a_perfect_captioner_captions_every_asset_in_both_styles_with_the_worlds_captions(assets, root):
    result, counts = run(assets, root, teachers(root))
    assert (counts.n_in, counts.n_out, counts.n_rejected) == (4, 4, 0)
    by_key = {(r["asset_id"], r["style"]): r for r in result.out.to_pylist()}
    assert len(by_key) == 8
    for asset in assets.to_pylist():
        scene = scene_of(asset)
        assert by_key[(asset["asset_id"], "coarse")]["text"] == caption_coarse(scene)
        assert by_key[(asset["asset_id"], "fine")]["text"] == caption_fine(scene)
    row = by_key[(assets["asset_id"][0].as_py(), "fine")]
    assert (row["model"], row["model_revision"], row["prompt_version"]) == ("scripted-teacher", "world-v1", PROMPT_VERSION)
    assert row["call_id"].startswith("call-") and row["stage"] == "caption" and row["run_id"] == "run-test"


def test_caption_ids_are_content_addressed_and_stable_across_calls(assets, root):
    first, _ = run(assets, root, teachers(root))
    again, _ = run(assets, root, teachers(root))
    assert first.out["caption_id"].to_pylist() == again.out["caption_id"].to_pylist()
    assert len(set(first.out["caption_id"].to_pylist())) == 8
    other_model, _ = run(assets, root, teachers(root, captioner=scripted("another-teacher")))
    assert set(other_model.out["caption_id"].to_pylist()).isdisjoint(first.out["caption_id"].to_pylist())
    asset_id = assets["asset_id"][0].as_py()
    assert make_id("caption", asset_id, "fine", "scripted-teacher", PROMPT_VERSION) in first.out["caption_id"].to_pylist()


def test_the_request_carries_the_image_and_the_scene_hint(assets, root):
    engine = FakeEngine(lambda r: "A picture of several coloured shapes.")
    run(assets.slice(0, 1), root, Roles(captioner=engine), styles=["fine"])
    (request,) = engine.requests
    asset = assets.to_pylist()[0]
    image = request.messages[0]["content"][0]
    assert image == {"type": "image", "path": str(root / asset["media_uri"]), "sha256": asset["sha256"]}
    assert (root / asset["media_uri"]).is_file()
    assert request.task == "caption.fine" and request.hints == {"scene": asset["scene"]}


def test_only_the_requested_styles_are_written(assets, root):
    result, counts = run(assets, root, teachers(root), styles=["coarse"])
    assert result.out["style"].to_pylist() == ["coarse"] * 4 and counts.n_out == 4


def test_an_engine_error_rejects_the_asset_once_with_the_error_and_no_retry(assets, root):
    engine = failing("HTTP 503 from the model server")
    result, counts = run(assets, root, Roles(captioner=engine), max_retries=3)
    assert len(engine.requests) == 8  # two styles x four assets, never retried
    assert (counts.n_out, counts.n_rejected, counts.by_reason) == (0, 4, {"caption.engine_error": 4})
    assert result.out.num_rows == 0
    assert sorted(result.rejects["subject_id"].to_pylist()) == sorted(assets["asset_id"].to_pylist())
    assert set(result.rejects["detail"].to_pylist()) == {"coarse caption: HTTP 503 from the model server"}
    assert result.rejects["raw"].to_pylist() == [None] * 4


def test_an_asset_without_a_scene_graph_is_an_engine_error_for_the_scripted_teacher(assets, root):
    photo = assets.slice(0, 1).set_column(assets.schema.get_field_index("scene"), "scene", pa.array([None], pa.string()))
    result, counts = run(photo, root, teachers(root))
    assert counts.by_reason == {"caption.engine_error": 1}
    assert result.rejects["detail"][0].as_py().startswith("coarse caption: the scripted teacher only knows synthetic images")


def test_a_too_short_caption_is_retried_with_feedback_then_rejected_keeping_the_raw_text(assets, root):
    engine = FakeEngine(lambda r: "Shapes.")
    result, counts = run(assets.slice(0, 1), root, Roles(captioner=engine), styles=["fine"], max_retries=2)
    assert [attempt(r) for r in engine.requests] == [0, 1, 2]  # exactly max_retries retries
    assert "the description has 1 words; write at least 4" in engine.requests[1].messages[-1]["content"]
    assert counts.by_reason == {"caption.too_short": 1}
    (reject,) = result.rejects.to_pylist()
    assert reject["detail"] == "fine caption: the description has 1 words; write at least 4"
    assert reject["raw"] == "Shapes." and reject["subject_id"] == reject["input_id"] == assets["asset_id"][0].as_py()


def test_an_empty_caption_is_too_short_and_has_no_raw_text(assets, root):
    result, counts = run(assets.slice(0, 1), root, Roles(captioner=FakeEngine(lambda r: "")), styles=["coarse"])
    assert counts.by_reason == {"caption.too_short": 1}
    assert result.rejects["raw"].to_pylist() == [None]
    assert result.rejects["detail"].to_pylist() == ["coarse caption: the description has 0 words; write at least 4"]


def test_a_short_caption_fixed_on_the_retry_is_kept(assets, root):
    engine = FakeEngine(lambda r: "Shapes." if attempt(r) == 0 else "Four shapes on a white background.")
    result, counts = run(assets.slice(0, 1), root, Roles(captioner=engine), styles=["coarse"], max_retries=1)
    assert (counts.n_out, counts.n_rejected) == (1, 0)
    assert result.out["text"].to_pylist() == ["Four shapes on a white background."]
    assert result.out["call_id"][0].as_py() == engine.requests[1].call_id("fake", "fake-model", "fake-1")


def test_a_failed_style_rejects_the_asset_but_the_other_style_is_still_written(assets, root):
    fine_fails = FakeEngine(lambda r: "ok" if r.task == "caption.fine" else "A few coloured shapes on white.")
    result, counts = run(assets, root, Roles(captioner=fine_fails), max_retries=0)
    assert (counts.n_in, counts.n_out, counts.n_rejected) == (4, 0, 4)
    assert result.out["style"].to_pylist() == ["coarse"] * 4
    assert reasons_by_subject(result) == {a: "caption.too_short" for a in assets["asset_id"].to_pylist()}
    assert {d.split(":")[0] for d in result.rejects["detail"].to_pylist()} == {"fine caption"}


def test_noise_in_the_teacher_does_not_touch_captions(assets, root):
    # The scripted teacher's captions are exact; malformed noise applies to structured outputs only.
    result, counts = run(assets, root, Roles(captioner=teacher(malformed=1, wrong_answer=1)))
    assert counts.n_out == 4 and result.out.num_rows == 8


def test_min_words_is_the_boundary(assets, root):
    engine = FakeEngine(lambda r: "one two three four")
    result, counts = run(assets.slice(0, 1), root, Roles(captioner=engine), styles=["fine"], min_words=4)
    assert counts.n_out == 1
    result, counts = run(assets.slice(0, 1), root, Roles(captioner=engine), styles=["fine"], min_words=5, max_retries=0)
    assert counts.by_reason == {"caption.too_short": 1}


# ---- videos: captioned from their frames, in time order ----------------------------------------

@pytest.fixture(scope="module")
def videos(root):
    """Assets of three synthetic clips (one per clip family): three videos and eight frames each."""
    return ingest_scenes(root, scenes=3, families=list(CLIP_FAMILIES))


def test_a_video_is_captioned_from_its_frames_in_time_order_each_after_its_time(videos, root):
    engine = FakeEngine(lambda r: "Shapes appear one after another over three seconds.")
    result, counts = run(videos, root, Roles(captioner=engine), styles=["fine"])
    assert (counts.n_in, counts.n_out, counts.n_rejected) == (3, 3, 0)  # the 24 frames are not items
    assert len(engine.requests) == 3
    rows = videos.to_pylist()
    for request in engine.requests:
        parts = request.messages[0]["content"]
        video = next(r for r in rows if r["kind"] == "video" and r["scene"] == request.hints["scene"])
        frames = sorted((r for r in rows if r["parent_asset_id"] == video["asset_id"]), key=lambda r: r["frame_ts"])
        images = [p for p in parts if p["type"] == "image"]
        assert len(images) == len(frames) == 8
        assert images == [{"type": "image", "path": str(root / f["media_uri"]), "sha256": f["sha256"]} for f in frames]
        assert [p["text"] for p in parts[1:-1:2]] == [f"t = {f['frame_ts']:g} s" for f in frames]
        assert [p["type"] for p in parts[1:-1]] == ["text", "image"] * 8
        times = [float(p["text"].split()[2]) for p in parts[1:-1:2]]
        assert times == sorted(times) and times[0] == 0.0
        assert parts[0]["text"] == "Frames of a video, in time order:" and parts[-1]["text"] == VIDEO_PROMPTS["fine"]
        assert request.prompt_version == VIDEO_PROMPT_VERSION and world_from_json(request.hints["scene"]).keyframes
    assert set(result.out["prompt_version"].to_pylist()) == {VIDEO_PROMPT_VERSION}
    assert set(kept_ids(caption, videos, result)) == set(videos["asset_id"].to_pylist())  # frames stay live with their video


def test_the_scripted_caption_of_a_video_tells_the_change_over_time(videos, root):
    result, counts = run(videos, root, teachers(root))
    assert (counts.n_in, counts.n_out) == (3, 3)
    assert set(result.out["asset_id"].to_pylist()) == set(videos.filter(pc.equal(videos["kind"], "video"))["asset_id"].to_pylist())
    for row in result.out.to_pylist():
        clip = world_from_json(next(a["scene"] for a in videos.to_pylist() if a["asset_id"] == row["asset_id"]))
        if row["style"] == "coarse":
            assert row["text"] == clip_knowledge.caption_coarse(clip)
            continue
        assert row["text"] == clip_knowledge.caption_fine(clip)
        assert "First, at the start" in row["text"] and "; then" in row["text"]
        for t, verb, shape in clip_knowledge.events(clip):
            assert f"at {t:.1f} s" in row["text"] and f"{shape.colour} {shape.kind}" in row["text"]


def test_images_and_videos_are_captioned_together_and_frames_stay_live_with_their_video(assets, videos, root):
    both = pa.concat_tables([assets, videos])
    result, counts = run(both, root, Roles(captioner=FakeEngine(lambda r: "Failed" if len(images_of(r.messages)) > 1 else
                                                                   "A picture of coloured shapes.")), max_retries=0)
    assert (counts.n_in, counts.n_out, counts.n_rejected) == (7, 4, 3)  # 4 images kept, 3 videos too short
    assert counts.by_reason == {"caption.too_short": 3}
    live = kept_ids(caption, both, result)
    assert set(live) == set(assets["asset_id"].to_pylist())  # a rejected video's frames leave with it
