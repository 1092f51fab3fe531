"""What a model sees of an asset: an image as one image part; a video as its frames, in time order.

Video frames are `assets` rows of kind "frame" whose `parent_asset_id` is the video (ingest samples
them). They are not items of any stage after ingest (pipelines/stage.py): they come in the same
`assets` table a stage gets, next to their video (the flow keeps them in their video's shard, and
`related` brings them with the assets a question names). `Visuals` indexes such a table once.

- Teachers (`parts`): a video is sent as all of its frame assets, in time order, each preceded by a
  text part "t = 1.5 s" (seconds from the first frame), after the line "Frames of a video, in time
  order:". The frames are those ingest sampled (its `frames`, `frame_sampling` and
  `max_keyframes` decide how many a model sees). The openai engine turns each into an `image_url`
  part (a vLLM server must allow that many per prompt: `--limit-mm-per-prompt '{"image": 8}'`); the
  hf engine gives the processor several images (LLaVA expands one <image> per frame); the scripted
  teacher reads the clip's scene graph from the hints instead.
- The policy (`policy_image`, `policy_part`): the tiny policy takes one image per prompt (TRL's GRPO
  rows carry a single `image`, and its chat has one placeholder), so a video reaches it as one
  contact sheet of its frames, left to right then top to bottom in a near-square grid, at most
  `POLICY_SHEET_SIDE` px on its longer side. Rollouts need it as a file: it is stored in the media
  store as PNG (content-addressed: the same frames give the same file, written once).
"""

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pipelines.engines.base import image_part, text_part
from pipelines.video import contact_sheet
from stores.media import MediaStore, open_image

POLICY_SHEET_SIDE = 448  # a 3×3 sheet of 224 px frames is 672 px: the tiny policy resizes far below either


@dataclass
class Visuals:
    """The items (images and videos) of an assets table, and each video's frames in time order."""

    items: list[dict]
    frames: dict[str, list[dict]] = field(default_factory=dict)

    @classmethod
    def of(cls, rows: list[dict]) -> "Visuals":
        items = [r for r in rows if r.get("parent_asset_id") is None]
        frames: dict[str, list[dict]] = {}
        for row in rows:
            if row.get("parent_asset_id") is not None:
                frames.setdefault(row["parent_asset_id"], []).append(row)
        return cls(items, {video: sorted(rows, key=lambda r: r["frame_ts"]) for video, rows in frames.items()})

    def frames_of(self, asset: dict) -> list[dict]:
        frames = self.frames.get(asset["asset_id"], [])
        if not frames:  # ingest always samples at least one; a missing frame is a flow bug, not bad data
            raise LookupError(f"video {asset['asset_id']} came without its frame assets (kind 'frame', parent_asset_id "
                              "= the video): the flow must pass them with it")
        return frames

    def parts(self, asset: dict, media_path: Callable[[str], Path]) -> list[dict]:
        """Content parts that show `asset` to a teacher: one image, or a video's frames with their times."""
        if asset.get("kind") != "video":
            return [image_part(media_path(asset["media_uri"]), asset["sha256"])]
        frames = self.frames_of(asset)
        parts = [text_part("Frames of a video, in time order:")]
        for frame in frames:
            parts += [text_part(f"t = {round(frame['frame_ts'], 3):g} s"), image_part(media_path(frame["media_uri"]), frame["sha256"])]
        return parts

    def policy_image(self, asset: dict, media_path: Callable[[str], Path]):
        """The one PIL image the policy sees: the image itself, or a video's contact sheet."""
        if asset.get("kind") != "video":
            return open_image(media_path(asset["media_uri"]))
        return contact_sheet([open_image(media_path(f["media_uri"])) for f in self.frames_of(asset)],
                             max_side=POLICY_SHEET_SIDE)

    def policy_part(self, asset: dict, root: Path) -> dict:
        """`policy_image` as an image part: the asset's own file, or the contact sheet stored as PNG."""
        if asset.get("kind") != "video":
            return image_part(Path(root) / asset["media_uri"], asset["sha256"])
        buffer = io.BytesIO()
        self.policy_image(asset, lambda uri: Path(root) / uri).save(buffer, format="PNG")
        media_uri, sha256 = MediaStore(root).put(buffer.getvalue(), ".png")
        return image_part(Path(root) / media_uri, sha256)


def medium(asset: dict) -> str:
    """How prompts name the asset: "video" or "image"."""
    return "video" if asset.get("kind") == "video" else "image"


def with_article(medium_name: str) -> str:
    """"an image" or "a video", for prompts."""
    return "a video" if medium_name == "video" else "an image"
