"""The synthetic world: visual reasoning scenes with exact ground truth, and what a teacher knows of them.

`scenes` builds scene graphs (shapes, numbers, bar charts, with pixel geometry), `render` draws them,
and `knowledge` derives captions and question–answer items from the graph alone. `clips` builds
scene graphs over time (keyframes) and renders them to short videos; `clip_knowledge` derives their
captions and temporal questions. The source `pipelines.sources.synthetic` turns both into rows for
`ingest`; the scripted teacher answers from `knowledge` or `clip_knowledge` (`knowledge_of`).
"""

from pipelines.world.knowledge import (
    ABILITIES,
    QAItem,
    caption_coarse,
    caption_fine,
    find_item,
    invalid_items,
    qa_items,
    wrong_answer,
)
from pipelines.world.render import render, render_png
from pipelines.world.scenes import FAMILIES, Bar, Chart, Scene, Shape, make_scene, scene_from_json, scene_to_json
from pipelines.world.clips import CLIP_FAMILIES, Clip, Keyframe, clip_from_json, clip_to_json, make_clip, world_from_json
from pipelines.world import clip_knowledge, knowledge  # after clips: clip_knowledge imports them


def knowledge_of(graph):
    """The module that knows about `graph`: `clip_knowledge` for a Clip, `knowledge` for a still Scene."""
    return clip_knowledge if isinstance(graph, Clip) else knowledge


__all__ = [
    "ABILITIES", "CLIP_FAMILIES", "Clip", "Keyframe", "clip_from_json", "clip_to_json", "knowledge_of", "make_clip",
    "world_from_json", "FAMILIES", "Bar", "Chart", "QAItem", "Scene", "Shape", "caption_coarse", "caption_fine",
    "find_item", "invalid_items", "make_scene", "qa_items", "render", "render_png", "scene_from_json",
    "scene_to_json", "wrong_answer",
]
