"""The synthetic world: visual reasoning scenes with exact ground truth, and what a teacher knows of them.

`scenes` builds scene graphs (shapes, numbers, bar charts, with pixel geometry), `render` draws them,
and `knowledge` derives captions and question–answer items from the graph alone. The source
`pipelines.sources.synthetic` turns them into rows for `ingest`; the scripted teacher answers from
`knowledge`.
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

__all__ = [
    "ABILITIES", "FAMILIES", "Bar", "Chart", "QAItem", "Scene", "Shape", "caption_coarse", "caption_fine",
    "find_item", "invalid_items", "make_scene", "qa_items", "render", "render_png", "scene_from_json",
    "scene_to_json", "wrong_answer",
]
