"""assets: one row per image, video or video frame, stored once in the media store by its sha256."""

from typing import Literal

from pydantic import Field

from schemas.base import Lineage, table


class Asset(Lineage):
    """An image, video or video frame; the bytes live in the media store at `media_uri`."""

    asset_id: str = Field(description="'asset-' + sha256 of the file bytes (content-addressed)")
    kind: Literal["image", "video", "frame"]
    media_uri: str = Field(description="path of the bytes, relative to the dataset root")
    sha256: str
    phash: str = Field(description="64-bit perceptual hash (imagehash.phash), 16 hex digits")
    dhash: str = Field(description="64-bit difference hash (imagehash.dhash), 16 hex digits")
    width: int = Field(description="pixels, after EXIF orientation is applied")
    height: int
    format: str = Field(description="decoder format: PNG, JPEG, ...")
    source: str = Field(description="source name from the recipe: synthetic, image_folder, hf_dataset")
    source_ref: str = Field(description="where the source had it: a path, 'dataset:split:index', a scene id")
    parent_asset_id: str | None = None
    frame_ts: float | None = None
    duplicate_of: str | None = Field(None, description="asset this one duplicates (excluded downstream)")
    duplicate_distance: int | None = Field(None, description="pHash Hamming distance to duplicate_of; 0 = same bytes")
    scene: str | None = Field(None, description="JSON scene graph (synthetic world only): the exact ground truth")


TABLE = table("assets", Asset, "asset_id")
