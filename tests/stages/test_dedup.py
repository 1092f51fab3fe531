"""dedup: the index is exact, linking is bounded, crops are found, candidates are confirmed, and real
image copies find their original while different scenes stay apart."""

import hashlib
import importlib
import io

import imagehash
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image, ImageDraw

from pipelines.stage import StageContext, account
from pipelines.stages.dedup import (CropHashes, colour_distance, confirmation, dedup, exact_groups, index_entries,
                                    lake_canonicals, link, near_pairs, nearest_view, parse_crops, parse_hashes,
                                    phash_256_distance, plan_chunks)
from pipelines.stages.ingest import describe
from schemas.assets import PHASH_CROP_LEVELS


dedup_module = importlib.import_module("pipelines.stages.dedup")  # the package's `dedup` is the stage
from pipelines import hamming_index  # noqa: E402


@pytest.fixture
def ctx(tmp_path):
    return StageContext(run_id="r", stage="dedup", stage_version=1, config_hash="c", root=tmp_path)


# ----------------------------------------------------------------------------- hashes and the index


def brute_force_pairs(hashes: np.ndarray, max_distance: int):
    """The definition near_pairs must meet: every pair i < j within max_distance, by (i, j)."""
    distance = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    i, j = np.nonzero(np.triu(distance <= max_distance, k=1))
    return i, j, distance[i, j]


def flip_bits(rng, value: np.uint64, n_bits: int) -> np.uint64:
    mask = sum(1 << int(b) for b in rng.choice(64, n_bits, replace=False))
    return value ^ np.uint64(mask)


def random_with_planted(n: int, seed: int = 0) -> np.ndarray:
    """n random hashes, then copies of some of them at every distance 0..6 (10 per distance)."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    planted = [flip_bits(rng, hashes[s], d) for d in range(7) for s in rng.choice(n, 10, replace=False)]
    return np.concatenate([hashes, np.array(planted, np.uint64)])


def assert_same_pairs(got, expected):
    assert len(got[0]) == len(expected[0])
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def test_parse_hashes_reads_imagehash_hex():
    hashes = ["0000000000000000", "ffffffffffffffff", "8f3a00000000c001", "8F3A00000000C001"]
    assert parse_hashes(hashes).tolist() == [0, 2**64 - 1, 0x8F3A00000000C001, 0x8F3A00000000C001]
    assert parse_hashes([]).dtype == np.uint64
    with pytest.raises(ValueError, match="not 16 hex digits"):
        parse_hashes(["abc"])


@pytest.mark.parametrize("max_distance", [0, 2, 4, 6])
def test_near_pairs_equals_brute_force(max_distance):
    hashes = random_with_planted(3000)
    expected = brute_force_pairs(hashes, max_distance)
    assert len(expected[0]) >= 10 * (max_distance + 1)  # the planted pairs within reach, at least
    assert_same_pairs(near_pairs(hashes, max_distance), expected)
    # The planner picks exact-match chunks at this size; force fewer, wider chunks so that probing
    # at radius 1 and 2 (what 1M hashes use) is checked against the same truth.
    for n_chunks in (3, 4):
        assert_same_pairs(near_pairs(hashes, max_distance, n_chunks=n_chunks), expected)


def test_near_pairs_slices_crowded_buckets_without_changing_the_answer(monkeypatch):
    # 2000 hashes that share their low 40 bits: every bucket of the low chunks holds all of them.
    rng = np.random.default_rng(1)
    hashes = (rng.integers(0, 2**24, 2000, dtype=np.uint64) << np.uint64(40)) | np.uint64(0xABCDEF1234)
    expected = brute_force_pairs(hashes, 4)
    monkeypatch.setattr(hamming_index, "CANDIDATES_PER_SLICE", 1000)
    assert_same_pairs(near_pairs(hashes, 4, n_chunks=3), expected)


def test_near_pairs_of_nothing_or_one_hash():
    for hashes in (np.zeros(0, np.uint64), np.ones(1, np.uint64)):
        assert [len(a) for a in near_pairs(hashes, 4)] == [0, 0, 0]


def test_plan_chunks_obeys_the_pigeonhole_bound():
    assert plan_chunks(1_000_000, 4) == ([22, 21, 21], 1)  # 3 chunks probed at radius 1
    for n in (10, 3000, 100_000, 1_000_000):
        for max_distance in range(0, 11):
            widths, radius = plan_chunks(n, max_distance)
            assert sum(widths) == 64 and max(widths) <= 22
            assert radius == max_distance // len(widths)
    with pytest.raises(ValueError, match="0..63"):
        plan_chunks(10, 64)


# ----------------------------------------------------------------------------- crop hashes and confirmation


def test_parse_crops_reads_lists_and_marks_rows_without_them():
    levels = len(PHASH_CROP_LEVELS)
    crops = parse_crops([["0000000000000001"] * levels, None, ["ffffffffffffffff"] * (levels - 1)])
    assert crops.present.tolist() == [True, False, False]  # None: an older row; another length: other levels
    assert crops.hashes[0].tolist() == [1] * levels and crops.hashes[1:].tolist() == [[0] * levels] * 2


def test_index_entries_list_every_phash_then_the_crops():
    crops = CropHashes(np.array([[10, 11, 12, 13, 14], [0] * 5, [20, 21, 22, 23, 24]], np.uint64),
                       np.array([True, False, True]))
    values, owner, level = index_entries(np.array([1, 2, 3], np.uint64), crops)
    assert values.tolist() == [1, 2, 3, 10, 11, 12, 13, 14, 20, 21, 22, 23, 24]
    assert owner.tolist() == [0, 1, 2] + [0] * 5 + [2] * 5
    assert level.tolist() == [0, 0, 0] + [1, 2, 3, 4, 5] * 2


def test_nearest_view_compares_each_phash_with_the_other_ones_crops():
    hashes = np.array([0, 0b111111, 0b1], np.uint64)  # row 1 is 6 bits from row 0; row 2 is 1 bit
    crops = CropHashes(np.array([[0b1111, 0b111111, 0b11, 0b11, 0b11], [0] * 5, [0b11, 0b111, 0, 0b1111, 0b1111]],
                                np.uint64), np.array([True, False, True]))
    assert nearest_view(hashes, crops, 1, 0) == (0, 0, 0.02)  # row 1 looks like row 0 cut by 2 %
    assert nearest_view(hashes, crops, 0, 1) == (0, 0, 0.02)  # either order
    assert nearest_view(hashes, crops, 0, 2) == (0, 2, 0.03)  # row 2 cut by 3 % is row 0
    assert nearest_view(hashes, crops._replace(hashes=crops.hashes | np.uint64(1)), 0, 2) == (1, None, None)  # ties: plain
    assert nearest_view(hashes, None, 1, 0) == (6, None, None)


def test_phash_256_distance_takes_the_closest_view():
    whole, crop = (1 << 256) - 1, 0
    assert phash_256_distance([whole, crop, whole], [crop]) == 0  # a's 1 % crop matches b whole
    assert phash_256_distance([crop], [whole, whole, crop]) == 0  # b's 2 % crop matches a whole
    assert phash_256_distance([whole, whole], [crop, whole]) == 0
    assert phash_256_distance([whole, crop], [whole ^ 0b111, crop]) == 3  # crop/crop is not a view: whole/whole


def test_colour_distance_is_l1_and_a_missing_signal_never_vetoes():
    assert colour_distance([0.5, 0, 0.1], [0, 0.5, 0.1]) == pytest.approx(1.0)
    phash_256 = {0: ["0" * 64], 1: ["f" * 64], 2: None, 3: ["0" * 64]}
    colour = {0: [0.3] + [0] * 11, 1: [0.3] + [0] * 11, 2: None, 3: [0] * 11 + [0.3]}
    confirmed = confirmation(phash_256.get, colour.get, max_256=28, max_colour=0.1)
    assert not confirmed(0, 1)  # same colours, 256 bits apart
    assert not confirmed(0, 3)  # same 256-bit hash, other colours (L1 0.6)
    assert confirmed(0, 2) and confirmed(2, 1)  # row 2 has no signal: only the pHash rule applies
    assert confirmed(0, 0)


def test_link_finds_a_copy_through_a_crop_hash_but_never_crop_to_crop():
    far = 0xFFFF_FFFF_0000_0000
    hashes = np.array([0, far, far ^ 0xFF], np.uint64)
    crops = CropHashes(np.array([[0, far ^ 0b1, 0, 0, 0],  # row 0 cut by 2 % is 1 bit from row 1
                                 [far ^ 0xF0F0] * 5,
                                 [far ^ 0xF0F0] * 5], np.uint64), np.ones(3, bool))  # rows 1 and 2: only crops meet
    canonical = link(hashes, np.arange(3), np.full(3, -1), 4, crops=crops)
    assert canonical.tolist() == [0, 0, 2]
    # Without crop hashes, nothing links; with a veto on (0, 1), nothing links either.
    assert link(hashes, np.arange(3), np.full(3, -1), 4).tolist() == [0, 1, 2]
    vetoed = link(hashes, np.arange(3), np.full(3, -1), 4, crops=crops, confirm=lambda k, c: {k, c} != {0, 1})
    assert vetoed.tolist() == [0, 1, 2]


def test_a_vetoed_canonical_leaves_the_next_nearest_one():
    hashes = np.array([0, 0b11, 0b1], np.uint64)  # row 2 is 1 bit from row 0 and from row 1
    canonical = link(hashes, np.arange(3), np.array([0, 1, -1]), 4, confirm=lambda k, c: c != 0)
    assert canonical.tolist() == [0, 1, 1]


# ----------------------------------------------------------------------------- linking


def test_exact_groups_point_at_the_first_copy():
    assert exact_groups(["a", "b", "a", "c", "b", "a"]).tolist() == [0, 1, 0, 3, 1, 0]


def test_lake_canonicals_follow_links_to_their_end():
    ids = ["A", "B", "C", "D", "E"]
    # B → A, C → B (a stale chain), D → missing asset, E → E (a cycle must not hang)
    assert lake_canonicals(ids, [None, "A", "B", "Z", "E"]).tolist() == [0, 0, 0, 3, 4]


def chain(start: int, steps: list[int]) -> np.ndarray:
    """Hashes that walk away from `start`, each step flipping that many fresh bits."""
    hashes, bit = [start], 0
    for n_bits in steps:
        hashes.append(hashes[-1] ^ sum(1 << (bit + b) for b in range(n_bits)))
        bit += n_bits
    return np.array(hashes, np.uint64)


def test_link_caps_chains_at_twice_the_threshold():
    # 0 → 1: 3 bits; → 2: 6 bits from 0; → 3: 9 bits from 0, 3 from its neighbour 2; → 4: 3 from 3.
    hashes = chain(0, [3, 3, 3, 3])
    canonical = link(hashes, np.arange(5), np.full(5, -1), max_distance=4)
    # 2 joins 0 through 1 (6 ≤ 2×4); 3 is 9 from 0, so it starts a group; 4 joins it.
    assert canonical.tolist() == [0, 0, 0, 3, 3]


def test_link_prefers_fixed_lake_rows_and_exact_bytes():
    hashes = np.array([0, 0b1, 0b111000, 0b111000], np.uint64)
    fixed = np.array([0, -1, -1, -1])  # row 0 is a lake asset
    same_bytes_as = np.array([0, 1, 2, 1])  # row 3 has row 1's bytes (a stale pHash, say)
    assert link(hashes, same_bytes_as, fixed, max_distance=4).tolist() == [0, 0, 0, 0]


def test_linking_keeps_no_two_assets_within_the_threshold():
    # Clusters of random walks: plenty of chains, overlaps and ties.
    rng = np.random.default_rng(2)
    hashes = []
    for _ in range(300):
        h = rng.integers(0, 2**64, dtype=np.uint64)
        for _ in range(int(rng.integers(1, 8))):
            hashes.append(h)
            h = flip_bits(rng, h, int(rng.integers(0, 5)))
    hashes = np.array(hashes, np.uint64)[rng.permutation(len(hashes))]
    n, r, n_lake = len(hashes), 4, 100
    fixed = np.where(np.arange(n) < n_lake, np.arange(n), -1)  # the first 100: lake assets, all canonical
    canonical = link(hashes, np.arange(n), fixed, max_distance=r)
    assert (canonical[:n_lake] == np.arange(n_lake)).all()
    kept = np.flatnonzero(canonical == np.arange(n))
    new_kept = kept[kept >= n_lake]
    assert (canonical[canonical] == canonical).all()  # every link ends at a canonical
    distance = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    near = distance[np.ix_(new_kept, kept)] <= r
    assert (near.sum(axis=1) == 1).all()  # each kept new asset is near only itself
    for k in np.flatnonzero(canonical != np.arange(n)):
        c = canonical[k]
        assert c < k and distance[k, c] <= 2 * r
        earlier_in_group = np.flatnonzero((canonical == c) & (np.arange(n) < k))
        assert distance[k, earlier_in_group].min() <= r


# ----------------------------------------------------------------------------- the stage, on real images


def scene(seed: int, size=(320, 240)) -> Image.Image:
    """A random scene: coloured background, 3–5 rectangles and ellipses, a label."""
    rng = np.random.default_rng(seed)
    width, height = size
    img = Image.new("RGB", size, tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 6))):
        w, h = int(rng.integers(width // 5, width // 2)), int(rng.integers(height // 5, height // 2))
        x = int(rng.integers(width // 10, width - width // 10 - w))  # shapes keep off the borders
        y = int(rng.integers(height // 10, height - height // 10 - h))
        shape = draw.rectangle if rng.random() < 0.5 else draw.ellipse
        shape((x, y, x + w, y + h), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw.text((int(rng.integers(10, width // 2)), int(rng.integers(10, height - 30))), f"scene {seed}", fill=(0, 0, 0))
    return img


def encode(img: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def resized(img):
    return img.resize((img.width * 4 // 5, img.height * 4 // 5), Image.LANCZOS)


def cropped(img, share):
    dx, dy = round(img.width * share), round(img.height * share)
    return img.crop((dx, dy, img.width - dx, img.height - dy))


def asset(data: bytes, ref: str, asset_id: str | None = None, **extra) -> dict:
    """An assets row as ingest writes it (its hashes and signature too); `asset_id` overrides the
    content-addressed id."""
    sha256 = hashlib.sha256(data).hexdigest()
    return {**describe(data, max_pixels=10**8), "asset_id": asset_id or "asset-" + sha256[:24], "kind": "image",
            "media_uri": f"media/{sha256}", "sha256": sha256, "source": "synthetic", "source_ref": ref, **extra}


def without_signature(row: dict) -> dict:
    """The row as written before ingest computed crop hashes, 256-bit hashes and colour: those are null."""
    return {**row, "phash_crops": None, "phash_256": None, "colour_histogram": None}


def closest_distance(a: dict, b: dict) -> int:
    """The distance the stage reports: least between either's phash and the other's phash or crop hashes."""
    def bits(x, y):
        return imagehash.hex_to_hash(x) - imagehash.hex_to_hash(y)
    return min([bits(a["phash"], b["phash"])] + [bits(a["phash"], h) for h in b["phash_crops"]]
               + [bits(b["phash"], h) for h in a["phash_crops"]])


def by_id(result) -> dict[str, dict]:
    return {row["asset_id"]: row for row in result.out.to_pylist()}


def reasons(result) -> dict[str, str]:
    return dict(zip(result.rejects["input_id"].to_pylist(), result.rejects["reason"].to_pylist()))


def test_copies_link_to_their_original_and_scenes_never_merge(ctx):
    rows, original_of = [], {}
    for seed in range(16):
        img = scene(seed)
        rows.append(asset(encode(img), f"scene-{seed}"))
        original_of[f"scene-{seed}"] = rows[-1]["asset_id"]
        copies = {"resized": encode(resized(img)), "jpeg": encode(img, "JPEG", quality=80),
                  "resized_jpeg": encode(resized(img), "JPEG", quality=80),
                  "crop2": encode(cropped(img, 0.02)), "crop3": encode(cropped(img, 0.03))}
        rows += [asset(data, f"scene-{seed}/{name}") for name, data in copies.items()]
    assets = ctx.rows("assets", rows)
    result = dedup(assets, ctx.empty("assets"), ctx, phash_max_distance=4)

    counts = account(dedup, assets, result)
    assert (counts.n_in, counts.n_out + counts.n_rejected) == (96, 96)
    out, why = by_id(result), reasons(result)
    assert [r["asset_id"] for r in result.out.to_pylist()] == [r["asset_id"] for r in rows]  # every row, in order
    scene_of = {r["asset_id"]: r["source_ref"].split("/")[0] for r in rows}
    for row in rows:
        got = out[row["asset_id"]]
        if "/" not in row["source_ref"]:  # an original: never linked, never rejected
            assert got["duplicate_of"] is None and row["asset_id"] not in why
        elif got["duplicate_of"] is not None:  # a copy, linked within its own scene (a kept copy counts)
            assert scene_of[got["duplicate_of"]] == scene_of[row["asset_id"]]
            assert why[row["asset_id"]] == "dedup.near_duplicate"
            assert got["duplicate_distance"] == closest_distance(row, out[got["duplicate_of"]]) <= 8
        else:
            assert row["asset_id"] not in why
    assert set(result.rejects["detail"].to_pylist()) >= {f"pHash distance 0 to {original_of['scene-0']}"}
    linked = {name: sum(out[r["asset_id"]]["duplicate_of"] == original_of[scene_of[r["asset_id"]]]
                        for r in rows if r["source_ref"].endswith(name))
              for name in ("/resized", "/jpeg", "/resized_jpeg", "/crop2", "/crop3")}
    # Resizing and JPEG move pHash by 0–4 bits. Crops move it more (here 1 of 16 crops of 2 % and 6 of
    # 16 of 3 % are more than 4 bits from their original), but lie near one of its crop hashes.
    assert linked["/resized"] == linked["/jpeg"] == linked["/resized_jpeg"] == linked["/crop2"] == linked["/crop3"] == 16
    assert any("cropped by" in detail for detail in result.rejects["detail"].to_pylist())


def test_exact_byte_copies_are_exact_duplicates_at_distance_0(ctx):
    data = encode(scene(1))
    # Two ids for the same bytes, as from a source whose ids are not content-addressed.
    rows = [asset(data, "a", asset_id="asset-first"), asset(encode(scene(2)), "b"),
            asset(data, "c", asset_id="asset-copy")]
    result = dedup(ctx.rows("assets", rows), ctx.empty("assets"), ctx)
    copy = by_id(result)["asset-copy"]
    assert (copy["duplicate_of"], copy["duplicate_distance"]) == ("asset-first", 0)
    assert result.rejects.select(["input_id", "reason", "detail"]).to_pylist() == [
        {"input_id": "asset-copy", "reason": "dedup.exact_duplicate", "detail": "same bytes as asset-first"}]


def test_lake_assets_win_and_their_links_are_followed(ctx):
    img_a, img_b = scene(3), scene(4)
    lake = ctx.rows("assets", [
        asset(encode(img_a), "old-a"),
        asset(encode(img_b), "old-b"),
        asset(encode(img_a, "JPEG", quality=80), "old-a-jpeg"),
    ])
    lake_ids = lake["asset_id"].to_pylist()
    lake = lake.set_column(lake.schema.get_field_index("duplicate_of"), "duplicate_of",
                           pa.array([None, None, lake_ids[0]]))
    new = ctx.rows("assets", [
        asset(encode(resized(img_a)), "new-a-resized"),  # near the old original and its old copy
        asset(encode(img_b, "JPEG", quality=80), "new-b-jpeg"),
        asset(encode(img_a), "old-a-again"),  # the same bytes, so the same asset id: not a copy of itself
        asset(encode(img_a, "JPEG", quality=80), "old-a-jpeg-again"),  # same asset as an old duplicate
    ])
    result = dedup(new, lake, ctx)
    out = [(r["duplicate_of"], r["duplicate_distance"] is not None) for r in result.out.to_pylist()]
    assert out == [(lake_ids[0], True), (lake_ids[1], True), (None, False), (lake_ids[0], True)]
    assert result.out.num_rows == 4  # lake rows are never re-emitted, so never re-linked
    assert reasons(result) == {new["asset_id"][0].as_py(): "dedup.near_duplicate", new["asset_id"][1].as_py():
                               "dedup.near_duplicate", new["asset_id"][3].as_py(): "dedup.near_duplicate"}
    assert account(dedup, new, result).n_out == 1


def test_new_assets_rank_in_input_order(ctx):
    img = scene(5)
    rows = [asset(encode(resized(img)), "first"), asset(encode(img), "second")]
    result = dedup(ctx.rows("assets", rows), ctx.empty("assets"), ctx)
    assert [r["duplicate_of"] for r in result.out.to_pylist()] == [None, rows[0]["asset_id"]]
    assert result.rejects["detail"].to_pylist()[0].startswith("pHash distance ")


def test_empty_input(ctx):
    lake = ctx.rows("assets", [asset(encode(scene(6)), "old")])
    for lake_assets in (ctx.empty("assets"), lake):
        result = dedup(ctx.empty("assets"), lake_assets, ctx)
        assert result.out.num_rows == result.rejects.num_rows == 0
        assert result.out.schema == ctx.empty("assets").schema


def test_threshold_0_links_identical_phash_only(ctx):
    img = scene(7)
    # The same pixels compressed differently (other bytes, the same pHash), and a 2 % crop (2 bits).
    # Without crop hashes (rows from before ingest made them) only the identical pHash links at 0.
    rows = [without_signature(asset(encode(img), "png")), without_signature(asset(encode(img, compress_level=1), "png-fast")),
            without_signature(asset(encode(cropped(img, 0.02)), "crop"))]
    assert rows[0]["sha256"] != rows[1]["sha256"] and rows[0]["phash"] == rows[1]["phash"] != rows[2]["phash"]
    assets = ctx.rows("assets", rows)
    result = dedup(assets, ctx.empty("assets"), ctx, phash_max_distance=0)
    assert [(r["duplicate_of"], r["duplicate_distance"]) for r in result.out.to_pylist()] == [
        (None, None), (rows[0]["asset_id"], 0), (None, None)]
    assert result.rejects["reason"].to_pylist() == ["dedup.near_duplicate"]
    at_4 = dedup(assets, ctx.empty("assets"), ctx, phash_max_distance=4)
    assert at_4.out["duplicate_distance"].to_pylist() == [None, 0, 2]
    # With them, the crop's pHash equals one of the original's crop hashes: it links even at 0.
    with_crops = dedup(ctx.rows("assets", [asset(encode(img), "png"), asset(encode(cropped(img, 0.02)), "crop")]),
                       ctx.empty("assets"), ctx, phash_max_distance=0)
    assert with_crops.out["duplicate_distance"].to_pylist() == [None, 0]
    assert with_crops.rejects["detail"].to_pylist() == [f"pHash distance 0 to {rows[0]['asset_id']} cropped by 1 % per border"]


def test_synthetic_world_copies_are_found_and_scenes_stay_apart(tmp_path):
    """The world's planted copies (JPEG re-encode, 80 % resize, 1 % crop) of 48 scenes go through the
    real ingest and dedup: every copy links to its own original, and no two scenes merge."""
    from pipelines.sources import source_items
    from pipelines.stages.ingest import ingest

    ingest_ctx = StageContext(run_id="r", stage="ingest", stage_version=1, config_hash="c", root=tmp_path)
    items = source_items({"synthetic": {"scenes": 48, "planted_duplicates": 1.0}})
    assets = ingest(items, ingest_ctx).out
    dedup_ctx = StageContext(run_id="r", stage="dedup", stage_version=1, config_hash="c", root=tmp_path)
    result = dedup(assets, assets.schema.empty_table(), dedup_ctx, phash_max_distance=4)
    rows = result.out.to_pylist()
    ref_of = {r["asset_id"]: r["source_ref"] for r in rows}
    copies = [r for r in rows if "#" in r["source_ref"]]
    assert len(copies) == 48 and {r["source_ref"].split("#")[1] for r in copies} == {"jpeg", "resized", "cropped"}
    for copy in copies:
        assert copy["duplicate_of"] is not None, f"{copy['source_ref']} was not linked"
        assert ref_of[copy["duplicate_of"]] == copy["source_ref"].split("#")[0], copy["source_ref"]
    originals = [r for r in rows if "#" not in r["source_ref"]]
    assert all(r["duplicate_of"] is None for r in originals), "two different scenes were merged"
    counts = account(dedup, assets, result)
    assert (counts.n_in, counts.n_out, counts.n_rejected) == (96, 48, 48)


def world_image(scene_id: str) -> Image.Image:
    from pipelines.world.render import render
    from pipelines.world.scenes import make_scene

    family, seed = scene_id.rsplit("-", 1)
    return render(make_scene(family, int(seed)))


def test_world_crops_of_2_and_3_percent_link_to_their_original_through_crop_hashes(ctx):
    from pipelines.world.scenes import FAMILIES

    scene_ids = [f"{family}-{seed:06d}" for seed in range(6) for family in FAMILIES]
    rows, original_of = [], {}
    for scene_id in scene_ids:
        img = world_image(scene_id)
        rows.append(asset(encode(img), scene_id))
        original_of[scene_id] = rows[-1]["asset_id"]
        rows += [asset(encode(cropped(img, share)), f"{scene_id}#crop{share:.0%}") for share in (0.02, 0.03)]
    result = dedup(ctx.rows("assets", rows), ctx.empty("assets"), ctx)
    out, details = by_id(result), dict(zip(result.rejects["input_id"].to_pylist(), result.rejects["detail"].to_pylist()))
    for row in rows:
        scene_id = row["source_ref"].split("#")[0]
        if "#" in row["source_ref"]:
            assert out[row["asset_id"]]["duplicate_of"] == original_of[scene_id], row["source_ref"]
        else:
            assert out[row["asset_id"]]["duplicate_of"] is None, row["source_ref"]
    # These crops are found although many lie beyond 4 bits of their original's own pHash.
    original = {r["source_ref"]: r for r in rows if "#" not in r["source_ref"]}
    beyond = [r for r in rows if "#" in r["source_ref"] and imagehash.hex_to_hash(r["phash"])
              - imagehash.hex_to_hash(original[r["source_ref"].split("#")[0]]["phash"]) > 4]
    assert len(beyond) >= 10
    for row in beyond:
        assert " cropped by " in details[row["asset_id"]] and details[row["asset_id"]].endswith(" % per border")


@pytest.mark.parametrize("pair", [("bar_chart-000015", "bar_chart-000171"),  # orange vs blue bars
                                  ("bar_chart-000087", "bar_chart-000210")])  # orange vs orange, other heights and labels
def test_colliding_charts_stay_apart_and_their_copies_still_link(ctx, pair):
    rows = [asset(encode(world_image(scene_id)), scene_id) for scene_id in pair]
    assert imagehash.hex_to_hash(rows[0]["phash"]) - imagehash.hex_to_hash(rows[1]["phash"]) <= 4  # candidates
    copies = [asset(encode(world_image(scene_id), "JPEG", quality=80), f"{scene_id}#jpeg") for scene_id in pair]
    result = dedup(ctx.rows("assets", rows + copies), ctx.empty("assets"), ctx)
    assert [r["duplicate_of"] for r in result.out.to_pylist()] == [None, None, rows[0]["asset_id"], rows[1]["asset_id"]]
    # The confirmation is what keeps them apart: without it they merge.
    unchecked = dedup(ctx.rows("assets", rows), ctx.empty("assets"), ctx, phash_256_max_distance=256,
                      colour_max_distance=2.0)
    assert unchecked.out["duplicate_of"].to_pylist() == [None, rows[0]["asset_id"]]


def test_the_two_checks_each_keep_one_collision_apart(ctx):
    orange_blue = [asset(encode(world_image(s)), s) for s in ("bar_chart-000015", "bar_chart-000171")]
    orange_orange = [asset(encode(world_image(s)), s) for s in ("bar_chart-000087", "bar_chart-000210")]
    assert colour_distance(*(r["colour_histogram"] for r in orange_blue)) > 0.1  # other colours
    assert colour_distance(*(r["colour_histogram"] for r in orange_orange)) < 0.1  # the same colours...
    fine = [[int(h, 16) for h in r["phash_256"]] for r in orange_orange]
    assert phash_256_distance(*fine) > 28  # ...but other bar heights and labels


def test_grey_images_dedup_and_their_colour_histogram_is_zero(ctx):
    grey = scene(8).convert("L")
    rows = [asset(encode(grey), "grey"), asset(encode(grey, "JPEG", quality=80), "grey-jpeg"),
            asset(encode(cropped(grey, 0.03)), "grey-crop"), asset(encode(scene(9).convert("L")), "other")]
    assert rows[0]["colour_histogram"] == [0.0] * 12
    result = dedup(ctx.rows("assets", rows), ctx.empty("assets"), ctx)
    assert result.out["duplicate_of"].to_pylist() == [None, rows[0]["asset_id"], rows[0]["asset_id"], None]


def test_lake_rows_without_the_signature_contribute_their_phash_only(ctx):
    img = world_image("counting-000003")
    small_crop, big = cropped(img, 0.03), img
    old = ctx.rows("assets", [without_signature(asset(encode(img), "old")),
                              without_signature(asset(encode(small_crop), "old-crop"))])
    old = old.set_column(old.schema.get_field_index("duplicate_of"), "duplicate_of", pa.array([None, None]))
    distance = imagehash.hex_to_hash(old["phash"][0].as_py()) - imagehash.hex_to_hash(old["phash"][1].as_py())
    assert distance > 4  # the old crop is beyond the plain rule, so the old rows are two canonicals
    new = ctx.rows("assets", [asset(encode(cropped(img, 0.03), "JPEG", quality=90), "new-crop"),
                              asset(encode(resized(big)), "new-resized")])
    result = dedup(new, old, ctx)
    old_ids = old["asset_id"].to_pylist()
    # The new crop's pHash would need the old original's crop hashes, which it lacks; it finds the old
    # crop by plain pHash instead. The new resized copy is near the old original by plain pHash.
    assert result.out["duplicate_of"].to_pylist() == [old_ids[1], old_ids[0]]
    # And a new original, which has crop hashes, is found by an old crop's plain pHash.
    again = dedup(ctx.rows("assets", [asset(encode(img, compress_level=1), "new-original")]),
                  old.slice(1), ctx)
    assert again.out["duplicate_of"].to_pylist() == [old_ids[1]]
    assert ", with this asset cropped by " in again.rejects["detail"].to_pylist()[0]


# ----------------------------------------------------------------------------- videos and their frames


def ingest_bytes(root, files: dict[str, bytes]) -> pa.Table:
    """Assets of `files` (name -> bytes), through the real ingest stage: videos come with 8 frames each."""
    from pipelines.stage import SOURCE_ITEMS
    from pipelines.stages.ingest import ingest

    rows = [{"source": "test", "source_ref": name, "path": None, "content": data, "scene": None, "fingerprint": name}
            for name, data in files.items()]
    ctx = StageContext(run_id="r", stage="ingest", stage_version=1, config_hash="c", root=root)
    result = ingest(pa.Table.from_pylist(rows, schema=SOURCE_ITEMS), ctx)
    assert result.rejects.num_rows == 0
    return result.out


@pytest.fixture(scope="module")
def clip_files():
    from pipelines.video import encode_clip
    from pipelines.world.clips import make_clip, render_clip, render_frames

    clip = make_clip("clip_objects", 5, size=96)
    still = encode_clip([Image.new("RGB", (96, 96), (30, 80, 220))] * 16, 8, gop=8)  # eight identical frames
    middle = render_frames(clip)[11]  # the frame the video's signature is taken from
    return {"clip.mp4": render_clip(clip), "clip-reencoded.mp4": render_clip(clip, crf=35), "still.mp4": still,
            "middle-frame.png": encode_png(middle), "other.mp4": render_clip(make_clip("clip_motion", 5, size=96))}


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_frames_are_never_compared_so_identical_frames_of_one_video_stay_unlinked(ctx, clip_files):
    assets = ingest_bytes(ctx.root, {k: clip_files[k] for k in ("still.mp4", "clip.mp4")})
    frames = [a for a in assets.to_pylist() if a["kind"] == "frame"]
    assert len(frames) == 16 and len({f["phash"] for f in frames if f["source_ref"] == "still.mp4"}) == 1
    result = dedup(assets, ctx.empty("assets"), ctx)
    counts = account(dedup, assets, result)
    assert (counts.n_in, counts.n_out, counts.n_rejected) == (2, 2, 0)  # two videos; frames are not items
    assert result.out["duplicate_of"].null_count == assets.num_rows
    assert result.out["asset_id"].to_pylist() == assets["asset_id"].to_pylist()


def test_a_reencoded_video_is_linked_to_its_original_and_its_frames_leave_with_it(ctx, clip_files):
    from pipelines.stage import kept_ids

    assets = ingest_bytes(ctx.root, {k: clip_files[k] for k in ("clip.mp4", "other.mp4", "clip-reencoded.mp4")})
    result = dedup(assets, ctx.empty("assets"), ctx)
    ids = {a["source_ref"]: a["asset_id"] for a in assets.to_pylist() if a["kind"] == "video"}
    assert result.rejects["subject_id"].to_pylist() == [ids["clip-reencoded.mp4"]]
    assert result.rejects["reason"].to_pylist() == ["dedup.near_duplicate"]
    linked = {a["asset_id"]: a["duplicate_of"] for a in result.out.to_pylist() if a["duplicate_of"]}
    assert linked == {ids["clip-reencoded.mp4"]: ids["clip.mp4"]}
    live = set(kept_ids(dedup, assets, result))
    assert {a["source_ref"] for a in assets.to_pylist() if a["asset_id"] in live} == {"clip.mp4", "other.mp4"}
    # Against the lake: the copy arriving in a later run finds the committed original.
    lake = assets.filter(pa.compute.not_equal(assets["source_ref"], "clip-reencoded.mp4"))
    copy = assets.filter(pa.compute.equal(assets["source_ref"], "clip-reencoded.mp4"))
    later = dedup(copy, lake, ctx)
    assert later.rejects["reason"].to_pylist() == ["dedup.near_duplicate"] and ids["clip.mp4"] in later.rejects["detail"][0].as_py()


def test_a_video_is_never_linked_to_an_image_of_the_frame_it_is_hashed_from(ctx, clip_files):
    assets = ingest_bytes(ctx.root, {k: clip_files[k] for k in ("clip.mp4", "middle-frame.png")})
    video, image = (next(a for a in assets.to_pylist() if a["kind"] == kind) for kind in ("video", "image"))
    assert (int(video["phash"], 16) ^ int(image["phash"], 16)).bit_count() <= 4  # they would be candidates
    result = dedup(assets, ctx.empty("assets"), ctx)
    assert result.rejects.num_rows == 0
