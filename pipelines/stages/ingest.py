"""Ingest: source items (files or bytes) → `assets` rows, the bytes kept once in the media store.

Counts per source item: each is decoded once (Pillow, EXIF orientation applied, RGB) and becomes an
asset row (sha256, pHash, dHash, the near-duplicate signature, size after orientation, format) or a
reject with a stable reason:

    ingest.unreadable_file   the path could not be read (missing, a folder, no permission)
    ingest.empty_file        0 bytes
    ingest.not_an_image      no decoder recognises the bytes
    ingest.too_many_pixels   width × height > max_pixels, checked from the header before decoding
    ingest.truncated         the header is recognised but decoding fails part-way
    ingest.unreadable_mode   decodes, but to a mode with no conversion to RGB (e.g. TIFF "La")
    ingest.duplicate_bytes   the same bytes as an earlier item of this call
    ingest.unreadable_video  a video container FFmpeg cannot open or decode to its end (truncated, corrupt,
                             a codec this build lacks)
    ingest.no_video_stream   a video container without a video stream (audio only)
    ingest.video_too_long    longer than max_video_seconds

Videos. A file that starts like a video container (MP4/MOV, MKV/WebM, AVI, FLV, Ogg, MPEG-TS/PS:
`pipelines.video.container_format`) is read with PyAV instead of Pillow (`pipelines/video.py`: frame
sampling, truncation checks, costs). It becomes one `video` asset plus a `frame` asset per sampled
frame, all outputs of the one source item (they share its source_ref, so the item counts once, kept):
- the video: asset_id and sha256 of the file, stored as it is (".mp4", ".webm", ...); width and height
  of the stream; `format` the container (MP4, WEBM, ...); its pHash, dHash and near-duplicate
  signature are those of its middle frame (pipelines/video.py says why not a contact sheet), so
  dedup compares videos by what they show (with other videos only: see the dedup stage);
- each frame: `kind` "frame", `parent_asset_id` the video, `frame_ts` seconds from the first frame,
  stored as PNG (sha256 and media_uri of that PNG, so two identical frames share one file), with an
  image's hashes. Its asset_id is make_id("asset", video asset_id, "frame", pts): content-addressed
  by the video and the frame's place in it, so two frames that look the same are still two assets.
Frames are sampled `uniform` (`frames` evenly spaced, first and last included) and/or `keyframe`
(the stream's key frames, at most `max_keyframes`). They are not items of the stages after this one:
they travel with their video (pipelines/stage.py). A video's `scene` is the synthetic clip's graph
over time; its frames have none.

Exact copies are one asset: asset_id is content-addressed ("asset-" + sha256[:24] of the bytes), so
a second item with the same bytes would be a second row for the same id. It is rejected instead, as
`ingest.duplicate_bytes`, naming the item and asset it repeats. The `dedup` stage links exact copies
of assets from earlier runs and near-duplicates, from the signature computed here (`signature`):

    phash             imagehash.phash, exactly (the 32x32 LANCZOS resample of the whole image)
    phash_crops       64-bit pHashes of the central region after cutting PHASH_CROP_LEVELS (1-5 %) off
                      each border: a cropped copy's phash lands near one of its original's crop hashes
    phash_256         256-bit pHashes (16x16 DCT of the same 32x32 resamples) of the whole image, then
                      of each crop: finer detail, to confirm a candidate pair (bar heights, labels)
    colour_histogram  chroma per hue, to confirm that a candidate pair has the same colours

Cost: the crops come from one small copy (a box reduction to a short side of 128-255 px; images that
small are used as they are), each resampled with `reducing_gap=2`, about 0.07 ms a crop, where a
32x32 resample of a 2 MP image costs 5 ms; both hashes of a resample share one DCT. Beyond the pHash
alone, the signature costs about 1.5 ms on a 2 MP image (whose pHash takes 6 ms) and 1 ms on a
224 px one. The dedup stage's docstring has the measurements behind these choices.

Decompression bombs: our `max_pixels` check reads the size from the header, before any decoding.
Pillow's own guard (`Image.MAX_IMAGE_PIXELS`, a process-wide setting) is left as it is: it runs
inside `Image.open`, before we see the size, and its DecompressionBombError becomes our
`ingest.too_many_pixels` reject too. So a `max_pixels` above 2 × Image.MAX_IMAGE_PIXELS (about
179 million) has no effect unless the caller also raises Pillow's limit. (Changing the global here
would change it for every thread of the process; warnings filters are process-wide too, so Pillow's
DecompressionBombWarning, for sizes between its two limits, is not silenced either.)
"""

import io
import re
from typing import Literal

import imagehash
import numpy as np
import pyarrow as pa
import scipy.fftpack
from PIL import Image, UnidentifiedImageError

from pipelines import video
from pipelines.stage import StageContext, StageResult, stage
from schemas import make_id
from schemas.assets import COLOUR_HUE_BINS, PHASH_CROP_LEVELS
from stores.media import MediaStore, to_rgb

SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp",
            "TIFF": ".tiff"}
BOMB = (Image.DecompressionBombError, Image.DecompressionBombWarning)  # the warning, if filters raise it
SMALL_SIDE = 128  # crops are resampled from a copy whose short side is 128-255 px (exact below 256)


class Refused(Exception):
    """An item that becomes a reject: `reason` is the slug after 'ingest.'."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@stage(reads={"source_items": ["source", "source_ref", "path", "content", "scene", "fingerprint"]},
       writes="assets", version=3, unit="file")  # 2: phash_crops, phash_256, colour_histogram; 3: videos and frames
def ingest(source_items: pa.Table, ctx: StageContext, *, max_pixels: int = 40_000_000, frames: int = 8,
           frame_sampling: list[Literal["uniform", "keyframe"]] = ["uniform"], max_keyframes: int = 8,
           max_video_seconds: float = 300.0) -> StageResult:
    """`max_pixels`: larger images (and video frames) are refused unread, as possible decompression bombs (40 MP ≈ a
    7,700² photo); `frames`: uniform frames per video; `frame_sampling`: uniform, keyframe or both; `max_keyframes`:
    key frames kept per video, evenly spaced; `max_video_seconds`: longer videos are refused (decoding reads every frame)."""
    if frames < 1 or max_keyframes < 1:
        raise ValueError(f"ingest: frames ({frames}) and max_keyframes ({max_keyframes}) must be at least 1")
    store = MediaStore(ctx.root)
    assets, rejects = [], []
    first_ref: dict[str, str] = {}  # asset_id -> source_ref of the item that made it
    for item in source_items.to_pylist():
        ref, path = item["source_ref"], item["path"]
        try:
            data = read_bytes(item)
            container = video.container_format(data)
            if container is None:
                described = describe(data, max_pixels)
            else:
                described = video.read_video(data, frames=frames, sampling=frame_sampling, max_keyframes=max_keyframes,
                                             max_seconds=max_video_seconds, max_pixels=max_pixels)
        except (Refused, video.VideoRefused) as refused:
            rejects.append(ctx.reject(ref, f"ingest.{refused.reason}", refused.detail, raw=path or ref))
        else:
            if container is None:
                media_uri, sha256 = store.put(data, SUFFIXES.get(described["format"], f".{described['format'].lower()}"))
                rows = [{**described, "asset_id": "asset-" + sha256[:24], "kind": "image", "media_uri": media_uri, "sha256": sha256}]
            else:
                rows = video_rows(data, described, store)
            asset_id = rows[0]["asset_id"]
            if asset_id in first_ref:
                repeats = f"same bytes as {first_ref[asset_id]!r} (asset {asset_id})"
                rejects.append(ctx.reject(ref, "ingest.duplicate_bytes", repeats, raw=path or ref))
            else:
                first_ref[asset_id] = ref
                assets += [{**row, "source": item["source"], "source_ref": ref, "scene": item["scene"] if k == 0 else None}
                           for k, row in enumerate(rows)]
        ctx.progress(1)
    return StageResult(out=ctx.rows("assets", assets), rejects=ctx.rejects(rejects))


def video_rows(data: bytes, clip: video.Video, store: MediaStore) -> list[dict]:
    """The video's asset row, then one row per sampled frame (PNG in the media store), in time order."""
    media_uri, sha256 = store.put(data, video.SUFFIXES[clip.format])
    video_id = "asset-" + sha256[:24]
    rows = [{**image_columns(clip.representative), "asset_id": video_id, "kind": "video", "media_uri": media_uri, "sha256": sha256,
             "format": clip.format, "width": clip.width, "height": clip.height}]
    for frame in clip.frames:
        buffer = io.BytesIO()
        frame.image.save(buffer, format="PNG")
        frame_uri, frame_sha256 = store.put(buffer.getvalue(), ".png")
        rows.append({**image_columns(frame.image), "asset_id": make_id("asset", video_id, "frame", frame.pts), "kind": "frame",
                     "media_uri": frame_uri, "sha256": frame_sha256, "format": "PNG", "width": frame.image.width,
                     "height": frame.image.height, "parent_asset_id": video_id, "frame_ts": frame.ts})
    return rows


def read_bytes(item: dict) -> bytes:
    if item["content"] is not None:
        data = item["content"]
    elif item["path"] is None:
        raise Refused("empty_file", "0 bytes: the source gave neither bytes nor a path (an empty cell)")
    else:
        try:
            with open(item["path"], "rb") as file:
                data = file.read()
        except OSError as error:
            raise Refused("unreadable_file", f"cannot read {item['path']}: {error.strerror or error}") from None
    if not data:
        raise Refused("empty_file", "0 bytes")
    return data


def describe(data: bytes, max_pixels: int) -> dict:
    """Decode once; return the asset columns the bytes determine (format, size, hashes)."""
    try:
        image = Image.open(io.BytesIO(data))
    except BOMB as error:
        raise Refused("too_many_pixels", pillow_bomb_detail(error)) from None
    except UnidentifiedImageError:
        raise Refused("not_an_image",
                      f"no image decoder recognises it ({len(data):,} bytes, starting {data[:16]!r})") from None
    except Exception as error:  # a decoder recognised the header, then failed (e.g. a cut WebP)
        raise Refused("truncated", f"{len(data):,} bytes; unreadable header: {error}") from None
    with image:
        fmt, (width, height) = image.format, image.size
        if width * height > max_pixels:
            raise Refused("too_many_pixels",
                          f"{width}x{height} = {width * height:,} pixels > max_pixels {max_pixels:,}")
        try:
            image.load()
        except BOMB as error:  # a frame or tile larger than the header said
            raise Refused("too_many_pixels", pillow_bomb_detail(error)) from None
        except Exception as error:
            raise Refused("truncated", f"{fmt} {width}x{height} truncated or corrupt: decoding failed in "
                                       f"a {len(data):,}-byte file: {error}") from None
        try:
            rgb = to_rgb(image)
        except Exception as error:
            raise Refused("unreadable_mode",
                          f"{fmt} decodes to mode {image.mode!r}, which cannot become RGB: {error}") from None
    return {"format": fmt, "width": rgb.width, "height": rgb.height, **image_columns(rgb)}


def image_columns(rgb: Image.Image) -> dict:
    """dHash and the near-duplicate signature of a decoded RGB image."""
    gray = rgb.convert("L")  # once: phash and dhash would each convert the RGB image again
    return {"dhash": str(imagehash.dhash(gray)), **signature(rgb, gray)}


def signature(rgb: Image.Image, gray: Image.Image) -> dict:
    """The near-duplicate columns of an image: phash, phash_crops, phash_256, colour_histogram."""
    whole = gray.resize((32, 32), Image.LANCZOS)  # what imagehash.phash resamples to
    factor = min(gray.size) // SMALL_SIDE
    small = gray.reduce(factor) if factor > 1 else gray
    crops = [small.resize((32, 32), Image.LANCZOS, box=central_box(small.size, level), reducing_gap=2.0)
             for level in PHASH_CROP_LEVELS]
    (phash, phash_256), *of_crops = (dct_hashes(resampled) for resampled in (whole, *crops))
    return {"phash": phash, "phash_crops": [crop[0] for crop in of_crops],
            "phash_256": [phash_256] + [crop[1] for crop in of_crops], "colour_histogram": colour_histogram(rgb)}


def central_box(size: tuple[int, int], level: float) -> tuple[float, float, float, float]:
    """The region left after cutting `level` (a share of the side) off each border, in pixels."""
    width, height = size
    return (width * level, height * level, width * (1 - level), height * (1 - level))


def dct_hashes(resampled: Image.Image) -> tuple[str, str]:
    """pHashes of a 32x32 grey image as hex: its low 8x8 and 16x16 DCT coefficients against their median.

    The 64-bit one is imagehash.phash bit for bit (the same DCT, median and bit order), so a crop hash
    and a plain pHash can be compared; the 256-bit one also sees finer detail.
    """
    dct = scipy.fftpack.dct(scipy.fftpack.dct(np.asarray(resampled), axis=0), axis=1)
    return tuple(np.packbits(low > np.median(low)).tobytes().hex() for low in (dct[:8, :8], dct[:16, :16]))


def colour_histogram(rgb: Image.Image) -> list[float]:
    """Chroma per hue: COLOUR_HUE_BINS bins of 360°/bins, each the summed chroma (max − min of R, G, B,
    as a share of 255) of its pixels over the pixel count, so grey images are all zero.

    Pixels are split linearly between the two nearest bin centres, so a hue on a bin edge does not
    jump from bin to bin. Taken from a 32x32 box average (a large image is first point-sampled to
    128x128, 0.02 ms instead of 3 ms), which also smooths JPEG's colour fringes away.
    """
    sample = rgb if max(rgb.size) <= 256 else rgb.resize((128, 128), Image.NEAREST)
    pixels = np.asarray(sample.resize((32, 32), Image.BOX), np.float32).reshape(-1, 3) / 255
    high, low = pixels.max(axis=1), pixels.min(axis=1)
    chroma = high - low
    red, green, blue = pixels.T
    safe = np.where(chroma > 0, chroma, 1)
    sector = np.where(high == red, (green - blue) / safe % 6,
                      np.where(high == green, (blue - red) / safe + 2, (red - green) / safe + 4))
    position = sector / 6 * COLOUR_HUE_BINS  # in bins: bin b is centred on b * 360° / bins
    below = np.floor(position)
    share = position - below
    bins = np.concatenate([below.astype(int) % COLOUR_HUE_BINS, (below.astype(int) + 1) % COLOUR_HUE_BINS])
    histogram = np.bincount(bins, np.concatenate([chroma * (1 - share), chroma * share]), COLOUR_HUE_BINS)
    return [round(float(v), 4) for v in histogram / len(pixels)]


def pillow_bomb_detail(error: Exception) -> str:
    pixels = re.search(r"\((\d+) pixels\)", str(error))
    size = f"{int(pixels[1]):,} pixels" if pixels else "too many pixels"
    return f"{size}: refused by Pillow's decompression-bomb guard ({error})"
