"""Video files with PyAV (FFmpeg): recognise a container, sample its frames, and encode the synthetic clips.

Recognising. `container_format(data)` looks at the first bytes only: MP4 / MOV ("ftyp" box), Matroska
and WebM (EBML header), AVI ("RIFF....AVI "), FLV, Ogg, MPEG-TS (sync byte 0x47 every 188 bytes) and
MPEG-PS (pack header). Anything else goes to the image decoder, so a text file stays
`ingest.not_an_image`: FFmpeg would open almost anything (a text file as an ANSI "tty" video), so
that it opens is no test of being a video. GIF and animated WebP/PNG stay images (Pillow's first frame).

Reading (`read_video`) is two passes over the bytes:
1. demux, no decoding: every packet of the first video stream, with its pts and key flag. Sorted by
   pts this is the frame list in display order (B-frames are stored out of order), which fixes the
   frame count, the duration and which frames are key frames before a pixel is decoded;
2. decode every frame in order and keep the wanted ones (a seek would land on the key frame before a
   target and give another frame than asked for on some containers; short videos make one pass cheap).
Sampling, by frame position in display order:
- uniform: `n` positions evenly spaced from the first frame to the last, both included
  (`uniform_positions`: round(linspace(0, n_frames - 1, n))); all frames when there are fewer;
- keyframe: the stream's key frames (packets the demuxer flags key: I / IDR frames), at most
  `max_keyframes`, evenly spaced among them in the same way when there are more.
A frame picked by both is one frame, listing both in `sampled_by`. Timestamps are seconds from the
first frame, (pts − first pts) × time_base, so a stream that starts at 1.4 s (MPEG-TS) starts at 0.
A stream's display rotation (phone videos) is not applied: width and height are as coded.

The video's own near-duplicate signature is computed by ingest from `Video.representative`: its
middle frame (position (n − 1) // 2), whatever the sampling parameters, so two copies of one video
hash alike however each was ingested. Measured on 60 synthetic clips (160 px), re-encoding a CRF 23
clip at CRF 28, 30 or 35 moves the middle frame's pHash by at most 4 bits (mean 0.2), within dedup's 4;
a 2×2 contact sheet of four frames, tried first, moved up to 16 bits (each frame gets only 16×16 of
pHash's 32×32 resample, and these frames are mostly white), so it would miss re-encodes.

A video that cannot be read is `VideoRefused(reason, detail)`; ingest turns it into a reject:
    unreadable_video  FFmpeg cannot open the container, or decoding stops short of frames the
                      container lists (truncated, corrupt, a codec this FFmpeg build lacks)
    no_video_stream   the container holds no video stream (audio only)
    video_too_long    longer than `max_seconds`, from the header before decoding, else from the pts
    too_many_pixels   a frame of width × height > `max_pixels`, from the stream header

Encoding (`encode_clip`, for the synthetic world): MP4 / H.264 (libx264, in the PyAV wheel), yuv420p,
CRF 23 (x264's default), one key frame each `gop` frames and no scene-cut key frames, so key frames
sit where the clip asks. Two encodes of the same frames are byte-identical only with x264 on one
thread and its macroblock tree off (`mbtree=0`, ~7 % larger files), measured with PyAV 18.1.0: with
x264's default threads bytes varied from run to run, and on one thread with the tree on, 4 of 24
clips still gave two or more different encodings over 40 runs each; with it off, 0 of 24 (960
encodes). The input frames are also kept referenced until the flush. Decoding is bit-exact, so the
same bytes give the same frames. Another PyAV / FFmpeg / x264 build may encode the
same frames to other bytes: `ENCODER` names the build, for the synthetic source's fingerprints.

Cost (2 cores, PyAV 18.1.0): a 3 s 224×224 clip encodes in ~40 ms and reads (both passes, 8 frames
kept) in ~15 ms; decoding runs at several hundred 224² frames a second, tens for 1080p, so a long
video costs its full decode: `max_seconds` bounds it.
"""

import io
import math
from dataclasses import dataclass
from typing import Sequence

import av
import numpy as np
from PIL import Image

ENCODER = f"libx264@pyav-{av.__version__}"
SAMPLINGS = ("uniform", "keyframe")
SUFFIXES = {"MP4": ".mp4", "MOV": ".mov", "MKV": ".mkv", "WEBM": ".webm", "AVI": ".avi", "FLV": ".flv", "OGG": ".ogv",
            "MPEG-TS": ".ts", "MPEG-PS": ".mpg"}


class VideoRefused(Exception):
    """A video that becomes a reject: `reason` is the slug after 'ingest.'."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Frame:
    """One sampled frame: its position in display order, timestamps, key flag and pixels (RGB)."""

    position: int
    pts: int
    ts: float                       # seconds from the first frame
    key: bool
    sampled_by: tuple[str, ...]     # "uniform", "keyframe" or both
    image: Image.Image


@dataclass(frozen=True)
class Video:
    format: str                     # from container_format: MP4, MKV, WEBM, ...
    codec: str                      # FFmpeg's decoder name: h264, vp9, ...
    width: int
    height: int
    n_frames: int
    duration_s: float               # first frame to the end of the last (its pts step), in seconds
    frames: tuple[Frame, ...]       # the sampled frames, in time order
    representative: Image.Image     # the middle frame, for the signature (see the module doc)


def container_format(data: bytes) -> str | None:
    """The video container the bytes start with (a key of SUFFIXES), or None when it is none we take."""
    head = data[:64]
    if head[4:8] == b"ftyp":
        return "MOV" if head[8:12] == b"qt  " else "MP4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "WEBM" if b"webm" in head else "MKV"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "AVI"
    if head[:3] == b"FLV":
        return "FLV"
    if head[:4] == b"OggS":
        return "OGG"
    if head[:4] == b"\x00\x00\x01\xba":
        return "MPEG-PS"
    if len(data) >= 3 * 188 and all(data[k * 188] == 0x47 for k in range(3)):
        return "MPEG-TS"
    return None


def uniform_positions(n_frames: int, n: int) -> list[int]:
    """`n` positions among `n_frames`, evenly spaced, first and last included (all of them if fewer).

    >>> uniform_positions(24, 8)
    [0, 3, 7, 10, 13, 16, 20, 23]
    """
    if n_frames <= n:
        return list(range(n_frames))
    if n == 1:
        return [(n_frames - 1) // 2]
    return sorted({int(p) for p in np.round(np.linspace(0, n_frames - 1, n))})


def read_video(data: bytes, *, frames: int, sampling: Sequence[str], max_keyframes: int, max_seconds: float,
               max_pixels: int) -> Video:
    """Sample `frames` uniform frames and/or up to `max_keyframes` key frames (see the module doc)."""
    unknown = [s for s in sampling if s not in SAMPLINGS]
    if unknown or not sampling:
        raise ValueError(f"frame sampling {list(sampling)!r}: choose one or more of {', '.join(SAMPLINGS)}")
    fmt = container_format(data)
    timeline, keys, stream_info = _demux(data, fmt, max_seconds, max_pixels)
    first, time_base = timeline[0], stream_info["time_base"]
    step = min((b - a for a, b in zip(timeline, timeline[1:]) if b > a), default=0)
    duration_s = float((timeline[-1] - first + step) * time_base)
    if duration_s > max_seconds:
        raise VideoRefused("video_too_long", f"{fmt} video of {duration_s:.1f} s (from its frames) > max_video_seconds {max_seconds:g}")
    _check_complete(fmt, len(timeline), duration_s, float(step * time_base), stream_info)

    wanted: dict[int, list[str]] = {}
    if "uniform" in sampling:
        for position in uniform_positions(len(timeline), frames):
            wanted.setdefault(position, []).append("uniform")
    if "keyframe" in sampling:
        key_positions = [p for p, pts in enumerate(timeline) if pts in keys]
        for k in uniform_positions(len(key_positions), max_keyframes):
            wanted.setdefault(key_positions[k], []).append("keyframe")
    middle = (len(timeline) - 1) // 2
    images = _decode(data, fmt, {timeline[p] for p in {*wanted, middle}}, len(timeline))

    sampled = tuple(Frame(p, timeline[p], round(float((timeline[p] - first) * time_base), 6), timeline[p] in keys,
                          tuple(wanted[p]), images[timeline[p]]) for p in sorted(wanted))
    return Video(fmt, stream_info["codec"], stream_info["width"], stream_info["height"], len(timeline), duration_s,
                 sampled, images[timeline[middle]])


def _demux(data: bytes, fmt: str, max_seconds: float, max_pixels: int) -> tuple[list[int], set[int], dict]:
    """Pass 1: the frames' pts in display order, the key frames' pts, and the stream's facts."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                kinds = ", ".join(s.type for s in container.streams) or "none"
                raise VideoRefused("no_video_stream", f"{fmt} container without a video stream (streams: {kinds})")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if width * height > max_pixels:
                raise VideoRefused("too_many_pixels", f"{fmt} video of {width}x{height} = {width * height:,} pixels a frame "
                                                      f"> max_pixels {max_pixels:,}")
            declared = _declared_seconds(container, stream)
            if declared is not None and declared > max_seconds:
                raise VideoRefused("video_too_long", f"{fmt} video of {declared:.1f} s (from its header) > "
                                                     f"max_video_seconds {max_seconds:g}")
            info = {"codec": stream.codec_context.name, "width": width, "height": height, "time_base": stream.time_base,
                    "declared_frames": stream.frames, "declared_s": declared if _video_only(container, stream) else None}
            packets = [((p.pts if p.pts is not None else p.dts), p.is_keyframe) for p in container.demux(stream) if p.size]
    except av.error.FFmpegError as error:
        raise VideoRefused("unreadable_video", f"{fmt} container, {len(data):,} bytes: FFmpeg cannot read it: {error}") from None
    if not packets:
        raise VideoRefused("unreadable_video", f"{fmt} container, {len(data):,} bytes: its video stream has no frames "
                                               "(truncated before the first one?)")
    if any(pts is None for pts, _ in packets) or info["time_base"] is None:
        raise VideoRefused("unreadable_video", f"{fmt} container: frames without timestamps, so they cannot be placed in time")
    timeline = sorted({pts for pts, _ in packets})
    return timeline, {pts for pts, key in packets if key}, info


def _check_complete(fmt: str, n_frames: int, duration_s: float, step_s: float, info: dict) -> None:
    """A container cut short still demuxes the frames before the cut: compare them with its header.

    Truncated when the header lists more frames than there are, or when the frames end more than
    2 frame steps + 1 % before the video's declared duration (the stream's own, or the container's
    when the video is its only stream: an audio track may outlast the picture).
    """
    if info["declared_frames"] and n_frames < info["declared_frames"]:
        raise VideoRefused("unreadable_video", f"{fmt} video: its header lists {info['declared_frames']} frames, the file "
                                               f"holds {n_frames} (truncated)")
    declared = info["declared_s"]
    if declared is not None and duration_s < declared - 2 * step_s - 0.01 * declared:
        raise VideoRefused("unreadable_video", f"{fmt} video: its header declares {declared:.2f} s, its frames end at "
                                               f"{duration_s:.2f} s (truncated)")


def _video_only(container, stream) -> bool:
    return stream.duration is not None or len(container.streams) == 1


def _declared_seconds(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _decode(data: bytes, fmt: str, wanted_pts: set[int], n_frames: int) -> dict[int, Image.Image]:
    """Pass 2: decode in order; the RGB image of every wanted pts, or VideoRefused if one never comes."""
    images, decoded = {}, 0
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            for frame in container.decode(video=0):
                decoded += 1
                if frame.pts in wanted_pts:
                    images[frame.pts] = frame.to_image().convert("RGB")
    except av.error.FFmpegError as error:
        raise VideoRefused("unreadable_video", f"{fmt} video: decoding failed after {decoded} of {n_frames} frames "
                                               f"(truncated or corrupt?): {error}") from None
    if len(images) < len(wanted_pts):
        raise VideoRefused("unreadable_video", f"{fmt} video: its container lists {n_frames} frames but only {decoded} "
                                               f"decode (truncated or corrupt)")
    return images


def contact_sheet(images: Sequence[Image.Image], *, columns: int | None = None, max_side: int | None = None) -> Image.Image:
    """Frames in a grid, left to right then top to bottom, each at the first frame's size; empty cells white.

    `columns`: default ceil(sqrt(n)), a near-square grid. `max_side`: scale the sheet down (never up) so
    its longer side fits.
    """
    if not images:
        raise ValueError("a contact sheet needs at least one frame")
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    width, height = images[0].size
    sheet = Image.new("RGB", (columns * width, rows * height), (255, 255, 255))
    for index, image in enumerate(images):
        tile = image if image.size == (width, height) else image.resize((width, height), Image.BILINEAR)
        sheet.paste(tile.convert("RGB"), ((index % columns) * width, (index // columns) * height))
    if max_side and max(sheet.size) > max_side:
        scale = max_side / max(sheet.size)
        sheet = sheet.resize((max(1, round(sheet.width * scale)), max(1, round(sheet.height * scale))), Image.BOX)
    return sheet


def encode_clip(images: Sequence[Image.Image], fps: int, *, gop: int, crf: int = 23) -> bytes:
    """MP4 / H.264 of `images` at `fps`, a key frame every `gop` frames (see the module doc on determinism)."""
    width, height = images[0].size
    if width % 2 or height % 2:
        raise ValueError(f"H.264 in yuv420p needs even sides; got {width}x{height}")
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.thread_count = 1
        stream.options = {"crf": str(crf), "x264-params": f"scenecut=0:keyint={gop}:min-keyint={gop}:mbtree=0"}
        # Converted up front and kept referenced until the flush (the encoder may hold a frame it was given).
        frames = [av.VideoFrame.from_image(image.convert("RGB")).reformat(format="yuv420p") for image in images]
        for index, frame in enumerate(frames):
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return buffer.getvalue()
