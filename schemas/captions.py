"""captions: one row per (asset, style, model, prompt version)."""

from typing import Literal

from schemas.base import ModelLineage, table


class Caption(ModelLineage):
    """A description of an asset in one style (coarse, fine, pseudo_cot, bridge)."""

    caption_id: str
    asset_id: str
    style: Literal["coarse", "fine", "pseudo_cot", "bridge"]
    text: str


TABLE = table("captions", Caption, "caption_id")
