"""ingest of videos: one video asset plus its sampled frames as assets, or a reject with a stable reason."""

import hashlib
import io

import av
import imagehash
import numpy as np
import pytest
from PIL import Image

from pipelines.sources import source_items
from pipelines.stage import StageContext, account, kept_ids
from pipelines.stages.ingest import ingest
from pipelines.video import encode_clip
from schemas import make_id
from stores.media import open_image
from tests.media_files import encode, photo
from tests.test_video import moving_square


@pytest.fixture
def ctx(tmp_path) -> StageContext:
    return StageContext(run_id="run-test", stage="ingest", stage_version=1, config_hash="test", root=tmp_path / "dataset")


def frames_by_time(data: bytes) -> dict[float, tuple[bool, np.ndarray]]:
    """Time -> (key frame?, RGB pixels) of every frame, decoded with PyAV directly."""
    with av.open(io.BytesIO(data)) as container:
        return {round(float(f.time), 6): (f.key_frame, f.to_ndarray(format="rgb24")) for f in container.decode(video=0)}


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "uploads"
    folder.mkdir()
    clip = encode_clip(moving_square(24), 8, gop=6)
    still = encode_clip([Image.new("RGB", (64, 64), (30, 80, 220))] * 16, 8, gop=8)  # every frame the same
    files = {"clip.mp4": clip, "still.mp4": still, "copy-of-clip.mp4": clip, "cut.mp4": clip[: len(clip) // 2],
             "photo.png": encode(photo(), "PNG"), "notes.txt": b"not a video\n" * 40}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder, files


@pytest.fixture
def ingested(ctx, folder):
    path, files = folder
    items = source_items({"image_folder": {"path": str(path)}})
    result = ingest(items, ctx, frames=8)
    return items, result, files


def by_ref(result, ref: str) -> list[dict]:
    return [r for r in result.out.to_pylist() if r["source_ref"] == ref]


def test_each_file_counts_once_kept_with_its_frames_or_rejected_with_a_reason(ingested):
    items, result, _ = ingested
    counts = account(ingest, items, result)
    assert (counts.n_in, counts.n_out, counts.n_rejected) == (6, 3, 3)
    reasons = dict(zip(result.rejects["subject_id"].to_pylist(), result.rejects["reason"].to_pylist()))
    assert reasons == {"copy-of-clip.mp4": "ingest.duplicate_bytes", "cut.mp4": "ingest.unreadable_video",
                       "notes.txt": "ingest.not_an_image"}
    assert counts.by_reason == {"ingest.duplicate_bytes": 1, "ingest.unreadable_video": 1, "ingest.not_an_image": 1}
    assert kept_ids(ingest, items, result) == ["clip.mp4", "photo.png", "still.mp4"]
    assert {r["source_ref"]: r["kind"] for r in result.out.to_pylist() if r["parent_asset_id"] is None} == {
        "clip.mp4": "video", "photo.png": "image", "still.mp4": "video"}


def test_the_video_asset_is_the_file_itself(ingested, ctx):
    _, result, files = ingested
    (video,) = [r for r in by_ref(result, "clip.mp4") if r["kind"] == "video"]
    sha256 = hashlib.sha256(files["clip.mp4"]).hexdigest()
    assert (video["asset_id"], video["sha256"], video["format"], video["width"], video["height"]) == (
        "asset-" + sha256[:24], sha256, "MP4", 64, 64)
    assert video["media_uri"].endswith(".mp4") and ctx.media_path(video["media_uri"]).read_bytes() == files["clip.mp4"]
    assert video["parent_asset_id"] is None and video["frame_ts"] is None
    # Its hashes are those of its middle frame (position 11 of 24, t = 1.375 s), so dedup compares what it shows.
    middle = Image.fromarray(frames_by_time(files["clip.mp4"])[1.375][1])
    assert video["phash"] == str(imagehash.phash(middle.convert("L")))


def test_frames_are_assets_linked_to_their_video_with_increasing_times_and_decodable_media(ingested, ctx):
    _, result, files = ingested
    rows = by_ref(result, "clip.mp4")
    video_id = next(r["asset_id"] for r in rows if r["kind"] == "video")
    frames = [r for r in rows if r["kind"] == "frame"]
    assert len(frames) == 8
    assert [f["frame_ts"] for f in frames] == [p / 8 for p in (0, 3, 7, 10, 13, 16, 20, 23)]
    truth = frames_by_time(files["clip.mp4"])
    for frame in frames:
        assert frame["parent_asset_id"] == video_id and frame["format"] == "PNG" and (frame["width"], frame["height"]) == (64, 64)
        stored = ctx.media_path(frame["media_uri"])
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == frame["sha256"]
        assert np.array_equal(np.asarray(open_image(stored)), truth[frame["frame_ts"]][1])
        assert frame["phash"] and frame["dhash"] and len(frame["phash_crops"]) == 5
    assert len({f["sha256"] for f in frames}) == 8  # the square moves: every sampled frame differs


def test_identical_frames_are_still_distinct_assets_content_addressed_by_video_and_time(ingested):
    _, result, _ = ingested
    rows = by_ref(result, "still.mp4")
    video_id = next(r["asset_id"] for r in rows if r["kind"] == "video")
    frames = [r for r in rows if r["kind"] == "frame"]
    assert len(frames) == 8 and len({f["sha256"] for f in frames}) == 1 and len({f["media_uri"] for f in frames}) == 1
    assert len({f["asset_id"] for f in frames}) == 8
    pts = [round(f["frame_ts"] * 16384) for f in frames]  # libx264 in MP4: a time base of 1/16384 s at 8 fps
    assert [f["asset_id"] for f in frames] == [make_id("asset", video_id, "frame", p) for p in pts]


def test_keyframe_sampling_keeps_only_the_streams_key_frames(ctx, folder):
    path, files = folder
    items = source_items({"image_folder": {"path": str(path)}})
    result = ingest(items, ctx, frame_sampling=["keyframe"], max_keyframes=8)
    frames = [r for r in by_ref(result, "clip.mp4") if r["kind"] == "frame"]
    truth = frames_by_time(files["clip.mp4"])
    keys = [t for t, (key, _) in sorted(truth.items()) if key]
    assert keys == [0.0, 0.75, 1.5, 2.25]  # a key frame every 6 frames at 8 fps
    assert [f["frame_ts"] for f in frames] == keys
    capped = ingest(items, ctx, frame_sampling=["keyframe"], max_keyframes=2)
    assert [f["frame_ts"] for f in by_ref(capped, "clip.mp4") if f["kind"] == "frame"] == [0.0, 2.25]


def test_frame_sampling_parameters_are_checked(ctx, folder):
    path, _ = folder
    with pytest.raises(ValueError, match="frames"):
        ingest(source_items({"image_folder": {"path": str(path)}}), ctx, frames=0)
