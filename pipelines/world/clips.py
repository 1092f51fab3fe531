"""Clips of the synthetic world: a scene graph over time, rendered to a short MP4 video.

A clip is a list of keyframes, each a time (seconds from the start) and the full set of shapes shown
from then until the next keyframe: the state is piecewise constant, so the exact ground truth of any
frame is `clip.shapes_at(t)`. Shapes keep their identity across keyframes by name ("red circle"):
within a clip every shape has its own colour. `make_clip(family, seed)` builds one deterministically
from its own `random.Random`; `clip_knowledge.py` derives captions and temporal questions from it.

Timing: CLIP_FRAMES = 24 frames at CLIP_FPS = 8 (3 s), frame i shown at t = i / 8. Keyframes sit on
ticks every TICK_S = 0.5 s (0, 0.5, ..., 2.5), so every state lasts at least 4 frames: ingest's default
uniform sampling (8 frames of 24: positions 0, 3, 7, 10, 13, 16, 20, 23) sees every state at least once.
Fewer sampled frames may miss one; the teacher still answers from the graph.

Families (questions in clip_knowledge.py):
- clip_objects: shapes appear and disappear one at a time on a 3×3 grid: 1–2 at the start, then one
  event per tick (at least two appearances; a shape that leaves never comes back).
- clip_motion:  one shape moves in a straight line (left, right, up or down) in five equal steps,
  past 2–3 shapes that stay still in the other lanes.
- clip_counter: a large shape shows a number that changes 3–5 times (by 1–4, staying within 0–20,
  ending above or below where it started), beside 1–3 plain shapes that do not change; all on a
  3×3 grid.

Rendering: each frame is `render.render` of the state at its time (the same drawing as the image
families), encoded by `pipelines.video.encode_clip` (H.264, a key frame every second). The same clip
gives the same bytes with one PyAV build (x264 on one thread); the synthetic source's fingerprint
includes `video.ENCODER`, so another build's bytes get other cache keys. Sides are made even (H.264
in yuv420p needs them): a 97 px request gives a 96 px clip.
"""

import json
import random
from dataclasses import asdict, dataclass
from typing import Callable

from PIL import Image

from pipelines import video
from pipelines.world.render import render
from pipelines.world.scenes import COLOURS, DEFAULT_SIZE, KINDS, SIZES, Scene, Shape, _side, scene_from_json

CLIP_FAMILIES = ("clip_objects", "clip_motion", "clip_counter")
CLIP_FPS = 8
CLIP_FRAMES = 24
TICK_S = 0.5
N_TICKS = 6  # keyframes may sit at 0, 0.5, ..., 2.5 s
DIRECTIONS = ("left", "right", "up", "down")


@dataclass(frozen=True)
class Keyframe:
    t: float                      # seconds from the start; the state holds until the next keyframe
    shapes: tuple[Shape, ...]     # every shape shown, in reading order


@dataclass(frozen=True)
class Clip:
    clip_id: str                  # "<family>-<seed, 6 digits>", plus "-<size>px" when not 224 px
    family: str
    seed: int
    width: int
    height: int
    fps: int
    n_frames: int
    keyframes: tuple[Keyframe, ...]

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.fps

    def shapes_at(self, t: float) -> tuple[Shape, ...]:
        """The shapes on screen at `t` seconds: those of the last keyframe at or before it."""
        return [k for k in self.keyframes if k.t <= t + 1e-9][-1].shapes

    def frame_scene(self, index: int) -> Scene:
        """Frame `index` as a still scene (what `render` draws)."""
        t = index / self.fps
        return Scene(f"{self.clip_id}@{t:g}s", self.family, self.seed, self.width, self.height, self.shapes_at(t))


def make_clip(family: str, seed: int, *, size: int = DEFAULT_SIZE) -> Clip:
    """The clip of `family` for `seed`: the same arguments always give the same clip."""
    if family not in _BUILDERS:
        raise ValueError(f"unknown clip family {family!r}; known clip families: {', '.join(CLIP_FAMILIES)}")
    size -= size % 2
    rng = random.Random(f"thinkmill.world/{family}/{seed}")
    clip_id = f"{family}-{seed:06d}" + ("" if size == DEFAULT_SIZE else f"-{size}px")
    keyframes = tuple(Keyframe(t, _reading_order(shapes)) for t, shapes in _BUILDERS[family](rng, size))
    return Clip(clip_id, family, seed, size, size, CLIP_FPS, CLIP_FRAMES, keyframes)


def render_frames(clip: Clip) -> list[Image.Image]:
    return [render(clip.frame_scene(index)) for index in range(clip.n_frames)]


def render_clip(clip: Clip, *, crf: int = 23) -> bytes:
    """The clip as MP4 / H.264 bytes, a key frame every second."""
    return video.encode_clip(render_frames(clip), clip.fps, gop=clip.fps, crf=crf)


def clip_to_json(clip: Clip) -> str:
    """Canonical JSON, as for scenes: sorted keys, no spaces."""
    return json.dumps(asdict(clip), sort_keys=True, separators=(",", ":"))


def clip_from_json(text: str) -> Clip:
    data = json.loads(text)
    keyframes = tuple(Keyframe(k["t"], tuple(Shape(**{**s, "bbox": tuple(s["bbox"])}) for s in k["shapes"]))
                      for k in data.pop("keyframes"))
    return Clip(**data, keyframes=keyframes)


def world_from_json(text: str) -> Scene | Clip:
    """A scene graph of either kind: a clip has keyframes, a still scene has none."""
    return clip_from_json(text) if '"keyframes":' in text else scene_from_json(text)


# --- families ------------------------------------------------------------------------------------


def _objects(rng: random.Random, size: int) -> list[tuple[float, list[Shape]]]:
    """Shapes appear and disappear, one event per tick; at least two appear after the start."""
    colours = rng.sample(list(COLOURS), len(COLOURS))
    cells = rng.sample(range(9), len(colours))
    pool = [_in_cell(rng, size, cell, 3, colour, rng.choice(KINDS), rng.choice(SIZES), fractions=(0.14, 0.2))
            for colour, cell in zip(colours, cells)]
    n_start = rng.randint(1, 2)
    present, upcoming = pool[:n_start], pool[n_start:]
    keyframes, appeared = [(0.0, list(present))], 0
    for tick in range(1, N_TICKS):
        must_appear = N_TICKS - tick <= 2 - appeared
        may_vanish = len(present) >= 2 and not must_appear
        if may_vanish and (not upcoming or rng.random() < 0.3):
            present.remove(rng.choice(present))
        else:
            present.append(upcoming.pop(0))
            appeared += 1
        keyframes.append((tick * TICK_S, list(present)))
    return keyframes


def _motion(rng: random.Random, size: int) -> list[tuple[float, list[Shape]]]:
    """One shape crosses its lane in five steps; 2–3 shapes stay still in the other two lanes."""
    direction = rng.choice(DIRECTIONS)
    n_still = rng.randint(2, 3)
    colours = rng.sample(list(COLOURS), n_still + 1)
    margin = round(0.03 * size)
    lane_width = (size - 2 * margin) // 3
    lane = rng.randrange(3)
    size_word = rng.choice(SIZES)
    side = _side(0.12 if size_word == "small" else 0.18, size)
    across = margin + lane * lane_width + (lane_width - side) // 2  # the mover's fixed coordinate
    along = [round(margin + k * (size - 2 * margin - side) / (N_TICKS - 1)) for k in range(N_TICKS)]
    if direction in ("left", "up"):
        along.reverse()
    horizontal = direction in ("left", "right")
    kind = rng.choice(KINDS)
    cells = rng.sample([(other, slot) for other in range(3) if other != lane for slot in range(3)], n_still)
    still = []
    for colour, (other, slot) in zip(colours[1:], cells):
        row, column = (other, slot) if horizontal else (slot, other)
        still.append(_in_cell(rng, size, row * 3 + column, 3, colour, rng.choice(KINDS), rng.choice(SIZES),
                              fractions=(0.12, 0.18)))
    keyframes = []
    for tick, position in enumerate(along):
        left, top = (position, across) if horizontal else (across, position)
        mover = Shape(kind, colours[0], size_word, (left, top, left + side, top + side))
        keyframes.append((tick * TICK_S, [mover, *still]))
    return keyframes


def _counter(rng: random.Random, size: int) -> list[tuple[float, list[Shape]]]:
    """A number on a large shape changes 3–5 times; 1–3 plain shapes in other cells do not change."""
    colours = rng.sample(list(COLOURS), 4)
    cells = rng.sample(range(9), 4)
    counter = _in_cell(rng, size, cells[0], 3, colours[0], rng.choice(KINDS), "large", fractions=(0.24, 0.26))
    plain = [_in_cell(rng, size, cell, 3, colour, rng.choice(KINDS), rng.choice(SIZES), fractions=(0.12, 0.18))
             for colour, cell in zip(colours[1:rng.randint(2, 4)], cells[1:])]
    ticks = sorted(rng.sample(range(1, N_TICKS), rng.randint(3, 5)))
    for _attempt in range(100):
        values = [rng.randint(2, 15)]
        for _ in ticks:
            values.append(rng.choice([v for v in range(values[-1] - 4, values[-1] + 5) if 0 <= v <= 20 and v != values[-1]]))
        if values[-1] != values[0]:
            break
    else:
        raise RuntimeError("could not draw a counter that ends where it did not start")
    times = [0.0] + [tick * TICK_S for tick in ticks]
    return [(t, [Shape(counter.kind, counter.colour, "large", counter.bbox, number=value), *plain])
            for t, value in zip(times, values)]


_BUILDERS: dict[str, Callable[[random.Random, int], list[tuple[float, list[Shape]]]]] = {
    "clip_objects": _objects,
    "clip_motion": _motion,
    "clip_counter": _counter,
}
assert tuple(_BUILDERS) == CLIP_FAMILIES


def _in_cell(rng: random.Random, size: int, cell: int, grid: int, colour: str, kind: str, size_word: str, *,
             fractions: tuple[float, float]) -> Shape:
    """A shape placed at random inside cell `cell` of a grid×grid layout (cells cannot overlap)."""
    margin = round(0.03 * size)
    width = (size - 2 * margin) // grid
    row, column = divmod(cell, grid)
    side = _side(fractions[SIZES.index(size_word)], size)
    left = margin + column * width + rng.randint(0, width - side)
    top = margin + row * width + rng.randint(0, width - side)
    return Shape(kind, colour, size_word, (left, top, left + side, top + side))


def _reading_order(shapes: list[Shape]) -> tuple[Shape, ...]:
    return tuple(sorted(shapes, key=lambda s: (s.centre[1], s.centre[0])))
