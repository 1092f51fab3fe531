"""pipelines/video.py: recognising containers, sampling frames uniformly and at key frames, refusing bad videos."""

import io
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipelines import video
from pipelines.video import VideoRefused, container_format, contact_sheet, encode_clip, read_video, uniform_positions
from tests.media_files import encode, photo

LIMITS = {"max_keyframes": 8, "max_seconds": 60.0, "max_pixels": 10**8}


def moving_square(n_frames: int = 24, size: int = 64) -> list[Image.Image]:
    """A red square sliding right, one pixel column per frame: every frame differs from the others."""
    frames = []
    for i in range(n_frames):
        image = Image.new("RGB", (size, size), "white")
        ImageDraw.Draw(image).rectangle((i, 20, i + 16, 36), fill=(220, 30, 30))
        frames.append(image)
    return frames


def decoded(data: bytes) -> list[av.VideoFrame]:
    """Every frame of a video, decoded independently of pipelines/video.py."""
    with av.open(io.BytesIO(data)) as container:
        return [(frame.pts, frame.key_frame, frame.time, frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]


def webm(frames: list[Image.Image], fps: int = 8) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="webm") as container:
        stream = container.add_stream("libvpx-vp9", rate=fps)
        stream.width, stream.height, stream.pix_fmt = *frames[0].size, "yuv420p"
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_image(image)
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return buffer.getvalue()


def test_containers_are_recognised_by_their_first_bytes_only():
    mp4 = encode_clip(moving_square(8), 8, gop=8)
    assert container_format(mp4) == "MP4"
    assert container_format(webm(moving_square(8))) == "WEBM"
    assert container_format(encode(photo(), "PNG")) is None
    assert container_format(encode(photo(), "GIF")) is None  # animated or not, a GIF stays an image
    assert container_format(b"not a video, just some words\n" * 10) is None  # FFmpeg would open it as a "tty" video


def test_uniform_positions_include_the_first_and_last_frame():
    assert uniform_positions(24, 8) == [0, 3, 7, 10, 13, 16, 20, 23]
    assert uniform_positions(5, 8) == [0, 1, 2, 3, 4]
    assert uniform_positions(24, 1) == [11]
    assert uniform_positions(24, 2) == [0, 23]


def test_uniform_sampling_returns_evenly_spaced_frames_with_their_times_and_pixels():
    data = encode_clip(moving_square(24), 8, gop=8)
    result = read_video(data, frames=6, sampling=["uniform"], **LIMITS)
    assert (result.format, result.codec, result.width, result.height, result.n_frames) == ("MP4", "h264", 64, 64, 24)
    assert result.duration_s == pytest.approx(3.0)
    assert [f.position for f in result.frames] == uniform_positions(24, 6) == [0, 5, 9, 14, 18, 23]
    assert [f.ts for f in result.frames] == [p / 8 for p in (0, 5, 9, 14, 18, 23)]
    assert all(f.sampled_by == ("uniform",) for f in result.frames)
    truth = {pts: pixels for pts, _, _, pixels in decoded(data)}
    for frame in result.frames:
        assert np.array_equal(np.asarray(frame.image), truth[frame.pts])


def test_keyframe_sampling_returns_the_key_frames_only_and_caps_them_evenly():
    data = encode_clip(moving_square(24), 8, gop=4)  # key frames at 0, 4, 8, ..., 20
    keys = [pts for pts, key, _, _ in decoded(data) if key]
    assert len(keys) == 6
    result = read_video(data, frames=8, sampling=["keyframe"], **LIMITS)
    assert [f.pts for f in result.frames] == keys and all(f.key for f in result.frames)
    assert [f.position for f in result.frames] == [0, 4, 8, 12, 16, 20]
    capped = read_video(data, frames=8, sampling=["keyframe"], **{**LIMITS, "max_keyframes": 3})
    assert [f.position for f in capped.frames] == [0, 8, 20]  # evenly spaced among the six: 0, 2.5, 5 -> 0, 2, 5
    both = read_video(data, frames=2, sampling=["uniform", "keyframe"], **LIMITS)
    assert [(f.position, f.sampled_by) for f in both.frames] == [
        (0, ("uniform", "keyframe")), (4, ("keyframe",)), (8, ("keyframe",)), (12, ("keyframe",)), (16, ("keyframe",)),
        (20, ("keyframe",)), (23, ("uniform",))]


def test_webm_and_vp9_read_the_same_way():
    result = read_video(webm(moving_square(16)), frames=4, sampling=["uniform"], **LIMITS)
    assert (result.format, result.codec, result.n_frames) == ("WEBM", "vp9", 16)
    assert [f.ts for f in result.frames] == [0.0, 0.625, 1.25, 1.875]


@pytest.mark.parametrize("share", [0.3, 0.6, 0.9])
def test_a_truncated_video_is_refused_as_unreadable(share):
    data = encode_clip(moving_square(24), 8, gop=8)
    with pytest.raises(VideoRefused) as refused:
        read_video(data[:int(len(data) * share)], frames=8, sampling=["uniform"], **LIMITS)
    assert refused.value.reason == "unreadable_video" and "MP4" in refused.value.detail


def test_a_cut_webm_whose_header_declares_more_is_refused():
    data = webm(moving_square(24))
    with pytest.raises(VideoRefused) as refused:
        read_video(data[:int(len(data) * 0.9)], frames=8, sampling=["uniform"], **LIMITS)
    assert refused.value.reason == "unreadable_video" and "truncated" in refused.value.detail


def test_a_cut_faststart_mp4_is_refused_because_its_header_lists_more_frames(tmp_path: Path):
    path = tmp_path / "faststart.mp4"  # moov first: the frame index survives the cut, the frames do not
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for index, image in enumerate(moving_square(24)):
            frame = av.VideoFrame.from_image(image)
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    data = path.read_bytes()
    with pytest.raises(VideoRefused) as refused:
        read_video(data[:int(len(data) * 0.8)], frames=8, sampling=["uniform"], **LIMITS)
    assert refused.value.reason == "unreadable_video" and "lists 24 frames" in refused.value.detail


def test_too_long_and_too_large_videos_are_refused_before_decoding():
    data = encode_clip(moving_square(24), 8, gop=8)
    with pytest.raises(VideoRefused) as refused:
        read_video(data, frames=8, sampling=["uniform"], **{**LIMITS, "max_seconds": 2.0})
    assert refused.value.reason == "video_too_long" and "3.0 s" in refused.value.detail
    with pytest.raises(VideoRefused) as refused:
        read_video(data, frames=8, sampling=["uniform"], **{**LIMITS, "max_pixels": 64 * 64 - 1})
    assert refused.value.reason == "too_many_pixels"


def test_an_audio_only_container_has_no_video_stream():
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = np.zeros((1, 1024 * 8), np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with pytest.raises(VideoRefused) as refused:
        read_video(buffer.getvalue(), frames=8, sampling=["uniform"], **LIMITS)
    assert refused.value.reason == "no_video_stream" and "audio" in refused.value.detail


def test_encoding_the_same_frames_twice_gives_the_same_bytes():
    frames = moving_square(24)
    assert encode_clip(frames, 8, gop=8) == encode_clip(frames, 8, gop=8)
    assert video.ENCODER.startswith("libx264@pyav-")


def test_a_contact_sheet_lays_frames_out_left_to_right_then_down():
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 0, 0), (255, 255, 0)]
    sheet = contact_sheet([Image.new("RGB", (10, 8), c) for c in colours])
    assert sheet.size == (30, 16)  # 3 columns (ceil √5), 2 rows
    assert [sheet.getpixel((x, y)) for x, y in ((5, 4), (15, 4), (25, 4), (5, 12), (15, 12), (25, 12))] == [
        *colours, (255, 255, 255)]
    assert max(contact_sheet([Image.new("RGB", (100, 100))] * 9, max_side=150).size) == 150
