"""Scene graphs and their rendering: determinism, exact geometry, JSON round trip, pixels."""

from io import BytesIO
from itertools import combinations

import pytest
from PIL import Image

from pipelines.world.render import render, render_png
from pipelines.world.scenes import (
    COLOURS,
    FAMILIES,
    KINDS,
    SIZES,
    make_scene,
    scene_from_json,
    scene_to_json,
)

SEEDS = range(20)


def overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def close(pixel, rgb, tolerance=12) -> bool:
    return all(abs(p - c) <= tolerance for p, c in zip(pixel, rgb))


@pytest.mark.parametrize("family", FAMILIES)
def test_same_family_and_seed_give_the_same_scene_and_png(family):
    assert make_scene(family, 42) == make_scene(family, 42)
    assert render_png(make_scene(family, 42)) == render_png(make_scene(family, 42))


@pytest.mark.parametrize("family", FAMILIES)
def test_different_seeds_give_different_scenes(family):
    scenes = [make_scene(family, seed) for seed in SEEDS]
    contents = {scene_to_json(s).replace(s.scene_id, "").replace(f'"seed":{s.seed}', "") for s in scenes}
    assert len(contents) == len(scenes)
    assert len({render_png(s) for s in scenes}) == len(scenes)


def test_scene_id_names_family_and_seed_and_size():
    assert make_scene("counting", 42).scene_id == "counting-000042"
    large = make_scene("counting", 42, size=448)
    assert large.scene_id == "counting-000042-448px"
    assert (large.width, large.height) == (448, 448)
    assert render(large).size == (448, 448)


def test_unknown_family_lists_the_known_ones():
    with pytest.raises(ValueError, match="known families: counting, relations, arithmetic, bar_chart"):
        make_scene("countnig", 0)


@pytest.mark.parametrize("family", FAMILIES)
def test_json_round_trip_is_exact(family):
    for seed in SEEDS:
        scene = make_scene(family, seed)
        text = scene_to_json(scene)
        assert scene_from_json(text) == scene
        assert scene_to_json(scene_from_json(text)) == text


@pytest.mark.parametrize("family", ["counting", "relations", "arithmetic"])
def test_shapes_lie_on_the_canvas_without_overlapping(family):
    for seed in SEEDS:
        scene = make_scene(family, seed)
        for shape in scene.shapes:
            left, top, right, bottom = shape.bbox
            assert 0 <= left < right <= scene.width and 0 <= top < bottom <= scene.height
            assert right - left == bottom - top and (right - left) % 2 == 0
            assert shape.kind in KINDS and shape.colour in COLOURS and shape.size in SIZES
        assert not any(overlaps(a.bbox, b.bbox) for a, b in combinations(scene.shapes, 2)), scene.scene_id


def test_family_sizes_and_attributes():
    for seed in SEEDS:
        counting = make_scene("counting", seed)
        assert 4 <= len(counting.shapes) <= 10 and all(s.number is None for s in counting.shapes)
        relations = make_scene("relations", seed)
        assert 3 <= len(relations.shapes) <= 6
        assert len({s.colour for s in relations.shapes}) == len(relations.shapes)  # "the red circle" is unique
        arithmetic = make_scene("arithmetic", seed)
        assert 3 <= len(arithmetic.shapes) <= 6 and all(1 <= s.number <= 20 for s in arithmetic.shapes)
        chart = make_scene("bar_chart", seed).chart
        assert 3 <= len(chart.bars) <= 6 and chart.title and chart.y_ticks[0] == 0 and chart.y_ticks[-1] == chart.y_max
        assert len({bar.value for bar in chart.bars}) == len(chart.bars)  # no ties for max/min
        assert all(1 <= bar.value <= chart.y_max and bar.label for bar in chart.bars)


def test_relation_shapes_are_clearly_apart_in_x_and_y():
    for seed in SEEDS:
        scene = make_scene("relations", seed)
        for a, b in combinations(scene.shapes, 2):
            assert abs(a.centre[0] - b.centre[0]) >= 0.05 * scene.width - 0.5
            assert abs(a.centre[1] - b.centre[1]) >= 0.05 * scene.height - 0.5


def test_bar_geometry_is_proportional_to_values():
    for seed in SEEDS:
        chart = make_scene("bar_chart", seed).chart
        left, top, right, bottom = chart.plot_bbox
        for bar in chart.bars:
            assert bar.bbox[3] == bottom
            assert abs((bar.bbox[3] - bar.bbox[1]) - bar.value * (bottom - top) / chart.y_max) <= 0.5
            assert left <= bar.bbox[0] < bar.bbox[2] <= right


# --- rendering -----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["counting", "relations"])
def test_pixel_at_each_shape_centre_has_its_colour(family):
    for seed in SEEDS:
        scene = make_scene(family, seed)
        image = render(scene)
        assert image.mode == "RGB"
        for shape in scene.shapes:
            assert close(image.getpixel(shape.centre), COLOURS[shape.colour]), (scene.scene_id, shape)


def test_numbered_shapes_keep_their_colour_around_a_legible_number():
    for seed in SEEDS:
        scene = make_scene("arithmetic", seed)
        image = render(scene)
        for shape in scene.shapes:
            left, top, right, bottom = shape.bbox
            side = right - left
            # Inside the shape but clear of the number: near the top of a circle or square, mid-height
            # of a triangle (its number sits at two thirds of the height).
            probe = ((left + right) // 2, top + round(side * (0.4 if shape.kind == "triangle" else 0.15)))
            assert close(image.getpixel(probe), COLOURS[shape.colour]), (scene.scene_id, shape)
            # The number is there: a good share of the number's box is ink, not fill.
            number_row = top + round(side * (2 / 3 if shape.kind == "triangle" else 0.5))
            row = [image.getpixel((x, number_row)) for x in range(left + side // 4, right - side // 4)]
            assert any(not close(p, COLOURS[shape.colour], 60) for p in row), (scene.scene_id, shape)


def test_rendered_bar_heights_are_proportional_to_values():
    for seed in SEEDS:
        scene = make_scene("bar_chart", seed)
        chart = scene.chart
        image = render(scene)
        left, top, right, bottom = chart.plot_bbox
        per_value = (bottom - top) / chart.y_max
        for bar in chart.bars:
            column = (bar.bbox[0] + bar.bbox[2]) // 2
            filled = sum(close(image.getpixel((column, y)), COLOURS[bar.colour]) for y in range(scene.height))
            assert abs(filled - bar.value * per_value) <= 1.0, (scene.scene_id, bar)


def test_png_decodes_to_the_rendered_image():
    scene = make_scene("bar_chart", 3)
    decoded = Image.open(BytesIO(render_png(scene)))
    assert decoded.format == "PNG" and decoded.size == (224, 224)
    assert decoded.convert("RGB").tobytes() == render(scene).tobytes()
