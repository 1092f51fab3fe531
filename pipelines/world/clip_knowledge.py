"""What the scripted teacher knows about a clip: captions over time and temporal questions, all exact.

The clip counterpart of `knowledge.py`, with the same functions (`caption_coarse`, `caption_fine`,
`qa_items`, `invalid_items`, `find_item`, `wrong_answer`) so the teacher picks a module by the kind of
graph and calls it the same way. Everything is derived from the keyframes alone: which shapes are on
screen when, found by comparing consecutive keyframes by shape name (`events`).

- `caption_coarse`: one line on what happens. `caption_fine`: the clip in time order, "First, ...;
  then, at 0.5 s, ...; ... At the end ...", with every shape's attributes, word position and pixel
  centre, so a text-only reader can answer every valid question.
- `qa_items`: temporal questions, each combining `temporal_reasoning` with another ability:
  order (which appeared first, which way it moved), count over time (how many at the end, how many
  appeared, how often a number changed, the most at once) and change (what changed between the start
  and the end). Every family gives mc, fib, num and des items.

Wording is deterministic, and choices are drawn from a `random.Random` seeded by the clip id.
"""

import random
import re
from itertools import product

from pipelines.world import knowledge
from pipelines.world.clips import DIRECTIONS, Clip
from pipelines.world.knowledge import BLANK, QAItem
from pipelines.world.scenes import COLOURS, KINDS, Shape

# Wording helpers shared with knowledge.py: the same world says things the same way.
from pipelines.world.knowledge import _choices, _join, _name, _near_numbers, _number_word, _position, _prefer

UP_DOWN = ("up", "down")


# --- what happens --------------------------------------------------------------------------------


def events(clip: Clip) -> list[tuple[float, str, Shape]]:
    """(time, "appears" | "disappears" | "moves" | "changes", shape as it is after the event), in time order."""
    found = []
    for before, after in zip(clip.keyframes, clip.keyframes[1:]):
        old, new = {_name(s): s for s in before.shapes}, {_name(s): s for s in after.shapes}
        for name, shape in new.items():
            if name not in old:
                found.append((after.t, "appears", shape))
            elif shape.bbox != old[name].bbox:
                found.append((after.t, "moves", shape))
            elif shape.number != old[name].number:
                found.append((after.t, "changes", shape))
        found += [(after.t, "disappears", shape) for name, shape in old.items() if name not in new]
    return found


def _start(clip: Clip) -> tuple[Shape, ...]:
    return clip.keyframes[0].shapes


def _end(clip: Clip) -> tuple[Shape, ...]:
    return clip.keyframes[-1].shapes


def _mover(clip: Clip) -> Shape:
    return next(s for t, verb, s in events(clip) if verb == "moves")


def _counter(clip: Clip) -> Shape:
    return next(s for s in _start(clip) if s.number is not None)


def _numbers(clip: Clip) -> list[tuple[float, int]]:
    """(time, number) of the counter at the start and after each change."""
    name = _name(_counter(clip))
    return [(k.t, next(s.number for s in k.shapes if _name(s) == name)) for k in clip.keyframes]


def _direction(clip: Clip) -> str:
    first = next(s for s in _start(clip) if _name(s) == _name(_mover(clip)))
    (x0, y0), (x1, y1) = first.centre, _mover_at_end(clip).centre
    if x0 != x1:
        return "right" if x1 > x0 else "left"
    return "down" if y1 > y0 else "up"


def _mover_at_end(clip: Clip) -> Shape:
    return next(s for s in _end(clip) if _name(s) == _name(_mover(clip)))


# --- captions ------------------------------------------------------------------------------------


def caption_coarse(clip: Clip) -> str:
    seconds = f"{clip.duration_s:g}-second clip"
    if clip.family == "clip_motion":
        n_still = len(_start(clip)) - 1
        return (f"A {seconds} in which a {_name(_mover(clip))} moves {_direction(clip)} while {_number_word(n_still)} "
                "other shapes stay still.")
    if clip.family == "clip_counter":
        numbers = _numbers(clip)
        return f"A {seconds} in which the number on a large {_name(_counter(clip))} changes from {numbers[0][1]} to {numbers[-1][1]}."
    return (f"A {seconds} of shapes appearing and disappearing on a white background: {_number_word(len(_start(clip)))} "
            f"at the start, {_number_word(len(_end(clip)))} at the end.")


def caption_fine(clip: Clip) -> str:
    head = (f"A {clip.duration_s:g}-second clip ({clip.n_frames} frames at {clip.fps} fps, {clip.width}x{clip.height} pixels) "
            f"on a white background; pixel centres are (x from the left edge, y from the top edge). "
            f"First, at the start, there {_are(len(_start(clip)))}: {_listed(_start(clip), clip)}.")
    if clip.family == "clip_motion":
        mover = _name(_mover(clip))
        steps = [f"at {_at(t)} it is at {shape.centre}" for t, verb, shape in events(clip)]
        end = _mover_at_end(clip)
        return (f"{head} Then the {mover} moves {_direction(clip)} in equal steps: {'; then '.join(steps)}, in the "
                f"{_position(end, clip)}. The other shapes stay where they are.")
    if clip.family == "clip_counter":
        counter = _name(_counter(clip))
        changes = [f"at {_at(t)} to {number}" for t, number in _numbers(clip)[1:]]
        return (f"{head} Then the number on the {counter} changes: {'; then '.join(changes)}. At the end it shows "
                f"{_numbers(clip)[-1][1]}. The other shapes do not change.")
    happenings = [f"at {_at(t)}, " + (f"a {shape.size} {_name(shape)} appears in the {_position(shape, clip)} at {shape.centre}"
                                      if verb == "appears" else f"the {_name(shape)} disappears")
                  for t, verb, shape in events(clip)]
    return (f"{head} Then, {'; then, '.join(happenings)}. At the end there {_are(len(_end(clip)))}: "
            f"{_listed(_end(clip), clip)}.")


def _at(t: float) -> str:
    return f"{t:.1f} s"


def _are(n: int) -> str:
    return "is one shape" if n == 1 else f"are {n} shapes"


def _listed(shapes, clip: Clip) -> str:
    return _join([f"a {s.size} {_name(s)}" + ("" if s.number is None else f" showing the number {s.number}")
                  + f" in the {_position(s, clip)} at {s.centre}" for s in shapes])


# --- questions -----------------------------------------------------------------------------------


def qa_items(clip: Clip) -> list[QAItem]:
    """Every valid temporal question the teacher knows for `clip`, in a fixed order."""
    rng = random.Random(f"{clip.clip_id}/knowledge")
    return _TEMPLATES[clip.family](clip, rng)


def _objects_items(clip: Clip, rng: random.Random) -> list[QAItem]:
    family, happened = clip.family, events(clip)
    appeared = [s for t, verb, s in happened if verb == "appears"]
    vanished = [s for t, verb, s in happened if verb == "disappears"]
    start, end = _start(clip), _end(clip)
    timeline = "; ".join(f"{_name(s)} {verb} at {_at(t)}" for t, verb, s in happened)
    items = []

    first = appeared[0]
    choices, letter = _choices(_name(first), _prefer(rng, [_name(s) for s in appeared[1:]], _outside(clip)), rng)
    items.append(QAItem(
        "Which of these shapes appeared first after the start of the clip?", letter, "mc", choices, family,
        ("temporal_reasoning", "attribute_recognition"),
        (f"Go through the clip in order: {timeline}.",
         f"The first shape to appear is the {_name(first)}, at {_at(next(t for t, verb, _ in happened if verb == 'appears'))}.",
         f"The {_name(first)} is choice {letter}.")))

    items.append(QAItem(
        "How many shapes are there at the end of the clip?", str(len(end)), "num", (), family,
        ("temporal_reasoning", "counting"),
        ("Look at the last frames of the clip.", f"The shapes there: {_join([_name(s) for s in end])}.",
         f"That makes {len(end)}.")))

    items.append(QAItem(
        "How many shapes appeared after the start of the clip?", str(len(appeared)), "num", (), family,
        ("temporal_reasoning", "counting"),
        (f"Go through the clip in order: {timeline}.", f"Shapes that appeared: {_join([_name(s) for s in appeared])}.",
         f"That makes {len(appeared)}.")))

    counts = [len(k.shapes) for k in clip.keyframes]
    items.append(QAItem(
        "What is the largest number of shapes shown at the same time?", str(max(counts)), "num", (), family,
        ("temporal_reasoning", "counting", "comparison"),
        ("Count the shapes at each moment: " + ", ".join(f"{_at(k.t)} {n}" for k, n in zip(clip.keyframes, counts)) + ".",
         f"The largest of these counts is {max(counts)}.")))

    last = appeared[-1]
    items.append(QAItem(
        f"The colour of the last shape to appear is {BLANK}.", last.colour, "fib", (), family,
        ("temporal_reasoning", "attribute_recognition"),
        (f"Go through the clip in order: {timeline}.", f"The last shape to appear is the {_name(last)}, so the blank is '{last.colour}'.")))

    added = [s for s in end if _name(s) not in {_name(t) for t in start}]
    removed = [s for s in start if _name(s) not in {_name(t) for t in end}]
    changes = ([f"the {_join([_name(s) for s in added])} appeared"] if added else []) + \
        ([f"the {_join([_name(s) for s in removed])} disappeared"] if removed else [])
    answer = (f"At the start there {'was one shape' if len(start) == 1 else f'were {len(start)} shapes'} and at the end "
              f"there {_are(len(end))}: " + (" and ".join(changes) if changes else "the same shapes as at the start") + ".")
    items.append(QAItem(
        "What changed between the start and the end of the clip?", answer, "des", (), family,
        ("temporal_reasoning", "counting", "attribute_recognition"),
        (f"At the start: {_join([_name(s) for s in start])}.", f"At the end: {_join([_name(s) for s in end])}.",
         "Compare the two lists: " + ("; ".join(changes) if changes else "nothing differs") + ".")))

    if len(vanished) == 1:
        gone = vanished[0]
        stayed = [_name(s) for s in _everyone(clip) if _name(s) != _name(gone)]
        choices, letter = _choices(_name(gone), _prefer(rng, stayed, _outside(clip)), rng)
        items.append(QAItem(
            "Which of these shapes disappeared during the clip?", letter, "mc", choices, family,
            ("temporal_reasoning", "attribute_recognition"),
            (f"Go through the clip in order: {timeline}.", f"Only the {_name(gone)} disappears.",
             f"The {_name(gone)} is choice {letter}.")))
    return items


def _motion_items(clip: Clip, rng: random.Random) -> list[QAItem]:
    family, mover, direction = clip.family, _mover(clip), _direction(clip)
    name = _name(mover)
    still = [s for s in _start(clip) if _name(s) != name]
    first = next(s for s in _start(clip) if _name(s) == name)
    last = _mover_at_end(clip)
    path = ", ".join(str(s.centre) for s in [first] + [s for _, _, s in events(clip)])
    items = []

    choices, letter = _choices(name, _prefer(rng, [_name(s) for s in still], _outside(clip)), rng)
    items.append(QAItem(
        "Which shape moves during the clip?", letter, "mc", choices, family, ("temporal_reasoning", "attribute_recognition"),
        (f"Compare each shape's position from frame to frame: only the {name} changes place.", f"The {name} is choice {letter}.")))

    choices, letter = _choices(direction, [d for d in DIRECTIONS if d != direction], rng)
    items.append(QAItem(
        f"In which direction does the {name} move?", letter, "mc", choices, family, ("temporal_reasoning", "spatial_reasoning"),
        (f"The {name} is centred at {first.centre} at the start and at {last.centre} at the end.",
         f"So it moves {direction}, choice {letter}.")))

    items.append(QAItem(
        "How many shapes stay still during the clip?", str(len(still)), "num", (), family, ("temporal_reasoning", "counting"),
        (f"Only the {name} moves.", f"The others stay put: {_join([_name(s) for s in still])}.", f"That makes {len(still)}.")))

    axis = 0 if direction in ("left", "right") else 1
    clear = [s for s in still if abs(last.centre[axis] - s.centre[axis]) >= 0.02 * clip.width]
    if clear:
        reference = rng.choice(clear)
        ahead = last.centre[axis] < reference.centre[axis]
        relation = ("left" if ahead else "right") if axis == 0 else ("above" if ahead else "below")
        question = (f"At the end of the clip, the {name} is to the {BLANK} of the {_name(reference)}." if axis == 0 else
                    f"At the end of the clip, the {name} is {BLANK} the {_name(reference)}.")
        coordinate = "xy"[axis]
        items.append(QAItem(
            question, relation, "fib", (), family, ("temporal_reasoning", "spatial_reasoning"),
            (f"At the end the {name} is centred at {coordinate} = {last.centre[axis]}.",
             f"The {_name(reference)} stays at {coordinate} = {reference.centre[axis]}.",
             f"So the blank is '{relation}'.")))

    n_moves = len(events(clip))
    items.append(QAItem(
        f"How many times does the {name} change position?", str(n_moves), "num", (), family, ("temporal_reasoning", "counting"),
        (f"Follow the {name} through the clip: {path}.", f"It changes place {n_moves} times.")))

    answer = (f"The {name} moves {direction} from {first.centre} in the {_position(first, clip)} "
              f"to {last.centre} in the {_position(last, clip)}.")
    items.append(QAItem(
        f"How does the {name} move between the start and the end of the clip?", answer, "des", (), family,
        ("temporal_reasoning", "spatial_reasoning"),
        (f"At the start the {name} is centred at {first.centre}.", f"At the end it is centred at {last.centre}.",
         f"So it moved {direction}.")))
    return items


def _counter_items(clip: Clip, rng: random.Random) -> list[QAItem]:
    family, name = clip.family, _name(_counter(clip))
    numbers = _numbers(clip)
    values = [n for _, n in numbers]
    first, last = values[0], values[-1]
    sequence = ", ".join(f"{n} at {_at(t)}" for t, n in numbers)
    trend = "up" if last > first else "down"
    items = []

    items.append(QAItem(
        f"What number does the {name} show at the end of the clip?", str(last), "num", (), family, ("temporal_reasoning", "ocr"),
        (f"Read the number on the {name} in the last frames.", f"It shows {last}.")))

    items.append(QAItem(
        f"How many times does the number on the {name} change?", str(len(values) - 1), "num", (), family,
        ("temporal_reasoning", "counting"),
        (f"Read the number on the {name} through the clip: {sequence}.", f"It changes {len(values) - 1} times.")))

    items.append(QAItem(
        f"What is the largest number the {name} shows during the clip?", str(max(values)), "num", (), family,
        ("temporal_reasoning", "ocr", "comparison"),
        (f"Read the number on the {name} through the clip: {sequence}.", f"The largest is {max(values)}.")))

    items.append(QAItem(
        f"From the start to the end of the clip, the number on the {name} goes {BLANK}.", trend, "fib", (), family,
        ("temporal_reasoning", "comparison"),
        (f"At the start the {name} shows {first}.", f"At the end it shows {last}.",
         f"{last} is {'more' if trend == 'up' else 'less'} than {first}, so the blank is '{trend}'.")))

    items.append(QAItem(
        f"By how much does the number on the {name} go {trend} from the start to the end of the clip?", str(abs(last - first)),
        "num", (), family, ("temporal_reasoning", "ocr", "arithmetic"),
        (f"At the start the {name} shows {first}.", f"At the end it shows {last}.",
         f"{max(first, last)} - {min(first, last)} = {abs(last - first)}.")))

    choices, letter = _choices(str(first), _near_numbers(first, rng), rng)
    items.append(QAItem(
        f"What number does the {name} show at the start of the clip?", letter, "mc", choices, family, ("temporal_reasoning", "ocr"),
        (f"Read the number on the {name} in the first frames.", f"It shows {first}.", f"{first} is choice {letter}.")))

    steps_text = ", then ".join(f"to {n} at {_at(t)}" for t, n in numbers[1:])
    items.append(QAItem(
        f"How does the number on the {name} change during the clip?", f"It goes from {first} {steps_text}.", "des", (), family,
        ("temporal_reasoning", "ocr"),
        (f"Read the number on the {name} through the clip: {sequence}.", "List the changes in order.")))
    return items


_TEMPLATES = {
    "clip_objects": _objects_items,
    "clip_motion": _motion_items,
    "clip_counter": _counter_items,
}


# --- invalid questions ---------------------------------------------------------------------------


def invalid_items(clip: Clip) -> list[QAItem]:
    """Two questions a careless writer would propose: one ambiguous (which shape?), one unverifiable (why?)."""
    rng = random.Random(f"{clip.clip_id}/invalid")
    shapes = _everyone(clip)
    colours = [s.colour for s in shapes]
    choices, letter = _choices(colours[0], _prefer(rng, colours, COLOURS), rng)
    ambiguous = QAItem("What colour is the shape in the clip?", letter, "mc", choices, clip.family,
                       ("temporal_reasoning", "attribute_recognition"),
                       ("Look at the shape.", f"It is {colours[0]}, choice {letter}."), valid=False, invalid_reason="ambiguous")
    subject = _name(shapes[-1])
    unverifiable = QAItem(f"Why does the {subject} change during the clip?", f"Because the {subject} wants to be noticed.",
                          "des", (), clip.family, ("temporal_reasoning", "attribute_recognition"),
                          (f"Watch the {subject}.", "Guess its reason."), valid=False, invalid_reason="unverifiable")
    return [ambiguous, unverifiable]


def find_item(clip: Clip, question: str) -> QAItem | None:
    """The item asking `question` (whitespace and case ignored), valid or not; None if unknown."""
    wanted = " ".join(question.split()).casefold()
    return next((i for i in qa_items(clip) + invalid_items(clip) if " ".join(i.question.split()).casefold() == wanted), None)


def wrong_answer(item: QAItem, rng: random.Random) -> str:
    """As knowledge.wrong_answer, plus the clip words (up / down) the image world has no pool for."""
    if item.answer_type == "fib" and item.answer in UP_DOWN:
        return UP_DOWN[1 - UP_DOWN.index(item.answer)]
    wrong = knowledge.wrong_answer(item, rng)
    if wrong == item.answer and re.search(r"\b(up|down)\b", item.answer):
        return re.sub(r"\b(up|down)\b", lambda m: UP_DOWN[1 - UP_DOWN.index(m.group())], item.answer, count=1)
    return wrong


# --- helpers -------------------------------------------------------------------------------------


def _everyone(clip: Clip) -> list[Shape]:
    """Every shape that is on screen at some time, first appearance first."""
    seen: dict[str, Shape] = {}
    for keyframe in clip.keyframes:
        for shape in keyframe.shapes:
            seen.setdefault(_name(shape), shape)
    return list(seen.values())


def _outside(clip: Clip) -> list[str]:
    """Names of shapes that never appear in the clip: distractors that are plainly wrong to a viewer."""
    inside = {_name(s) for s in _everyone(clip)}
    return [f"{colour} {kind}" for colour, kind in product(COLOURS, KINDS) if f"{colour} {kind}" not in inside]
