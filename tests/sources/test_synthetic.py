"""The synthetic source: rows for ingest, planted near-duplicates, disjoint splits."""

from collections import Counter
from io import BytesIO

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from pipelines.sources.synthetic import split_seed, synthetic_items
from pipelines.stage import SOURCE_ITEMS
from pipelines.world.scenes import scene_from_json
from schemas.errors import RecipeError


def decode(content: bytes) -> Image.Image:
    return Image.open(BytesIO(content))


def test_rows_fit_the_source_items_schema_and_cover_families_round_robin():
    rows = synthetic_items(scenes=10)
    table = pa.Table.from_pylist(rows, schema=SOURCE_ITEMS)
    assert table.num_rows == 10
    assert [r["source_ref"] for r in rows[:5]] == [
        "counting-000000", "relations-000000", "arithmetic-000000", "bar_chart-000000", "counting-000001"]
    assert all(r["source"] == "synthetic" and r["path"] is None for r in rows)
    for row in rows:
        assert decode(row["content"]).format == "PNG"
        assert scene_from_json(row["scene"]).scene_id == row["source_ref"]


def test_planted_copies_share_the_scene_of_their_original():
    rows = synthetic_items(scenes=20, planted_duplicates=0.3)
    assert len(rows) == 20 + 6
    refs = [r["source_ref"] for r in rows]
    assert len(set(refs)) == len(refs)
    originals = {r["source_ref"]: r for r in rows if "#" not in r["source_ref"]}
    copies = [r for r in rows if "#" in r["source_ref"]]
    assert Counter(r["source_ref"].split("#")[1] for r in copies) == {"jpeg": 2, "resized": 2, "cropped": 2}
    for copy in copies:
        original = originals[copy["source_ref"].split("#")[0]]
        assert copy["scene"] == original["scene"]
        assert copy["content"] != original["content"] and copy["fingerprint"] != original["fingerprint"]


def test_copies_are_near_copies_of_the_original_pixels():
    rows = synthetic_items(scenes=8, planted_duplicates=0.375)
    originals = {r["source_ref"]: decode(r["content"]).convert("RGB") for r in rows if "#" not in r["source_ref"]}
    for row in (r for r in rows if "#" in r["source_ref"]):
        ref, kind = row["source_ref"].split("#")
        original, copy = originals[ref], decode(row["content"]).convert("RGB")
        if kind == "jpeg":
            assert decode(row["content"]).format == "JPEG" and copy.size == (224, 224)
        elif kind == "resized":
            assert copy.size == (179, 179)
        else:
            assert copy.size == (224 - 2 * 2, 224 - 2 * 2)  # 1 % of 224 rounds to 2 px per border
            original = original.crop((2, 2, 222, 222))
        restored = copy.resize(original.size, Image.BILINEAR)
        difference = np.abs(np.asarray(restored, dtype=int) - np.asarray(original, dtype=int)).mean()
        assert difference < 12, (row["source_ref"], difference)  # same picture, not a different scene


def test_same_parameters_give_identical_rows():
    first = synthetic_items(scenes=12, seed=3, planted_duplicates=0.5)
    second = synthetic_items(scenes=12, seed=3, planted_duplicates=0.5)
    assert first == second
    assert [r["fingerprint"] for r in first] == [r["fingerprint"] for r in second]
    assert len({r["fingerprint"] for r in first}) == len(first)


def test_train_split_uses_seeds_disjoint_from_the_default_split():
    assert split_seed("default") == 0 and split_seed("train") == 1_000_000
    default = {r["source_ref"] for r in synthetic_items(scenes=40)}
    train = synthetic_items(scenes=40, split="train")
    assert not default & {r["source_ref"] for r in train}
    assert scene_from_json(train[0]["scene"]).seed == 1_000_000


def test_family_subset_and_size():
    rows = synthetic_items(families=["bar_chart"], scenes=3, size=160)
    assert [r["source_ref"] for r in rows] == ["bar_chart-000000-160px", "bar_chart-000001-160px",
                                               "bar_chart-000002-160px"]
    assert decode(rows[0]["content"]).size == (160, 160)


def test_bad_parameters_are_reported_together():
    with pytest.raises(RecipeError) as error:
        synthetic_items(families=["countng"], scenes=-1, planted_duplicates=1.5, split="tran")
    message = str(error.value)
    assert "4 problems" in message and "Did you mean 'counting'?" in message and "Did you mean 'train'?" in message
    with pytest.raises(RecipeError):
        split_seed("test")


def test_clip_families_yield_mp4_clips_with_their_graph_over_time_mixed_with_images():
    from pipelines.video import container_format
    from pipelines.world.clips import clip_from_json

    rows = synthetic_items(families=["counting", "clip_motion"], scenes=4, size=96)
    assert [r["source_ref"] for r in rows] == ["counting-000000-96px", "clip_motion-000000-96px", "counting-000001-96px",
                                               "clip_motion-000001-96px"]
    for row in rows[1::2]:
        assert container_format(row["content"]) == "MP4"
        clip = clip_from_json(row["scene"])
        assert clip.clip_id == row["source_ref"] and len(clip.keyframes) > 1
    assert all(decode(r["content"]).format == "PNG" for r in rows[0::2])
    assert synthetic_items(families=["clip_motion"], scenes=1, size=96)[0]["content"] == rows[1]["content"]  # deterministic


def test_a_planted_clip_copy_is_the_same_clip_reencoded():
    rows = synthetic_items(families=["clip_counter"], scenes=4, size=96, planted_duplicates=0.5)
    copies = [r for r in rows if "#" in r["source_ref"]]
    assert len(copies) == 2 and all(r["source_ref"].endswith("#reencoded") for r in copies)
    originals = {r["source_ref"]: r for r in rows}
    for copy in copies:
        original = originals[copy["source_ref"].split("#")[0]]
        assert copy["scene"] == original["scene"] and copy["content"] != original["content"]
        assert copy["fingerprint"] != original["fingerprint"]


def test_the_defaults_yield_no_clips():
    rows = synthetic_items(scenes=8)
    assert all(decode(r["content"]).format == "PNG" and '"keyframes"' not in r["scene"] for r in rows)
    with pytest.raises(RecipeError, match="clip_objects, clip_motion, clip_counter"):
        synthetic_items(families=["clips"], scenes=1)
