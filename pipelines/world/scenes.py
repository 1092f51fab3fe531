"""Scene graphs of the synthetic world: shapes and bar charts with exact geometry.

A scene is the ground truth behind one synthetic image: every object with its attributes and its
pixel bounding box. `make_scene(family, seed)` builds one deterministically from its own
`random.Random` (never the global one), `render.py` draws it, and `knowledge.py` derives captions
and questions from it. Scenes travel through the lake as canonical JSON (`scene_to_json`).

Families:
- counting:   4–10 shapes on a 4×4 grid; colours come from 2–4 of the six, so counts repeat.
- relations:  3–6 shapes of distinct colours (so "the red circle" names one object), placed so
              every pair is clearly apart in x and in y: left/right/above/below never hinge on a pixel.
- arithmetic: 3–6 larger shapes on a 3×3 grid, each showing an integer 1–20.
- bar_chart:  3–6 bars with short labels and distinct integer values, so max and min never tie.

Coordinates are pixels, x from the left edge and y from the top edge. A bbox is
(left, top, right, bottom) with right and bottom exclusive: width = right - left.
"""

import json
import random
from dataclasses import asdict, dataclass
from typing import Callable

FAMILIES = ("counting", "relations", "arithmetic", "bar_chart")
DEFAULT_SIZE = 224
MIN_SIZE = 96  # below this, numbers and labels stop being legible

# Saturated and far apart in hue, so a pixel's colour names its shape even after JPEG noise.
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 80, 220),
    "yellow": (245, 205, 20),
    "purple": (140, 60, 190),
    "orange": (250, 130, 20),
}
KINDS = ("circle", "square", "triangle")
SIZES = ("small", "large")

# Chart title -> category labels. Labels are short (≤ 5 letters) so six fit under a 224 px chart.
LABEL_THEMES = {
    "Fruit sold": ("kiwis", "plums", "limes", "figs", "pears", "dates", "lemon"),
    "Animals seen": ("cats", "dogs", "owls", "foxes", "bees", "ducks", "frogs"),
    "Trips by mode": ("bus", "car", "bike", "train", "walk", "boat", "tram"),
}
Y_MAXES = (10, 20, 50, 100)  # y axis tops; ticks every fifth of the axis


@dataclass(frozen=True)
class Shape:
    """One shape. `number` is the integer drawn on it (arithmetic scenes), otherwise None."""

    kind: str
    colour: str
    size: str
    bbox: tuple[int, int, int, int]
    number: int | None = None

    @property
    def centre(self) -> tuple[int, int]:
        left, top, right, bottom = self.bbox
        return (left + right) // 2, (top + bottom) // 2  # exact: sides are even


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    colour: str
    bbox: tuple[int, int, int, int]  # the filled bar only; its bottom is the chart's zero line


@dataclass(frozen=True)
class Chart:
    """A vertical bar chart. `plot_bbox` top is `y_max`, its bottom is 0; bars go left to right."""

    title: str
    y_max: int
    y_ticks: tuple[int, ...]
    plot_bbox: tuple[int, int, int, int]
    bars: tuple[Bar, ...]


@dataclass(frozen=True)
class Scene:
    scene_id: str  # "<family>-<seed, 6 digits>", plus "-<size>px" when not 224 px
    family: str
    seed: int
    width: int
    height: int
    shapes: tuple[Shape, ...] = ()
    chart: Chart | None = None


def make_scene(family: str, seed: int, *, size: int = DEFAULT_SIZE) -> Scene:
    """The scene of `family` for `seed`: the same arguments always give the same scene."""
    if family not in _BUILDERS:
        raise ValueError(f"unknown scene family {family!r}; known families: {', '.join(FAMILIES)}")
    if size < MIN_SIZE:
        raise ValueError(f"scene size {size} px is too small to read; use at least {MIN_SIZE}")
    # The size is not part of the seed: a scene at 448 px is the 224 px scene, scaled.
    rng = random.Random(f"thinkmill.world/{family}/{seed}")
    scene_id = f"{family}-{seed:06d}" + ("" if size == DEFAULT_SIZE else f"-{size}px")
    return Scene(scene_id=scene_id, family=family, seed=seed, width=size, height=size,
                 **_BUILDERS[family](rng, size))


def scene_to_json(scene: Scene) -> str:
    """Canonical JSON: sorted keys, no spaces, so equal scenes give equal text (and hashes)."""
    return json.dumps(asdict(scene), sort_keys=True, separators=(",", ":"))


def scene_from_json(text: str) -> Scene:
    data = json.loads(text)
    shapes = tuple(Shape(**{**shape, "bbox": tuple(shape["bbox"])}) for shape in data.pop("shapes"))
    chart = data.pop("chart")
    if chart is not None:
        bars = tuple(Bar(**{**bar, "bbox": tuple(bar["bbox"])}) for bar in chart["bars"])
        chart = Chart(title=chart["title"], y_max=chart["y_max"], y_ticks=tuple(chart["y_ticks"]),
                      plot_bbox=tuple(chart["plot_bbox"]), bars=bars)
    return Scene(**data, shapes=shapes, chart=chart)


# --- families ------------------------------------------------------------------------------------


def _counting(rng: random.Random, size: int) -> dict:
    palette = rng.sample(list(COLOURS), rng.randint(2, 4))
    n_shapes = rng.randint(4, 10)
    return {"shapes": _grid_shapes(rng, size, n_shapes, grid=4, side_fractions=(0.12, 0.19), palette=palette)}


def _arithmetic(rng: random.Random, size: int) -> dict:
    palette = rng.sample(list(COLOURS), rng.randint(2, 3))
    n_shapes = rng.randint(3, 6)
    # Larger shapes than in counting scenes: a two-digit number must fit inside a small triangle.
    shapes = _grid_shapes(rng, size, n_shapes, grid=3, side_fractions=(0.17, 0.24), palette=palette)
    return {"shapes": tuple(Shape(s.kind, s.colour, s.size, s.bbox, number=rng.randint(1, 20)) for s in shapes)}


def _relations(rng: random.Random, size: int) -> dict:
    n_shapes = rng.randint(3, 6)
    colours = rng.sample(list(COLOURS), n_shapes)
    sizes = [rng.choice(SIZES) for _ in range(n_shapes)]
    sides = [_side(0.12 if s == "small" else 0.18, size) for s in sizes]
    boxes = _spread_out(rng, size, sides, min_gap=round(0.05 * size), padding=round(0.02 * size))
    shapes = [Shape(rng.choice(KINDS), colour, size_word, box) for colour, size_word, box in zip(colours, sizes, boxes)]
    return {"shapes": tuple(sorted(shapes, key=lambda s: (s.centre[1], s.centre[0])))}  # reading order


def _bar_chart(rng: random.Random, size: int) -> dict:
    title = rng.choice(sorted(LABEL_THEMES))
    n_bars = rng.randint(3, 6)
    labels = rng.sample(LABEL_THEMES[title], n_bars)
    y_max = rng.choice(Y_MAXES)
    values = rng.sample(range(max(1, y_max // 20), y_max + 1), n_bars)  # distinct: no tie for max/min
    colour = rng.choice(("blue", "green", "purple", "orange", "red"))

    scale = size / DEFAULT_SIZE
    # Room above for the title and the tallest bar's value label, left for tick labels, below for labels.
    left, top = round(34 * scale), round(42 * scale)
    right, bottom = size - round(8 * scale), size - round(26 * scale)
    slot = (right - left) / n_bars
    bar_width = round(slot * 0.6)
    bars = []
    for index, (label, value) in enumerate(zip(labels, values)):
        bar_left = left + round(index * slot + (slot - bar_width) / 2)
        height = round(value * (bottom - top) / y_max)
        bars.append(Bar(label, value, colour, (bar_left, bottom - height, bar_left + bar_width, bottom)))
    ticks = tuple(range(0, y_max + 1, y_max // 5))
    return {"chart": Chart(title, y_max, ticks, (left, top, right, bottom), tuple(bars))}


_BUILDERS: dict[str, Callable[[random.Random, int], dict]] = {
    "counting": _counting,
    "relations": _relations,
    "arithmetic": _arithmetic,
    "bar_chart": _bar_chart,
}
assert tuple(_BUILDERS) == FAMILIES


# --- placement -----------------------------------------------------------------------------------


def _side(fraction: float, size: int) -> int:
    """An even side length, so a shape's centre is a whole pixel."""
    return 2 * round(fraction * size / 2)


def _grid_shapes(rng: random.Random, size: int, n_shapes: int, *, grid: int,
                 side_fractions: tuple[float, float], palette: list[str]) -> tuple[Shape, ...]:
    """`n_shapes` shapes in distinct cells of a grid×grid layout: they cannot overlap."""
    margin = round(0.03 * size)
    cell = (size - 2 * margin) // grid
    shapes = []
    for cell_index in sorted(rng.sample(range(grid * grid), n_shapes)):  # reading order
        row, column = divmod(cell_index, grid)
        size_word = rng.choice(SIZES)
        side = _side(side_fractions[SIZES.index(size_word)], size)
        left = margin + column * cell + rng.randint(0, cell - side)
        top = margin + row * cell + rng.randint(0, cell - side)
        shapes.append(Shape(rng.choice(KINDS), rng.choice(palette), size_word, (left, top, left + side, top + side)))
    return tuple(shapes)


def _spread_out(rng: random.Random, size: int, sides: list[int], *, min_gap: int,
                padding: int) -> list[tuple[int, int, int, int]]:
    """Boxes of the given sides, not touching, with centres ≥ `min_gap` apart in x and in y.

    Rejection sampling: at 3–6 shapes the first attempt almost always succeeds, and the draw stays
    deterministic because it only uses `rng`.
    """
    margin = round(0.03 * size)
    for _attempt in range(1000):
        boxes: list[tuple[int, int, int, int]] = []
        for side in sides:
            for _try in range(200):
                left = rng.randint(margin, size - margin - side)
                top = rng.randint(margin, size - margin - side)
                box = (left, top, left + side, top + side)
                if all(_apart(box, other, min_gap, padding) for other in boxes):
                    boxes.append(box)
                    break
            else:
                break
        else:
            return boxes
    raise RuntimeError(f"could not place {len(sides)} shapes apart on a {size} px canvas")


def _apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int], min_gap: int, padding: int) -> bool:
    centre_dx = abs((a[0] + a[2]) - (b[0] + b[2])) / 2
    centre_dy = abs((a[1] + a[3]) - (b[1] + b[3])) / 2
    separated = a[2] + padding <= b[0] or b[2] + padding <= a[0] or a[3] + padding <= b[1] or b[3] + padding <= a[1]
    return centre_dx >= min_gap and centre_dy >= min_gap and separated
