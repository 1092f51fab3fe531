"""Clips of the synthetic world: deterministic rendering, frames that show the graph, and exact temporal knowledge.

`expected(clip, item)` re-derives each answer independently of `clip_knowledge`: it walks the clip
frame by frame (`clip.shapes_at(i / fps)`, what a viewer sees), never the keyframe diffs the
teacher uses, and reads the question's wording. An unknown question fails, so a new template cannot
ship without a check.
"""

import io
import random
import re

import av
import numpy as np
import pytest

from pipelines.video import uniform_positions
from pipelines.world import clip_knowledge
from pipelines.world.clips import CLIP_FAMILIES, clip_from_json, clip_to_json, make_clip, render_clip, render_frames, world_from_json
from pipelines.world.knowledge import LETTERS, QAItem
from pipelines.world.scenes import COLOURS, make_scene, scene_to_json

CLIPS = [make_clip(family, seed, size=96) for family in CLIP_FAMILIES for seed in range(15)]


def timeline(clip) -> list[dict[str, object]]:
    """Per frame: shape name -> Shape, as a viewer sees it."""
    return [{f"{s.colour} {s.kind}": s for s in clip.shapes_at(i / clip.fps)} for i in range(clip.n_frames)]


def first_seen(frames) -> dict[str, int]:
    seen = {}
    for index, shapes in enumerate(frames):
        for name in shapes:
            seen.setdefault(name, index)
    return seen


def changes(values: list) -> int:
    return sum(a != b for a, b in zip(values, values[1:]))


def expected(clip, item: QAItem) -> str:
    """The answer (the chosen option for mc) the frames imply; for des, the facts the answer must state."""
    q, frames = item.question, timeline(clip)
    seen = first_seen(frames)
    later = sorted((i, n) for n, i in seen.items() if i > 0)
    if q == "Which of these shapes appeared first after the start of the clip?":
        return later[0][1]
    if q == "How many shapes are there at the end of the clip?":
        return str(len(frames[-1]))
    if q == "How many shapes appeared after the start of the clip?":
        return str(len(later))
    if q == "What is the largest number of shapes shown at the same time?":
        return str(max(len(f) for f in frames))
    if q == "The colour of the last shape to appear is ___.":
        return later[-1][1].split()[0]
    if q == "Which of these shapes disappeared during the clip?":
        (gone,) = {n for i, f in enumerate(frames[:-1]) for n in f if n not in frames[i + 1]}
        return gone
    if q == "What changed between the start and the end of the clip?":
        added, removed = set(frames[-1]) - set(frames[0]), set(frames[0]) - set(frames[-1])
        counts = ["was one shape" if len(frames[0]) == 1 else f"were {len(frames[0])} shapes",
                  "is one shape" if len(frames[-1]) == 1 else f"are {len(frames[-1])} shapes"]
        return " | ".join([*counts, *sorted(added), *sorted(removed)])
    movers = [n for n in frames[0] if len({f[n].bbox for f in frames}) > 1]
    if q == "Which shape moves during the clip?":
        return movers[0]
    if q == "How many shapes stay still during the clip?":
        return str(sum(len({f[n].bbox for f in frames}) == 1 for n in frames[0]))
    if m := re.fullmatch(r"In which direction does the (\w+ \w+) move\?", q):
        (x0, y0), (x1, y1) = frames[0][m[1]].centre, frames[-1][m[1]].centre
        return "right" if x1 > x0 else "left" if x1 < x0 else "down" if y1 > y0 else "up"
    if m := re.fullmatch(r"At the end of the clip, the (\w+ \w+) is to the ___ of the (\w+ \w+)\.", q):
        return "left" if frames[-1][m[1]].centre[0] < frames[-1][m[2]].centre[0] else "right"
    if m := re.fullmatch(r"At the end of the clip, the (\w+ \w+) is ___ the (\w+ \w+)\.", q):
        return "above" if frames[-1][m[1]].centre[1] < frames[-1][m[2]].centre[1] else "below"
    if m := re.fullmatch(r"How many times does the (\w+ \w+) change position\?", q):
        return str(changes([f[m[1]].bbox for f in frames]))
    if m := re.fullmatch(r"How does the (\w+ \w+) move between the start and the end of the clip\?", q):
        (x0, y0), (x1, y1) = frames[0][m[1]].centre, frames[-1][m[1]].centre
        direction = "right" if x1 > x0 else "left" if x1 < x0 else "down" if y1 > y0 else "up"
        return " | ".join([f"moves {direction} from {(x0, y0)}", f"to {(x1, y1)}"])
    if m := re.search(rf"the ((?:{'|'.join(COLOURS)}) (?:circle|square|triangle))", q):
        numbers = [f[m[1]].number for f in frames if m[1] in f]
        steps = [f"to {n} at {k / clip.fps:.1f} s" for k, n in enumerate(numbers) if k and n != numbers[k - 1]]
        if q.startswith("What number does") and q.endswith("at the end of the clip?"):
            return str(numbers[-1])
        if q.startswith("What number does") and q.endswith("at the start of the clip?"):
            return str(numbers[0])
        if q.startswith("How many times does the number"):
            return str(changes(numbers))
        if q.startswith("What is the largest number"):
            return str(max(numbers))
        if q.startswith("From the start to the end of the clip"):
            return "up" if numbers[-1] > numbers[0] else "down"
        if bm := re.fullmatch(r"By how much does the number on the \w+ \w+ go (up|down) from the start to the end of the clip\?", q):
            assert bm[1] == ("up" if numbers[-1] > numbers[0] else "down")
            return str(abs(numbers[-1] - numbers[0]))
        if q.startswith("How does the number on the"):
            return " | ".join([f"from {numbers[0]} ", *steps])
    raise AssertionError(f"no independent check for {q!r}")


def given(item: QAItem) -> str:
    return item.choices[LETTERS.index(item.answer)] if item.answer_type == "mc" else item.answer


@pytest.mark.parametrize("clip", CLIPS, ids=lambda c: c.clip_id)
def test_every_answer_matches_the_frames(clip):
    for item in clip_knowledge.qa_items(clip):
        truth = expected(clip, item)
        if item.answer_type == "des":
            for fact in truth.split(" | "):
                assert fact in item.answer, (item, fact)
        else:
            assert given(item) == truth, item


@pytest.mark.parametrize("clip", CLIPS, ids=lambda c: c.clip_id)
def test_items_are_temporal_and_well_formed_and_cover_every_type(clip):
    items = clip_knowledge.qa_items(clip)
    assert {i.answer_type for i in items} == {"mc", "fib", "num", "des"}
    assert all("temporal_reasoning" in i.abilities and len(set(i.abilities)) >= 2 for i in items)
    assert all(i.valid and i.category == clip.family for i in items)
    assert len({i.question for i in items}) == len(items)
    for item in items:
        assert clip_knowledge.find_item(clip, "  " + item.question.upper()) == item
    assert [i.invalid_reason for i in clip_knowledge.invalid_items(clip)] == ["ambiguous", "unverifiable"]


@pytest.mark.parametrize("clip", CLIPS[::5], ids=lambda c: c.clip_id)
def test_captions_tell_what_happens_in_time_order(clip):
    assert "clip" in clip_knowledge.caption_coarse(clip)
    fine = clip_knowledge.caption_fine(clip)
    assert fine.startswith("A 3-second clip (24 frames at 8 fps, 96x96 pixels)") and "First, at the start" in fine
    times = [f"at {k.t:.1f} s" for k in clip.keyframes[1:]]
    positions = [fine.index(t) for t in times]
    assert positions == sorted(positions) and "then" in fine
    for event_time, verb, shape in clip_knowledge.events(clip):
        assert f"{shape.colour} {shape.kind}" in fine
        if verb == "changes":
            assert f"at {event_time:.1f} s to {shape.number}" in fine
        if verb == "moves":
            assert f"at {event_time:.1f} s it is at {shape.centre}" in fine


def test_every_state_lasts_long_enough_for_eight_uniform_frames_to_see_it():
    sampled = {p / 8 for p in uniform_positions(24, 8)}
    for clip in CLIPS:
        starts = [k.t for k in clip.keyframes] + [clip.duration_s]
        assert starts[0] == 0.0 and all(b - a >= 0.5 for a, b in zip(starts, starts[1:])), clip.clip_id
        assert all(any(a <= t < b for t in sampled) for a, b in zip(starts, starts[1:])), clip.clip_id


def test_the_same_clip_renders_to_the_same_bytes_and_frames():
    clip = make_clip("clip_motion", 3, size=96)
    first, again = render_clip(clip), render_clip(make_clip("clip_motion", 3, size=96))
    assert first == again and first[4:8] == b"ftyp"
    assert render_clip(make_clip("clip_motion", 4, size=96)) != first


@pytest.mark.parametrize("family", CLIP_FAMILIES)
def test_decoded_frames_show_each_shape_where_and_when_the_graph_says(family):
    clip = make_clip(family, 1, size=160)
    with av.open(io.BytesIO(render_clip(clip))) as container:
        frames = [f.to_ndarray(format="rgb24").astype(int) for f in container.decode(video=0)]
    assert len(frames) == clip.n_frames
    everyone = {f"{s.colour} {s.kind}": s for k in clip.keyframes for s in k.shapes}
    for index, pixels in enumerate(frames):
        shown = {f"{s.colour} {s.kind}": s for s in clip.shapes_at(index / clip.fps)}
        for name, shape in shown.items():
            if shape.number is None:  # a numbered shape has ink at its centre
                x, y = shape.centre
                assert np.abs(pixels[y, x] - COLOURS[shape.colour]).max() < 40, (index, name, pixels[y, x])
        for name, shape in everyone.items():
            x, y = shape.centre
            covered = any(s.bbox[0] <= x < s.bbox[2] and s.bbox[1] <= y < s.bbox[3] for s in shown.values())
            if name not in shown and not covered:
                assert pixels[y, x].min() > 215, (index, name, pixels[y, x])  # gone: background again


def test_clip_json_round_trips_and_is_told_apart_from_a_scene():
    for clip in CLIPS[::7]:
        text = clip_to_json(clip)
        assert clip_from_json(text) == clip == world_from_json(text)
    scene = make_scene("counting", 0)
    assert world_from_json(scene_to_json(scene)) == scene


def test_wrong_answers_are_wrong():
    rng = random.Random(0)
    for clip in CLIPS:
        for item in clip_knowledge.qa_items(clip):
            assert clip_knowledge.wrong_answer(item, rng) != item.answer, item


def test_the_same_seed_gives_the_same_clip_and_sizes_are_even():
    assert make_clip("clip_objects", 7) == make_clip("clip_objects", 7)
    assert make_clip("clip_objects", 7, size=97).width == 96
    assert render_frames(make_clip("clip_counter", 0, size=96))[0].size == (96, 96)
