"""The teacher's knowledge, checked against the scene graph by an independent oracle.

`expected(scene, item)` below re-derives each answer from the scene with plain comprehensions, by
reading the question's wording. It refuses (fails) on any question it does not recognise, so a
new template cannot ship without a check, and on any question whose answer would be ambiguous.
"""

import random
import re
from collections import Counter
from math import dist, prod

import pytest

from pipelines.world.knowledge import (
    ABILITIES,
    LETTERS,
    QAItem,
    caption_coarse,
    caption_fine,
    find_item,
    invalid_items,
    qa_items,
    wrong_answer,
)
from pipelines.world.scenes import COLOURS, FAMILIES, make_scene

SEEDS = range(20)
SCENES = [make_scene(family, seed) for family in FAMILIES for seed in SEEDS]


def by_name(scene, colour, kind):
    found = [s for s in scene.shapes if s.colour == colour and s.kind == kind]
    assert len(found) == 1, f"'{colour} {kind}' names {len(found)} shapes in {scene.scene_id}"
    return found[0]


def only(values):
    """The single best of `values`: a tie means the question was ambiguous."""
    assert len(values) == 1, f"ambiguous: {values}"
    return values[0]


def expected(scene, item: QAItem) -> str:
    """The answer text (the chosen choice for mc) that the scene graph implies for `item`."""
    q, shapes = item.question, scene.shapes
    numbers = [s.number for s in shapes]
    bars = {b.label: b.value for b in scene.chart.bars} if scene.chart else {}
    if m := re.fullmatch(r"How many (\w+) shapes are there\?", q):
        return str(sum(s.colour == m[1] for s in shapes))
    if m := re.fullmatch(r"How many (\w+) (circle|square|triangle)s are there\?", q):
        first, kind = m.groups()
        if first in ("small", "large"):
            return str(sum(s.size == first and s.kind == kind for s in shapes))
        return str(sum(s.colour == first and s.kind == kind for s in shapes))
    if q in ("How many shapes are there in total?", "How many bars are in the chart?"):
        return str(len(shapes) or len(bars))
    if q == "Which colour do the most shapes have?":
        counts = Counter(s.colour for s in shapes)
        return only([c for c, n in counts.items() if n == max(counts.values())])
    if q == "The most common kind of shape in the image is the ___.":
        counts = Counter(s.kind for s in shapes)
        return only([k for k, n in counts.items() if n == max(counts.values())])
    if m := re.fullmatch(r"There are ___ (small|large) shapes in the image\.", q):
        return str(sum(s.size == m[1] for s in shapes))
    if q == "How many shapes of each colour are there?":
        counts = Counter(s.colour for s in shapes)
        for colour in COLOURS:
            phrase = re.search(rf"(\d+) {colour} shape", item.answer)
            assert (int(phrase[1]) if phrase else 0) == counts[colour], (colour, item.answer)
        return item.answer
    # relations
    if m := re.fullmatch(r"What colour is the shape nearest to the (\w+) (\w+)\?", q):
        reference = by_name(scene, *m.groups())
        distances = sorted((dist(reference.centre, s.centre), s.colour) for s in shapes if s is not reference)
        assert distances[1][0] - distances[0][0] >= 0.02 * scene.width, "nearest is nearly a tie"
        return distances[0][1]
    if m := re.fullmatch(r"Which of these describes the (\w+) shape\?", q):
        shape = only([s for s in shapes if s.colour == m[1]])
        return f"{shape.size} {shape.kind}"
    if m := re.fullmatch(r"The (\w+) (\w+) is to the ___ of the (\w+) (\w+)\.", q):
        a, b = by_name(scene, m[1], m[2]), by_name(scene, m[3], m[4])
        return "left" if a.centre[0] < b.centre[0] else "right"
    if m := re.fullmatch(r"The (\w+) (\w+) is ___ the (\w+) (\w+)\.", q):
        a, b = by_name(scene, m[1], m[2]), by_name(scene, m[3], m[4])
        return "above" if a.centre[1] < b.centre[1] else "below"
    if m := re.fullmatch(r"How many shapes are (to the left of|above) the (\w+) (\w+)\?", q):
        reference = by_name(scene, m[2], m[3])
        axis = 0 if m[1] == "to the left of" else 1
        return str(sum(s.centre[axis] < reference.centre[axis] for s in shapes))
    if m := re.fullmatch(r"Where is the (\w+) (\w+) relative to the (\w+) (\w+)\?", q):
        a, b = by_name(scene, m[1], m[2]), by_name(scene, m[3], m[4])
        side = "left" if a.centre[0] < b.centre[0] else "right"
        height = "above" if a.centre[1] < b.centre[1] else "below"
        return f"The {m[1]} {m[2]} is to the {side} of and {height} the {m[3]} {m[4]}."
    if q == "Which shape is furthest to the right?":
        rightmost = max(s.centre[0] for s in shapes)
        shape = only([s for s in shapes if s.centre[0] == rightmost])
        return f"{shape.colour} {shape.kind}"
    # arithmetic
    if m := re.fullmatch(r"What is the sum of the numbers on the (\w+) shapes\?", q):
        return str(sum(s.number for s in shapes if s.colour == m[1]))
    if m := re.fullmatch(r"What is the product of the numbers on the (\w+)s\?", q):
        return str(prod(s.number for s in shapes if s.kind == m[1]))
    if q == "What is the largest number shown minus the smallest number shown?":
        return str(max(numbers) - min(numbers))
    if q == "What colour is the shape showing the largest number?":
        return only([s.colour for s in shapes if s.number == max(numbers)])
    if q == "What is the sum of all the numbers shown?":
        return str(sum(numbers))
    if m := re.fullmatch(r"The number on the (\w+) (\w+) is ___\.", q):
        return str(by_name(scene, m[1], m[2]).number)
    if q == "The smallest number shown is ___.":
        return str(min(numbers))
    if m := re.fullmatch(r"What numbers are on the (\w+) shapes, and what is their sum\?", q):
        members = [s.number for s in shapes if s.colour == m[1]]
        assert [int(n) for n in re.findall(r"\d+", item.answer)] == members + [sum(members)] or (
            len(members) == 1 and re.findall(r"\d+", item.answer) == [str(members[0])] * 2), item.answer
        return item.answer
    if m := re.fullmatch(r"By how much does the number on the (\w+) (\w+) exceed the number on the (\w+) (\w+)\?", q):
        difference = by_name(scene, m[1], m[2]).number - by_name(scene, m[3], m[4]).number
        assert difference > 0
        return str(difference)
    # bar chart
    if m := re.fullmatch(r"What is the value of the bar labelled '(\w+)'\?", q):
        return str(bars[m[1]])
    if m := re.fullmatch(r"How much larger is the value of '(\w+)' than that of '(\w+)'\?", q):
        assert bars[m[1]] > bars[m[2]]
        return str(bars[m[1]] - bars[m[2]])
    if q == "Which category has the highest value?":
        return only([label for label, value in bars.items() if value == max(bars.values())])
    if q == "The category with the lowest value is ___.":
        return only([label for label, value in bars.items() if value == min(bars.values())])
    if q == "What is the total of all the bar values?":
        return str(sum(bars.values()))
    if m := re.fullmatch(r"How many categories have a value greater than (\d+)\?", q):
        assert int(m[1]) not in bars.values()
        return str(sum(value > int(m[1]) for value in bars.values()))
    if q == "Which bars are the largest and the smallest, and how far apart are they?":
        top = only([label for label, value in bars.items() if value == max(bars.values())])
        bottom = only([label for label, value in bars.items() if value == min(bars.values())])
        spread = bars[top] - bars[bottom]
        return f"The largest bar is '{top}' with {bars[top]}, {spread} more than the smallest, '{bottom}'."
    raise AssertionError(f"the oracle does not know the question {q!r}: add a check for it")


def given(item: QAItem) -> str:
    return item.choices[LETTERS.index(item.answer)] if item.answer_type == "mc" else item.answer


@pytest.mark.parametrize("scene", SCENES, ids=lambda s: s.scene_id)
def test_every_valid_answer_matches_the_scene_graph(scene):
    for item in qa_items(scene):
        assert given(item) == expected(scene, item), item


@pytest.mark.parametrize("scene", SCENES, ids=lambda s: s.scene_id)
def test_items_are_well_formed_and_cover_every_type(scene):
    items = qa_items(scene)
    assert len(items) >= 6
    assert {item.answer_type for item in items} == {"mc", "fib", "num", "des"}
    assert all(item.valid and item.invalid_reason is None and item.category == scene.family for item in items)
    assert all(item.abilities and set(item.abilities) <= set(ABILITIES) for item in items)
    assert any(len(item.abilities) == 1 for item in items)  # the ability-combination filter can drop one
    assert sum(len(item.abilities) >= 2 for item in items) > len(items) / 2
    assert len({item.question for item in items}) == len(items)
    for item in items:
        assert 2 <= len(item.steps) <= 5 and all(step.strip() for step in item.steps)
        if item.answer_type == "mc":
            assert len(item.choices) == len(set(item.choices)) == 4 and item.answer in "ABCD"
        if item.answer_type == "num":
            assert re.fullmatch(r"\d+", item.answer)
        if item.answer_type == "fib":
            assert item.question.count("___") == 1 and re.fullmatch(r"\w+", item.answer)
        if item.answer_type == "des":
            assert item.answer.endswith(".") and item.answer.count(". ") == 0


def test_items_are_deterministic():
    for scene in SCENES[::7]:
        again = make_scene(scene.family, scene.seed)
        assert qa_items(again) == qa_items(scene) and invalid_items(again) == invalid_items(scene)
        assert caption_fine(again) == caption_fine(scene) and caption_coarse(again) == caption_coarse(scene)


def test_nearest_questions_never_hinge_on_a_near_tie():
    # Near ties are common (about one reference shape in ten), so look beyond the 20 usual seeds.
    for seed in range(20, 300):
        scene = make_scene("relations", seed)
        for item in qa_items(scene):
            if "nearest" in item.question:
                assert given(item) == expected(scene, item)


def test_tied_questions_are_skipped_and_offered_as_invalid():
    def has_colour_tie(scene) -> bool:
        counts = Counter(shape.colour for shape in scene.shapes).most_common()
        return len(counts) > 1 and counts[0][1] == counts[1][1]

    tied = [scene for scene in SCENES if scene.family == "counting" and has_colour_tie(scene)]
    assert tied, "no counting scene with a colour tie among the seeds; widen SEEDS"
    for scene in tied:
        assert "Which colour do the most shapes have?" not in [item.question for item in qa_items(scene)]
        item = find_item(scene, "Which colour do the most shapes have?")
        assert item is not None and not item.valid and item.invalid_reason == "ambiguous"


@pytest.mark.parametrize("scene", SCENES, ids=lambda s: s.scene_id)
def test_invalid_items_are_marked_with_a_reason(scene):
    items = invalid_items(scene)
    assert 1 <= len(items) <= 2
    assert {item.invalid_reason for item in items} <= {"ambiguous", "unverifiable"}
    assert all(not item.valid for item in items)
    valid_questions = {item.question for item in qa_items(scene)}
    assert not valid_questions & {item.question for item in items}


def test_find_item_ignores_case_and_whitespace():
    scene = make_scene("bar_chart", 5)
    item = qa_items(scene)[0]
    assert find_item(scene, "  " + item.question.upper().replace(" ", "\n  ")) == item
    assert find_item(scene, invalid_items(scene)[1].question.lower()) == invalid_items(scene)[1]
    assert find_item(scene, "What is the meaning of life?") is None


@pytest.mark.parametrize("scene", SCENES, ids=lambda s: s.scene_id)
def test_fine_caption_describes_every_object(scene):
    caption = caption_fine(scene)
    if scene.chart is not None:
        assert re.findall(r"'(\w+)' (\d+)", caption) == [(b.label, str(b.value)) for b in scene.chart.bars]
        assert scene.chart.title in caption
        return
    # Parse the caption back: it must give a text-only reader every attribute and position.
    described = re.findall(r"a (small|large) (\w+) (circle|square|triangle)(?: showing the number (\d+))? "
                           r"in the [\w ]+ at \((\d+), (\d+)\)", caption)
    assert described == [(s.size, s.colour, s.kind, "" if s.number is None else str(s.number),
                          str(s.centre[0]), str(s.centre[1])) for s in scene.shapes]


def test_coarse_caption_is_short_and_counts_the_objects():
    assert caption_coarse(make_scene("bar_chart", 1)).startswith("A bar chart titled ")
    scene = make_scene("counting", 1)
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    assert caption_coarse(scene).lower().startswith(words[len(scene.shapes)] + " shapes")


@pytest.mark.parametrize("family", FAMILIES)
def test_wrong_answer_is_wrong_and_of_the_same_type(family):
    rng = random.Random(0)
    for seed in SEEDS:
        for item in qa_items(make_scene(family, seed)):
            wrong = wrong_answer(item, rng)
            assert wrong != item.answer, item
            if item.answer_type == "mc":
                assert wrong in "ABCD"
            elif item.answer.isdigit():
                assert wrong.isdigit() and 1 <= abs(int(wrong) - int(item.answer)) <= 3
            elif item.answer_type == "fib":
                assert re.fullmatch(r"\w+", wrong)
