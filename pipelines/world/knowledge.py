"""What the scripted teacher knows about a scene: captions and question–answer items, all exact.

Everything here is derived from the scene graph alone, so it is the ground truth a real teacher is
measured against:
- `caption_coarse` / `caption_fine`: a one-line summary, and a complete description from which a
  text-only reader can answer every valid question (objects with attributes, word positions and
  pixel centres, numbers; every bar's label and value).
- `qa_items`: every valid question the teacher knows for the scene, with its answer, the abilities
  it exercises (`ABILITIES`) and 2–5 reasoning steps that lead to the answer, in a fixed order.
  A template whose answer would be ambiguous for this scene (a tie for the most common colour,
  two shapes almost equally near) is skipped rather than asked.
- `invalid_items`: questions a careless writer would propose (ambiguous or unverifiable), marked
  invalid so the filters downstream have something real to drop.
- `wrong_answer`: a plausible wrong answer of the same type, for the teacher's noise model.

Wording is deterministic: the same scene always gives the same captions and items. Choices are
drawn from a `random.Random` seeded by the scene id, never from global random state.
"""

import random
import re
from collections import Counter
from dataclasses import dataclass
from math import dist, prod
from typing import Iterable, Literal

from pipelines.world.scenes import COLOURS, KINDS, LABEL_THEMES, SIZES, Scene, Shape

ABILITIES = {
    "counting": "count objects, possibly only those with a given attribute",
    "attribute_recognition": "recognise an object's colour, shape or size",
    "spatial_reasoning": "relate positions: left of, right of, above, below, nearest",
    "arithmetic": "add, subtract or multiply whole numbers",
    "comparison": "find the largest or smallest, or compare two quantities",
    "chart_reading": "match a chart's bars to their categories and values",
    "ocr": "read numbers and words printed in the image",
    "temporal_reasoning": "follow what happens over time in a video: order, how often, what changed",
}
ANSWER_TYPES = ("mc", "fib", "num", "des")
INVALID_REASONS = ("ambiguous", "unverifiable")
LETTERS = "ABCD"
BLANK = "___"


@dataclass(frozen=True)
class QAItem:
    """One question with its exact answer. An mc answer is a letter indexing `choices`."""

    question: str
    answer: str
    answer_type: Literal["mc", "fib", "num", "des"]
    choices: tuple[str, ...]
    category: str  # the scene family
    abilities: tuple[str, ...]
    steps: tuple[str, ...]  # plain-English reasoning that ends at the answer; seeds chains of thought
    valid: bool = True
    invalid_reason: str | None = None

    def __post_init__(self):
        # A malformed item would poison every stage after synthesize_qa: fail where it is made.
        problems = []
        if self.answer_type not in ANSWER_TYPES:
            problems.append(f"answer_type {self.answer_type!r} is not one of {ANSWER_TYPES}")
        if self.answer_type == "mc" and (len(self.choices) != 4 or self.answer not in LETTERS):
            problems.append(f"mc needs 4 choices and a letter answer, got {self.choices!r} / {self.answer!r}")
        if self.answer_type != "mc" and self.choices:
            problems.append("only mc items have choices")
        if self.answer_type == "fib" and BLANK not in self.question:
            problems.append(f"a fib question needs a {BLANK} blank")
        unknown = [a for a in self.abilities if a not in ABILITIES]
        if not self.abilities or unknown:
            problems.append(f"abilities {self.abilities!r} must be non-empty and in ABILITIES")
        if not 2 <= len(self.steps) <= 5:
            problems.append(f"{len(self.steps)} steps; want 2-5")
        if self.valid != (self.invalid_reason is None) or self.invalid_reason not in (None, *INVALID_REASONS):
            problems.append(f"valid={self.valid} does not match invalid_reason={self.invalid_reason!r}")
        if problems:
            raise ValueError(f"bad QA item {self.question!r}: " + "; ".join(problems))


# --- captions ------------------------------------------------------------------------------------


def caption_coarse(scene: Scene) -> str:
    if scene.chart is not None:
        return f"A bar chart titled '{scene.chart.title}' with {len(scene.chart.bars)} bars."
    count = _number_word(len(scene.shapes)).capitalize()
    if scene.family == "arithmetic":
        return f"{count} coloured shapes, each showing a number, on a white background."
    colours = list(dict.fromkeys(s.colour for s in scene.shapes))
    return f"{count} shapes in {_join(colours)} on a white background."


def caption_fine(scene: Scene) -> str:
    if scene.chart is not None:
        chart = scene.chart
        bars = _join([f"'{bar.label}' {bar.value}" for bar in chart.bars])
        return (f"A bar chart titled '{chart.title}' on a white background. The y axis runs from 0 to "
                f"{chart.y_max} with ticks every {chart.y_ticks[1]}. It has {len(chart.bars)} "
                f"{chart.bars[0].colour} bars, from left to right: {bars}. Each bar's value is printed "
                f"above it and its label below it.")
    described = "; ".join(f"{index}. {_described(shape, scene)}" for index, shape in enumerate(scene.shapes, 1))
    return (f"A {scene.width}x{scene.height} image on a white background with {len(scene.shapes)} shapes, "
            f"listed in reading order, with pixel centres (x from the left edge, y from the top edge): "
            f"{described}.")


def _described(shape: Shape, scene: Scene) -> str:
    number = "" if shape.number is None else f" showing the number {shape.number}"
    x, y = shape.centre
    return f"a {shape.size} {shape.colour} {shape.kind}{number} in the {_position(shape, scene)} at ({x}, {y})"


def _position(shape: Shape, scene: Scene) -> str:
    """Thirds of the canvas in words: "upper left", "middle right", "centre", ..."""
    x, y = shape.centre
    row = ("upper", "middle", "lower")[min(2, 3 * y // scene.height)]
    column = ("left", "centre", "right")[min(2, 3 * x // scene.width)]
    if row == "middle":
        return "centre" if column == "centre" else f"middle {column}"
    return f"{row} {column}"


# --- questions -----------------------------------------------------------------------------------


def qa_items(scene: Scene) -> list[QAItem]:
    """Every valid question the teacher knows for `scene`, in a fixed order."""
    rng = random.Random(f"{scene.scene_id}/knowledge")
    return _TEMPLATES[scene.family](scene, rng)


def _counting_items(scene: Scene, rng: random.Random) -> list[QAItem]:
    shapes, family = scene.shapes, scene.family
    by_colour = Counter(s.colour for s in shapes)  # in order of first appearance
    by_kind = Counter(s.kind for s in shapes)
    items = []

    colour = rng.choice(list(by_colour))
    members = [s for s in shapes if s.colour == colour]
    items.append(QAItem(
        f"How many {colour} shapes are there?", str(len(members)), "num", (), family,
        ("counting", "attribute_recognition"),
        (f"Look for the {colour} shapes.", f"{_they(members)} {_list_shapes(members, scene)}.",
         f"That makes {len(members)}.")))

    size, kind = rng.choice(list(dict.fromkeys((s.size, s.kind) for s in shapes)))
    members = [s for s in shapes if (s.size, s.kind) == (size, kind)]
    items.append(QAItem(
        f"How many {size} {kind}s are there?", str(len(members)), "num", (), family,
        ("counting", "attribute_recognition"),
        (f"Look for {kind}s that are {size}.", f"{_they(members)} {_list_shapes(members, scene)}.",
         f"That makes {len(members)}.")))

    winner = _unique_max(by_colour)
    if winner is not None:
        choices, letter = _choices(winner, _prefer(rng, by_colour, COLOURS), rng)
        items.append(QAItem(
            "Which colour do the most shapes have?", letter, "mc", choices, family,
            ("counting", "attribute_recognition", "comparison"),
            (f"Count the shapes of each colour: {_tally(by_colour)}.",
             f"{winner.capitalize()} has the most, {by_colour[winner]}.",
             f"{winner.capitalize()} is choice {letter}.")))

    colour, kind = rng.choice(list(dict.fromkeys((s.colour, s.kind) for s in shapes)))
    n_members = sum(1 for s in shapes if (s.colour, s.kind) == (colour, kind))
    choices, letter = _choices(str(n_members), _near_numbers(n_members, rng), rng)
    items.append(QAItem(
        f"How many {colour} {kind}s are there?", letter, "mc", choices, family,
        ("counting", "attribute_recognition"),
        (f"Look for shapes that are both {colour} and {kind}s.",
         f"There {'is' if n_members == 1 else 'are'} {n_members}.",
         f"{n_members} is choice {letter}.")))

    winner = _unique_max(by_kind)
    if winner is not None:
        items.append(QAItem(
            f"The most common kind of shape in the image is the {BLANK}.", winner, "fib", (), family,
            ("counting", "attribute_recognition", "comparison"),
            (f"Count the shapes of each kind: {_tally(by_kind, plural=True)}.",
             f"There are more {winner}s than any other kind, so the blank is '{winner}'.")))

    size = rng.choice(list(dict.fromkeys(s.size for s in shapes)))
    members = [s for s in shapes if s.size == size]
    items.append(QAItem(
        f"There are {BLANK} {size} shapes in the image.", str(len(members)), "fib", (), family,
        ("counting", "attribute_recognition"),
        (f"Look for the {size} shapes.", f"{_they(members)} {_list_shapes(members, scene)}.",
         f"That makes {len(members)}, so the blank is {len(members)}.")))

    sentence = "There " + ("is " if next(iter(by_colour.values())) == 1 else "are ") + \
        _join([_count_noun(n, f"{colour} shape") for colour, n in by_colour.items()]) + "."
    items.append(QAItem(
        "How many shapes of each colour are there?", sentence, "des", (), family,
        ("counting", "attribute_recognition"),
        ("Go through the shapes one by one and note each colour.", f"Tally them: {_tally(by_colour)}.")))

    items.append(_total_shapes_item(scene))
    return items


def _relations_items(scene: Scene, rng: random.Random) -> list[QAItem]:
    shapes, family = scene.shapes, scene.family
    clear = 0.02 * scene.width  # closer than this counts as a tie: the question would be ambiguous
    items = []

    for reference in rng.sample(shapes, len(shapes)):
        others = sorted((dist(reference.centre, s.centre), index)
                        for index, s in enumerate(shapes) if s is not reference)
        if len(others) >= 2 and others[1][0] - others[0][0] < clear:
            continue
        nearest = shapes[others[0][1]]
        present = [s.colour for s in shapes if s not in (reference, nearest)]
        choices, letter = _choices(nearest.colour, _prefer(rng, present, COLOURS), rng)
        distances = ", ".join(f"{_name(shapes[i])} {round(d)} px" for d, i in others)
        items.append(QAItem(
            f"What colour is the shape nearest to the {_name(reference)}?", letter, "mc", choices, family,
            ("spatial_reasoning", "attribute_recognition"),
            (f"The {_name(reference)} is centred at {reference.centre}.",
             f"Distances from it to the other shapes: {distances}.",
             f"The nearest is the {_name(nearest)}, so the colour is {nearest.colour}, choice {letter}.")))
        break

    shape = rng.choice(shapes)
    combos = [f"{size} {kind}" for size in SIZES for kind in KINDS]
    choices, letter = _choices(f"{shape.size} {shape.kind}", _prefer(rng, combos, ()), rng)
    items.append(QAItem(
        f"Which of these describes the {shape.colour} shape?", letter, "mc", choices, family,
        ("attribute_recognition",),
        (f"Find the {shape.colour} shape, in the {_position(shape, scene)}.",
         f"It is a {shape.size} {shape.kind}, choice {letter}.")))

    first, second = rng.sample(shapes, 2)
    dx = first.centre[0] - second.centre[0]
    if abs(dx) >= clear:
        side = "left" if dx < 0 else "right"
        items.append(QAItem(
            f"The {_name(first)} is to the {BLANK} of the {_name(second)}.", side, "fib", (), family,
            ("spatial_reasoning", "attribute_recognition"),
            (f"The {_name(first)} is centred at x = {first.centre[0]}.",
             f"The {_name(second)} is centred at x = {second.centre[0]}.",
             f"{first.centre[0]} is {'less' if dx < 0 else 'more'} than {second.centre[0]}, so it is to the {side}.")))

    first, second = rng.sample(shapes, 2)
    dy = first.centre[1] - second.centre[1]
    if abs(dy) >= clear:
        relation = "above" if dy < 0 else "below"
        items.append(QAItem(
            f"The {_name(first)} is {BLANK} the {_name(second)}.", relation, "fib", (), family,
            ("spatial_reasoning", "attribute_recognition"),
            (f"The {_name(first)} is centred at y = {first.centre[1]}, counted from the top.",
             f"The {_name(second)} is centred at y = {second.centre[1]}.",
             f"A smaller y is higher up, so the {_name(first)} is {relation} the {_name(second)}.")))

    for axis, word, is_beyond in ((0, "to the left of", lambda d: d < 0), (1, "above", lambda d: d < 0)):
        reference = rng.choice(shapes)
        offsets = [s.centre[axis] - reference.centre[axis] for s in shapes if s is not reference]
        if any(abs(d) < clear for d in offsets):
            continue
        members = [s for s in shapes if s is not reference and is_beyond(s.centre[axis] - reference.centre[axis])]
        coordinate = "xy"[axis]
        listed = _join([_name(s) for s in members]) if members else "none of them"
        items.append(QAItem(
            f"How many shapes are {word} the {_name(reference)}?", str(len(members)), "num", (), family,
            ("counting", "spatial_reasoning", "attribute_recognition"),
            (f"The {_name(reference)} is centred at {coordinate} = {reference.centre[axis]}.",
             f"Shapes with a smaller {coordinate}: {listed}.", f"That makes {len(members)}.")))

    first, second = rng.sample(shapes, 2)
    dx, dy = first.centre[0] - second.centre[0], first.centre[1] - second.centre[1]
    if abs(dx) >= clear and abs(dy) >= clear:
        horizontal, vertical = ("left" if dx < 0 else "right"), ("above" if dy < 0 else "below")
        items.append(QAItem(
            f"Where is the {_name(first)} relative to the {_name(second)}?",
            f"The {_name(first)} is to the {horizontal} of and {vertical} the {_name(second)}.", "des", (), family,
            ("spatial_reasoning", "attribute_recognition"),
            (f"The {_name(first)} is centred at {first.centre}; the {_name(second)} at {second.centre}.",
             f"Its x is {'smaller' if dx < 0 else 'larger'}, so it is to the {horizontal}.",
             f"Its y is {'smaller' if dy < 0 else 'larger'}, so it is {vertical}.")))

    ordered = sorted(shapes, key=lambda s: s.centre[0])
    if ordered[-1].centre[0] - ordered[-2].centre[0] >= clear:
        rightmost = ordered[-1]
        absent = [f"{colour} {kind}" for colour in COLOURS for kind in KINDS
                  if colour not in {s.colour for s in shapes}]
        choices, letter = _choices(_name(rightmost), _prefer(rng, [_name(s) for s in shapes], absent), rng)
        items.append(QAItem(
            "Which shape is furthest to the right?", letter, "mc", choices, family,
            ("spatial_reasoning", "attribute_recognition"),
            ("Compare the shapes' x coordinates: " + ", ".join(f"{_name(s)} {s.centre[0]}" for s in ordered) + ".",
             f"The largest x is {rightmost.centre[0]}, the {_name(rightmost)}, choice {letter}.")))

    items.append(_total_shapes_item(scene))
    return items


def _arithmetic_items(scene: Scene, rng: random.Random) -> list[QAItem]:
    shapes, family = scene.shapes, scene.family
    by_colour = Counter(s.colour for s in shapes)
    by_kind = Counter(s.kind for s in shapes)
    numbers = [s.number for s in shapes]
    items = []

    colour = rng.choice([c for c, n in by_colour.items() if n >= 2] or list(by_colour))
    members = [s for s in shapes if s.colour == colour]
    total = sum(s.number for s in members)
    items.append(QAItem(
        f"What is the sum of the numbers on the {colour} shapes?", str(total), "num", (), family,
        ("arithmetic", "ocr", "attribute_recognition"),
        (f"Find the {colour} shapes: {_list_shapes(members, scene)}.",
         f"Read their numbers: {_join([str(s.number) for s in members])}.", f"Add them: {_sum_text(members)}.")))

    # A product of four or more numbers up to 20 is no longer mental arithmetic.
    kinds = [k for k, n in by_kind.items() if 2 <= n <= 3]
    if kinds:
        kind = rng.choice(kinds)
        members = [s for s in shapes if s.kind == kind]
        product = prod(s.number for s in members)
        items.append(QAItem(
            f"What is the product of the numbers on the {kind}s?", str(product), "num", (), family,
            ("arithmetic", "ocr", "attribute_recognition"),
            (f"Find the {kind}s: {_list_shapes(members, scene)}.",
             f"Read their numbers: {_join([str(s.number) for s in members])}.",
             f"Multiply them: {' x '.join(str(s.number) for s in members)} = {product}.")))

    largest, smallest = max(numbers), min(numbers)
    items.append(QAItem(
        "What is the largest number shown minus the smallest number shown?", str(largest - smallest), "num", (),
        family, ("arithmetic", "ocr", "comparison"),
        (f"Read every number: {_join([str(n) for n in numbers])}.",
         f"The largest is {largest} and the smallest is {smallest}.",
         f"{largest} - {smallest} = {largest - smallest}.")))

    if numbers.count(largest) == 1:
        top = shapes[numbers.index(largest)]
        others = [s.colour for s in shapes if s.colour != top.colour]
        choices, letter = _choices(top.colour, _prefer(rng, others, COLOURS), rng)
        items.append(QAItem(
            "What colour is the shape showing the largest number?", letter, "mc", choices, family,
            ("ocr", "comparison", "attribute_recognition"),
            (f"Read every number: {_join([str(n) for n in numbers])}.",
             f"The largest, {largest}, is on the {_name(top)}.", f"Its colour is {top.colour}, choice {letter}.")))

    total = sum(numbers)
    choices, letter = _choices(str(total), _near_numbers(total, rng), rng)
    items.append(QAItem(
        "What is the sum of all the numbers shown?", letter, "mc", choices, family, ("arithmetic", "ocr"),
        (f"Read every number: {_join([str(n) for n in numbers])}.", f"Add them: {_sum_text(shapes)}.",
         f"{total} is choice {letter}.")))

    named = _uniquely_named(shapes)
    if named:
        shape = rng.choice(named)
        items.append(QAItem(
            f"The number on the {_name(shape)} is {BLANK}.", str(shape.number), "fib", (), family,
            ("ocr", "attribute_recognition"),
            (f"Find the {_name(shape)}, in the {_position(shape, scene)}.", f"It shows {shape.number}.")))

    items.append(QAItem(
        f"The smallest number shown is {BLANK}.", str(smallest), "fib", (), family, ("ocr", "comparison"),
        (f"Read every number: {_join([str(n) for n in numbers])}.", f"The smallest is {smallest}.")))

    colour = rng.choice(list(by_colour))
    members = [s for s in shapes if s.colour == colour]
    total = sum(s.number for s in members)
    if len(members) == 1:
        sentence = f"The only {colour} shape shows {total}, so the sum is {total}."
    else:
        sentence = f"The {colour} shapes show {_join([str(s.number) for s in members])}, which add up to {total}."
    items.append(QAItem(
        f"What numbers are on the {colour} shapes, and what is their sum?", sentence, "des", (), family,
        ("arithmetic", "ocr", "attribute_recognition"),
        (f"Find the {colour} shapes: {_list_shapes(members, scene)}.",
         f"Read their numbers: {_join([str(s.number) for s in members])}.", f"Add them: {_sum_text(members)}.")))

    pairs = [(a, b) for a in named for b in named if a.number > b.number]
    if pairs:
        bigger, smaller = rng.choice(pairs)
        difference = bigger.number - smaller.number
        items.append(QAItem(
            f"By how much does the number on the {_name(bigger)} exceed the number on the {_name(smaller)}?",
            str(difference), "num", (), family, ("arithmetic", "ocr", "attribute_recognition"),
            (f"The {_name(bigger)} shows {bigger.number}.", f"The {_name(smaller)} shows {smaller.number}.",
             f"{bigger.number} - {smaller.number} = {difference}.")))

    items.append(_total_shapes_item(scene))
    return items


def _bar_chart_items(scene: Scene, rng: random.Random) -> list[QAItem]:
    chart, family = scene.chart, scene.family
    bars = chart.bars
    values = {bar.label: bar.value for bar in bars}
    readout = ", ".join(f"'{bar.label}' {bar.value}" for bar in bars)
    highest, lowest = max(bars, key=lambda b: b.value), min(bars, key=lambda b: b.value)
    distinct = len(set(values.values())) == len(bars)  # true by construction; checked, not assumed
    items = []

    bar = rng.choice(bars)
    items.append(QAItem(
        f"What is the value of the bar labelled '{bar.label}'?", str(bar.value), "num", (), family,
        ("chart_reading", "ocr"),
        (f"Find the bar labelled '{bar.label}' along the x axis.", f"The value above it reads {bar.value}.")))

    first, second = rng.sample(bars, 2)
    bigger, smaller = (first, second) if first.value > second.value else (second, first)
    items.append(QAItem(
        f"How much larger is the value of '{bigger.label}' than that of '{smaller.label}'?",
        str(bigger.value - smaller.value), "num", (), family, ("chart_reading", "comparison", "arithmetic"),
        (f"'{bigger.label}' has the value {bigger.value}.", f"'{smaller.label}' has the value {smaller.value}.",
         f"{bigger.value} - {smaller.value} = {bigger.value - smaller.value}.")))

    if distinct:
        theme = LABEL_THEMES[chart.title]
        choices, letter = _choices(highest.label, _prefer(rng, values, theme), rng)
        items.append(QAItem(
            "Which category has the highest value?", letter, "mc", choices, family, ("chart_reading", "comparison"),
            (f"Read every bar: {readout}.", f"The highest is '{highest.label}' with {highest.value}.",
             f"'{highest.label}' is choice {letter}.")))
        items.append(QAItem(
            f"The category with the lowest value is {BLANK}.", lowest.label, "fib", (), family,
            ("chart_reading", "comparison"),
            (f"Read every bar: {readout}.", f"The lowest is '{lowest.label}' with {lowest.value}.")))
        items.append(QAItem(
            "Which bars are the largest and the smallest, and how far apart are they?",
            f"The largest bar is '{highest.label}' with {highest.value}, {highest.value - lowest.value} more than "
            f"the smallest, '{lowest.label}'.", "des", (), family, ("chart_reading", "comparison", "arithmetic"),
            (f"Read every bar: {readout}.",
             f"The largest is '{highest.label}' ({highest.value}); the smallest is '{lowest.label}' ({lowest.value}).",
             f"{highest.value} - {lowest.value} = {highest.value - lowest.value}.")))

    total = sum(values.values())
    items.append(QAItem(
        "What is the total of all the bar values?", str(total), "num", (), family, ("chart_reading", "arithmetic"),
        (f"Read every bar: {readout}.", f"Add them: {' + '.join(str(v) for v in values.values())} = {total}.")))

    thresholds = [t for t in chart.y_ticks[1:-1] if t not in values.values()]  # a bar on the line would be ambiguous
    if thresholds:
        threshold = rng.choice(thresholds)
        above = [bar for bar in bars if bar.value > threshold]
        listed = _join([f"'{b.label}' ({b.value})" for b in above]) if above else "none"
        items.append(QAItem(
            f"How many categories have a value greater than {threshold}?", str(len(above)), "num", (), family,
            ("chart_reading", "comparison", "counting"),
            (f"Read every bar: {readout}.", f"Bars above {threshold}: {listed}.", f"That makes {len(above)}.")))

    items.append(QAItem(
        "How many bars are in the chart?", str(len(bars)), "num", (), family, ("counting",),
        ("Count the bars from left to right: " + ", ".join(f"'{b.label}'" for b in bars) + ".",
         f"That makes {len(bars)}.")))
    return items


def _total_shapes_item(scene: Scene) -> QAItem:
    """The single-ability item of every shapes family: plain counting."""
    n_shapes = len(scene.shapes)
    return QAItem(
        "How many shapes are there in total?", str(n_shapes), "num", (), scene.family, ("counting",),
        ("Count every shape, whatever its colour or kind: "
         + ", ".join(_name(s) for s in scene.shapes) + ".", f"That makes {n_shapes}."))


_TEMPLATES = {
    "counting": _counting_items,
    "relations": _relations_items,
    "arithmetic": _arithmetic_items,
    "bar_chart": _bar_chart_items,
}


# --- invalid questions ---------------------------------------------------------------------------


def invalid_items(scene: Scene) -> list[QAItem]:
    """Two questions a careless writer would propose: one ambiguous, one unverifiable."""
    rng = random.Random(f"{scene.scene_id}/invalid")
    family = scene.family
    if scene.chart is not None:
        first, second = scene.chart.bars[:2]
        return [
            QAItem("What is the value of the bar?", str(first.value), "num", (), family, ("chart_reading", "ocr"),
                   ("Look at the bar.", f"It reads {first.value}."), valid=False, invalid_reason="ambiguous"),
            QAItem(f"Why was '{first.label}' more popular than '{second.label}'?",
                   "Because more people preferred it.", "des", (), family, ("chart_reading", "comparison"),
                   (f"Compare '{first.label}' with '{second.label}'.", "Assume people preferred it."),
                   valid=False, invalid_reason="unverifiable"),
        ]
    by_colour = Counter(s.colour for s in scene.shapes)
    top = max(by_colour.values())
    tied = [c for c, n in by_colour.items() if n == top]
    if len(tied) > 1:  # the mc template skipped this scene for exactly this reason
        choices, letter = _choices(tied[0], _prefer(rng, tied, COLOURS), rng)
        ambiguous = QAItem("Which colour do the most shapes have?", letter, "mc", choices, family,
                           ("counting", "attribute_recognition", "comparison"),
                           (f"Count the shapes of each colour: {_tally(by_colour)}.", f"Pick {tied[0]}."),
                           valid=False, invalid_reason="ambiguous")
    else:
        first = scene.shapes[0]
        choices, letter = _choices(first.colour, _prefer(rng, by_colour, COLOURS), rng)
        ambiguous = QAItem("What colour is the shape?", letter, "mc", choices, family, ("attribute_recognition",),
                           ("Look at the shape.", f"It is {first.colour}, choice {letter}."),
                           valid=False, invalid_reason="ambiguous")
    shape = scene.shapes[-1]
    unverifiable = QAItem(
        f"Why did the artist choose {shape.colour} for the {shape.kind}?",
        f"Because {shape.colour} stands out on a white background.", "des", (), family, ("attribute_recognition",),
        (f"The {shape.kind} is {shape.colour}.", "Guess the artist's reason."),
        valid=False, invalid_reason="unverifiable")
    return [ambiguous, unverifiable]


def find_item(scene: Scene, question: str) -> QAItem | None:
    """The item asking `question` (whitespace and case ignored), valid or not; None if unknown."""
    wanted = _normalise(question)
    return next((item for item in qa_items(scene) + invalid_items(scene) if _normalise(item.question) == wanted), None)


def _normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


# --- wrong answers -------------------------------------------------------------------------------

_WORD_POOLS = (tuple(COLOURS), KINDS, SIZES, ("left", "right"), ("above", "below"), *LABEL_THEMES.values())


def wrong_answer(item: QAItem, rng: random.Random) -> str:
    """A plausible wrong answer of the item's type: another letter, a number off by 1–3, another word."""
    if item.answer_type == "mc":
        return rng.choice([letter for letter in LETTERS[:len(item.choices)] if letter != item.answer])
    if item.answer_type in ("num", "fib") and item.answer.lstrip("-").isdigit():
        return str(_off_by(int(item.answer), rng))
    if item.answer_type == "fib":
        return _other_word(item.answer, rng)
    match = re.search(r"\d+", item.answer)  # des: the same sentence with one fact changed
    if match:
        changed = str(_off_by(int(match.group()), rng))
        return item.answer[:match.start()] + changed + item.answer[match.end():]
    for word in re.findall(r"[a-z]+", item.answer):
        other = _other_word(word, rng)
        if other != word:
            return re.sub(rf"\b{word}\b", other, item.answer, count=1)
    return "I cannot tell from the image."


def _off_by(number: int, rng: random.Random) -> int:
    offset = rng.choice((-3, -2, -1, 1, 2, 3))
    return number + offset if number + offset >= 0 else number + abs(offset)


def _other_word(word: str, rng: random.Random) -> str:
    for pool in _WORD_POOLS:
        if word in pool:
            return rng.choice([w for w in pool if w != word])
    return word


# --- wording helpers -----------------------------------------------------------------------------

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                 "eleven", "twelve")


def _number_word(n: int) -> str:
    return _NUMBER_WORDS[n] if n < len(_NUMBER_WORDS) else str(n)


def _join(words: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _count_noun(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _tally(counts: Counter, *, plural: bool = False) -> str:
    return ", ".join(f"{name}{'s' if plural else ''} {n}" for name, n in counts.items())


def _name(shape: Shape) -> str:
    """How questions refer to a shape: "red circle" (unique in relations scenes, checked elsewhere)."""
    return f"{shape.colour} {shape.kind}"


def _list_shapes(shapes: list[Shape], scene: Scene) -> str:
    """'a large red circle (upper left) and a small red square (centre)'."""
    return _join([f"a {s.size} {s.colour} {s.kind} ({_position(s, scene)})" for s in shapes])


def _they(shapes: list[Shape]) -> str:
    return "It is" if len(shapes) == 1 else "They are"


def _sum_text(shapes: Iterable[Shape]) -> str:
    numbers = [s.number for s in shapes]
    return f"{' + '.join(map(str, numbers))} = {sum(numbers)}" if len(numbers) > 1 else f"just {numbers[0]}"


def _uniquely_named(shapes: tuple[Shape, ...]) -> list[Shape]:
    """Shapes whose "colour kind" name fits no other shape, so a question can point at them."""
    names = Counter(_name(s) for s in shapes)
    return [s for s in shapes if names[_name(s)] == 1]


def _unique_max(counts: Counter) -> str | None:
    ranked = counts.most_common()
    return ranked[0][0] if len(ranked) == 1 or ranked[0][1] > ranked[1][1] else None


def _near_numbers(n: int, rng: random.Random) -> list[str]:
    candidates = [str(n + d) for d in (-3, -2, -1, 1, 2, 3) if n + d >= 0]
    rng.shuffle(candidates)
    return candidates


def _prefer(rng: random.Random, first: Iterable[str], then: Iterable[str]) -> list[str]:
    """Distractors: those in `first` (e.g. colours in the scene) before those in `then`, each shuffled."""
    first, then = list(dict.fromkeys(first)), [w for w in dict.fromkeys(then) if w not in first]
    rng.shuffle(first)
    rng.shuffle(then)
    return first + then


def _choices(correct: str, distractors: list[str], rng: random.Random) -> tuple[tuple[str, ...], str]:
    """Four shuffled choices holding `correct` once, and its letter."""
    others = [d for d in dict.fromkeys(distractors) if d != correct][:3]
    choices = [correct, *others]
    rng.shuffle(choices)
    return tuple(choices), LETTERS[choices.index(correct)]
