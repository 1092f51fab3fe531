"""assets: one row per image, video or video frame, stored once in the media store by its sha256."""

from typing import Literal

from pydantic import Field

from schemas.base import Lineage, table

# Shares of the side cut off each border for `phash_crops` (and `phash_256` after the whole image). Dedup
# names a crop match by its level; changing these changes what stored hashes mean: bump ingest's version.
PHASH_CROP_LEVELS = (0.01, 0.02, 0.03, 0.04, 0.05)
COLOUR_HUE_BINS = 12  # 30° each, centred on red (0°), orange (30°), yellow (60°), ...


class Asset(Lineage):
    """An image, video or video frame; the bytes live in the media store at `media_uri`."""

    asset_id: str = Field(description="'asset-' + sha256 of the file bytes (content-addressed)")
    kind: Literal["image", "video", "frame"]
    media_uri: str = Field(description="path of the bytes, relative to the dataset root")
    sha256: str
    phash: str = Field(description="64-bit perceptual hash (imagehash.phash), 16 hex digits")
    dhash: str = Field(description="64-bit difference hash (imagehash.dhash), 16 hex digits")
    # The near-duplicate signature (pipelines/stages/ingest.py `signature`; null in rows from before it).
    phash_crops: list[str] | None = Field(
        None, description="64-bit pHashes of the central region after cutting 1, 2, 3, 4 and 5 % off each border "
                          "(PHASH_CROP_LEVELS), 16 hex digits each; dedup compares them with other assets' phash")
    phash_256: list[str] | None = Field(
        None, description="256-bit pHashes (16x16 DCT of a 32x32 resample) of the whole image, then of each crop "
                          "in phash_crops, 64 hex digits each; dedup confirms a candidate pair with them")
    colour_histogram: list[float] | None = Field(
        None, description="chroma per hue in 12 bins of 30° (red, orange, yellow, ...): summed chroma (0-1) of the "
                          "pixels of each hue over the pixel count, from a 32x32 box average; all 0 for grey images")
    width: int = Field(description="pixels, after EXIF orientation is applied")
    height: int
    format: str = Field(description="decoder format: PNG, JPEG, ...")
    source: str = Field(description="source name from the recipe: synthetic, image_folder, hf_dataset")
    source_ref: str = Field(description="where the source had it: a path, 'dataset:split:index', a scene id")
    parent_asset_id: str | None = None
    frame_ts: float | None = None
    duplicate_of: str | None = Field(None, description="asset this one duplicates (excluded downstream)")
    duplicate_distance: int | None = Field(
        None, description="pHash Hamming distance to duplicate_of, the least between either's phash and the other's "
                          "phash or phash_crops; 0 = same bytes")
    scene: str | None = Field(None, description="JSON scene graph (synthetic world only): the exact ground truth")


TABLE = table("assets", Asset, "asset_id")
