"""caption: describe each image, coarse (one or two sentences) then fine (every detail that matters).

WeThink's question writer never sees the image: it works from the fine caption, so the fine caption
must name every object, attribute, number and label a question could ask about. Each (asset,
style) is one call to the `captioner` role. An asset is kept when every requested style produced a
usable caption; otherwise it is rejected (`caption.engine_error` when the model could not answer,
`caption.too_short` when it answered with almost nothing, even after a retry). Captions that did
succeed are still written.

Videos are captioned from their frames: the request carries every frame asset of the video in time
order, each after its time ("t = 1.5 s"; `pipelines/visuals.py`), and asks what happens over time
(`VIDEO_PROMPTS`, prompt version `caption-video-v1`). Frame assets themselves are not captioned: they
are not items here (pipelines/stage.py), only the pictures their video is shown by, so they are
neither counted nor rejected.
"""

from typing import Literal

import pyarrow as pa

from pipelines.engines.base import Request, user
from pipelines.stage import StageContext, StageResult, stage
from pipelines.structured import ask
from pipelines.visuals import Visuals
from schemas import make_id

PROMPT_VERSION = "caption-v1"
VIDEO_PROMPT_VERSION = "caption-video-v1"
PROMPTS = {
    "coarse": "Describe this image in one or two sentences: what kind of image it is and what it shows overall.",
    "fine": ("Describe this image in full detail, so that someone who cannot see it could answer any question "
             "about it: every object with its colour, shape, size and position, every number or text label "
             "and what it is written on, and, for charts, every bar or point with its label and value."),
}
VIDEO_PROMPTS = {
    "coarse": "Describe this video in one or two sentences: what it shows and what happens over time.",
    "fine": ("Describe this video in full detail and in time order, so that someone who cannot see it could answer any "
             "question about it: first everything shown at the start (every object with its colour, shape, size and "
             "position, every number or text label), then each change as it happens and when (what appears, "
             "disappears, moves or changes, and to what), then what is shown at the end."),
}


@stage(reads={"assets": ["asset_id", "kind", "media_uri", "sha256", "scene", "parent_asset_id", "frame_ts"]},
       writes="captions", version=1, unit="asset", engines=("captioner",))
def caption(assets: pa.Table, ctx: StageContext, *, styles: list[Literal["coarse", "fine"]] = ["coarse", "fine"],
            max_tokens: int = 512, min_words: int = 4, max_retries: int = 1) -> StageResult:
    """`styles`: which captions to write; `min_words`: shorter output is retried, then rejected."""
    engine = ctx.engine("captioner")
    visuals = Visuals.of(assets.to_pylist())
    jobs = [(asset, style) for asset in visuals.items for style in styles]
    requests = [Request(messages=[user(*visuals.parts(a, ctx.media_path), _prompts(a)[style])], max_tokens=max_tokens,
                        prompt_version=_version(a), task=f"caption.{style}", hints={"scene": a["scene"]}) for a, style in jobs]

    def parse(text: str) -> str:
        text = text.strip()
        if len(text.split()) < min_words:
            raise ValueError(f"the description has {len(text.split())} words; write at least {min_words}")
        return text

    rows, rejects = [], []
    for (asset, style), answer in zip(jobs, ask(engine, requests, parse, max_retries=max_retries)):
        asset_id = asset["asset_id"]
        if answer.ok:
            version = _version(asset)
            rows.append({"caption_id": make_id("caption", asset_id, style, engine.model, version), "asset_id": asset_id,
                         "style": style, "text": answer.value, "model": engine.model, "model_revision": engine.revision,
                         "prompt_version": version, "call_id": answer.call_id})
        elif not any(r["subject_id"] == asset_id for r in rejects):
            reason = "caption.engine_error" if answer.engine_failed else "caption.too_short"
            rejects.append(ctx.reject(asset_id, reason, f"{style} caption: {answer.error}", raw=answer.raw or None))
        ctx.progress(1 / len(styles))
    return StageResult(ctx.rows("captions", rows), ctx.rejects(rejects))


def _prompts(asset: dict) -> dict[str, str]:
    return VIDEO_PROMPTS if asset["kind"] == "video" else PROMPTS


def _version(asset: dict) -> str:
    return VIDEO_PROMPT_VERSION if asset["kind"] == "video" else PROMPT_VERSION
