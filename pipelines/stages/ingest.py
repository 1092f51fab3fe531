"""Ingest: source items (files or bytes) → `assets` rows, the bytes kept once in the media store.

Counts per source item: each is decoded once (Pillow, EXIF orientation applied, RGB) and becomes an
asset row (sha256, pHash, dHash, size after orientation, format) or a reject with a stable reason:

    ingest.unreadable_file   the path could not be read (missing, a folder, no permission)
    ingest.empty_file        0 bytes
    ingest.not_an_image      no decoder recognises the bytes
    ingest.too_many_pixels   width × height > max_pixels, checked from the header before decoding
    ingest.truncated         the header is recognised but decoding fails part-way
    ingest.unreadable_mode   decodes, but to a mode with no conversion to RGB (e.g. TIFF "La")
    ingest.duplicate_bytes   the same bytes as an earlier item of this call

Exact copies are one asset: asset_id is content-addressed ("asset-" + sha256[:24] of the bytes), so
a second item with the same bytes would be a second row for the same id. It is rejected instead, as
`ingest.duplicate_bytes`, naming the item and asset it repeats. The `dedup` stage links exact copies
of assets from earlier runs and near-duplicates (pHash distance).

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

import imagehash
import pyarrow as pa
from PIL import Image, UnidentifiedImageError

from pipelines.stage import StageContext, StageResult, stage
from stores.media import MediaStore, to_rgb

SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp",
            "TIFF": ".tiff"}
BOMB = (Image.DecompressionBombError, Image.DecompressionBombWarning)  # the warning, if filters raise it


class Refused(Exception):
    """An item that becomes a reject: `reason` is the slug after 'ingest.'."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@stage(reads={"source_items": ["source", "source_ref", "path", "content", "scene", "fingerprint"]},
       writes="assets", version=1, unit="file")
def ingest(source_items: pa.Table, ctx: StageContext, *, max_pixels: int = 40_000_000) -> StageResult:
    """`max_pixels`: larger images are refused unread, as possible decompression bombs (40 MP ≈ a 7,700² photo)."""
    store = MediaStore(ctx.root)
    assets, rejects = [], []
    first_ref: dict[str, str] = {}  # asset_id -> source_ref of the item that made it
    for item in source_items.to_pylist():
        ref, path = item["source_ref"], item["path"]
        try:
            data = read_bytes(item)
            asset = describe(data, max_pixels)
        except Refused as refused:
            rejects.append(ctx.reject(ref, f"ingest.{refused.reason}", refused.detail, raw=path or ref))
        else:
            media_uri, sha256 = store.put(data, SUFFIXES.get(asset["format"], f".{asset['format'].lower()}"))
            asset_id = "asset-" + sha256[:24]
            if asset_id in first_ref:
                repeats = f"same bytes as {first_ref[asset_id]!r} (asset {asset_id})"
                rejects.append(ctx.reject(ref, "ingest.duplicate_bytes", repeats, raw=path or ref))
            else:
                first_ref[asset_id] = ref
                assets.append({**asset, "asset_id": asset_id, "kind": "image", "media_uri": media_uri,
                               "sha256": sha256, "source": item["source"], "source_ref": ref, "scene": item["scene"]})
        ctx.progress(1)
    return StageResult(out=ctx.rows("assets", assets), rejects=ctx.rejects(rejects))


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
    gray = rgb.convert("L")  # once: phash and dhash would each convert the RGB image again
    return {"format": fmt, "width": rgb.width, "height": rgb.height,
            "phash": str(imagehash.phash(gray)), "dhash": str(imagehash.dhash(gray))}


def pillow_bomb_detail(error: Exception) -> str:
    pixels = re.search(r"\((\d+) pixels\)", str(error))
    size = f"{int(pixels[1]):,} pixels" if pixels else "too many pixels"
    return f"{size}: refused by Pillow's decompression-bomb guard ({error})"
