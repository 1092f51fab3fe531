"""ingest: every file becomes an asset or a reject with an exact reason; bytes land once in the media store."""

import io
from pathlib import Path

import imagehash
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from pipelines.sources import source_items
from pipelines.stage import SOURCE_ITEMS, StageContext, account
from pipelines.stages.ingest import ingest
from stores.media import MediaStore, open_image
from tests.media_files import encode, grey_premultiplied_alpha_tiff, photo, png_header_only, rotated_jpeg


@pytest.fixture
def ctx(tmp_path) -> StageContext:
    return StageContext(run_id="run-test", stage="ingest", stage_version=1, config_hash="test", root=tmp_path / "dataset")


def items(entries: dict[str, bytes | Path], *, source: str = "test") -> pa.Table:
    rows = [{"source": source, "source_ref": ref, "path": str(v) if isinstance(v, Path) else None,
             "content": None if isinstance(v, Path) else v, "scene": None, "fingerprint": ref} for ref, v in entries.items()]
    return pa.Table.from_pylist(rows, schema=SOURCE_ITEMS)


def reasons(result) -> dict[str, str]:
    return dict(zip(result.rejects["subject_id"].to_pylist(), result.rejects["reason"].to_pylist()))


def details(result) -> dict[str, str]:
    return dict(zip(result.rejects["subject_id"].to_pylist(), result.rejects["detail"].to_pylist()))


def test_every_bad_file_is_rejected_with_its_reason_and_the_rest_are_ingested(tmp_path, ctx):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    png, jpeg = encode(photo(300, 200), "PNG"), encode(photo(300, 200, seed=1), "JPEG", quality=90)
    files = {
        "good.png": png,
        "sub/good.jpg": jpeg,
        "rotated.jpg": rotated_jpeg(),
        "empty.png": b"",
        "cut.png": png[: len(png) // 2],
        "cut.jpg": jpeg[: len(jpeg) // 2],
        "notes.txt": b"not an image, just some words\n",
        "huge.png": png_header_only(20_000, 20_000),
        "big.png": png_header_only(8_000, 6_000),
        "premultiplied.tiff": grey_premultiplied_alpha_tiff(),
        "z-copy-of-good.png": png,
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    table = source_items({"image_folder": {"path": str(folder)}})

    result = ingest(table, ctx)

    assert reasons(result) == {
        "big.png": "ingest.too_many_pixels",
        "z-copy-of-good.png": "ingest.duplicate_bytes",
        "cut.jpg": "ingest.truncated",
        "cut.png": "ingest.truncated",
        "empty.png": "ingest.empty_file",
        "huge.png": "ingest.too_many_pixels",
        "notes.txt": "ingest.not_an_image",
        "premultiplied.tiff": "ingest.unreadable_mode",
    }
    assert sorted(result.out["source_ref"].to_pylist()) == ["good.png", "rotated.jpg", "sub/good.jpg"]
    counts = account(ingest, table, result)
    assert (counts.n_in, counts.n_out, counts.n_rejected) == (11, 3, 8)
    assert counts.by_reason["ingest.truncated"] == counts.by_reason["ingest.too_many_pixels"] == 2
    assert set(result.rejects["raw"].to_pylist()) == {str(folder.resolve() / name) for name in reasons(result)}


def test_details_say_what_was_wrong(tmp_path, ctx):
    png = encode(photo(300, 200), "PNG")
    result = ingest(items({"empty": b"", "big": png_header_only(8_000, 6_000), "cut": png[:1000],
                           "text": b"hello, world", "original": png, "repeat": png}), ctx)
    detail = details(result)
    assert detail["empty"] == "0 bytes"
    assert detail["big"] == "8000x6000 = 48,000,000 pixels > max_pixels 40,000,000"
    assert detail["cut"].startswith("PNG 300x200 truncated or corrupt: decoding failed in a 1,000-byte file: ")
    assert detail["text"] == "no image decoder recognises it (12 bytes, starting b'hello, world')"
    asset_id = result.out["asset_id"][0].as_py()
    assert detail["repeat"] == f"same bytes as 'original' (asset {asset_id})"


def test_pixel_cap_is_checked_from_the_header_before_decoding(ctx):
    # The crafted file holds 64 bytes of pixels: decoding it would fail as truncated, not as too big.
    big = items({"big": png_header_only(8_000, 6_000)})
    assert reasons(ingest(big, ctx)) == {"big": "ingest.too_many_pixels"}
    assert reasons(ingest(big, ctx, max_pixels=50_000_000)) == {"big": "ingest.truncated"}
    small = items({"small": encode(photo(100, 100), "PNG")})
    result = ingest(small, ctx, max_pixels=9_999)
    assert details(result) == {"small": "100x100 = 10,000 pixels > max_pixels 9,999"}


def test_pillow_decompression_bomb_guard_becomes_a_reject_and_stays_as_it_was(ctx):
    limit = Image.MAX_IMAGE_PIXELS
    result = ingest(items({"huge": png_header_only(20_000, 20_000)}), ctx, max_pixels=10**12)
    assert reasons(result) == {"huge": "ingest.too_many_pixels"}
    assert details(result)["huge"].startswith("400,000,000 pixels: refused by Pillow's decompression-bomb guard")
    assert Image.MAX_IMAGE_PIXELS == limit


def test_unreadable_mode_is_a_real_file_that_decodes_but_cannot_become_rgb(ctx):
    data = grey_premultiplied_alpha_tiff()
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # decodes fine...
        assert image.mode == "La"
        with pytest.raises(ValueError):
            image.convert("RGB")  # ...but has no way to RGB
    result = ingest(items({"la.tiff": data}), ctx)
    assert reasons(result) == {"la.tiff": "ingest.unreadable_mode"}
    assert details(result)["la.tiff"].startswith("TIFF decodes to mode 'La', which cannot become RGB: ")


def test_a_file_that_cannot_be_read_is_rejected_and_the_run_goes_on(tmp_path, ctx):
    good = tmp_path / "good.png"
    good.write_bytes(encode(photo(), "PNG"))
    result = ingest(items({"gone.png": tmp_path / "gone.png", "a-folder": tmp_path, "good.png": good}), ctx)
    assert reasons(result) == {"gone.png": "ingest.unreadable_file", "a-folder": "ingest.unreadable_file"}
    assert details(result)["gone.png"] == f"cannot read {tmp_path / 'gone.png'}: No such file or directory"
    assert result.out["source_ref"].to_pylist() == ["good.png"]


def test_exif_rotated_jpeg_comes_out_upright(ctx):
    data = rotated_jpeg(width=40, height=20)
    with Image.open(io.BytesIO(data)) as stored:
        assert stored.size == (40, 20)
    result = ingest(items({"rotated.jpg": data}), ctx)
    row = result.out.to_pylist()[0]
    assert (row["width"], row["height"]) == (20, 40)
    upright = open_image(ctx.media_path(row["media_uri"]))
    assert upright.size == (20, 40)
    assert row["phash"] == str(imagehash.phash(upright))


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("JPEG", ".jpg"), ("WEBP", ".webp"), ("GIF", ".gif"),
                                         ("BMP", ".bmp"), ("TIFF", ".tiff")])
def test_each_format_is_stored_with_its_suffix_and_hashed_like_open_image(ctx, fmt, suffix):
    data = encode(photo(64, 48), fmt)
    row = ingest(items({f"x{suffix}": data}), ctx).out.to_pylist()[0]
    assert row["format"] == fmt and row["media_uri"].endswith(suffix)
    image = open_image(io.BytesIO(data))
    assert row["phash"] == str(imagehash.phash(image)) and len(row["phash"]) == 16
    assert row["dhash"] == str(imagehash.dhash(image)) and len(row["dhash"]) == 16
    assert (row["width"], row["height"]) == (64, 48)


def test_same_bytes_give_the_same_asset_and_media_file_which_holds_the_source_bytes(tmp_path, ctx):
    data = encode(photo(), "PNG")
    (tmp_path / "a.png").write_bytes(data)
    first = ingest(items({"a.png": tmp_path / "a.png"}), ctx).out.to_pylist()[0]
    media = ctx.media_path(first["media_uri"])
    written = media.stat().st_mtime_ns, media.stat().st_ino
    again = ingest(items({"as-bytes": data}, source="other"), ctx).out.to_pylist()[0]
    assert again["asset_id"] == first["asset_id"] == "asset-" + first["sha256"][:24]
    assert again["media_uri"] == first["media_uri"] == f"media/{first['sha256'][:2]}/{first['sha256']}.png"
    assert (media.stat().st_mtime_ns, media.stat().st_ino) == written  # not rewritten
    assert media.read_bytes() == data
    assert [p.name for p in media.parent.iterdir()] == [media.name]  # no temporary files left


def test_rows_carry_source_scene_and_lineage_and_progress_counts_every_item(ctx):
    table = pa.Table.from_pylist([
        {"source": "synthetic", "source_ref": "scene-1", "path": None, "content": encode(photo(), "PNG"),
         "scene": '{"objects": []}', "fingerprint": "f1"},
        {"source": "synthetic", "source_ref": "scene-2", "path": None, "content": b"", "scene": None, "fingerprint": "f2"},
    ], schema=SOURCE_ITEMS)
    done = []
    ctx.progress = done.append
    result = ingest(table, ctx)
    row = result.out.to_pylist()[0]
    assert (row["source"], row["source_ref"], row["scene"], row["kind"]) == ("synthetic", "scene-1", '{"objects": []}', "image")
    assert (row["run_id"], row["stage"], row["stage_version"]) == ("run-test", "ingest", 1)
    assert row["duplicate_of"] is None and row["parent_asset_id"] is None
    assert result.rejects["raw"].to_pylist() == ["scene-2"]
    assert done == [1, 1]


def test_media_store_put_is_content_addressed_and_idempotent(tmp_path):
    store = MediaStore(tmp_path)
    uri, sha = store.put(b"some bytes", ".bin")
    assert uri == f"media/{sha[:2]}/{sha}.bin" and store.path(uri) == tmp_path / uri
    assert store.put(b"some bytes", ".bin") == (uri, sha)
    assert store.path(uri).read_bytes() == b"some bytes"


# ----------------------------------------------------------------------------- the near-duplicate signature


def shapes(width: int, height: int, seed: int = 0) -> Image.Image:
    """Soft coloured ellipses on a coloured ground: structure at every scale, like a photo's."""
    from PIL import ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (width, height), tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        rx, ry = int(rng.integers(width // 12, width // 4)), int(rng.integers(height // 12, height // 4))
        draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return img.filter(ImageFilter.GaussianBlur(max(1, width // 200)))


def crop(img: Image.Image, share: float) -> Image.Image:
    dx, dy = round(img.width * share), round(img.height * share)
    return img.crop((dx, dy, img.width - dx, img.height - dy))


def bits_apart(a: str, b: str) -> int:
    return imagehash.hex_to_hash(a) - imagehash.hex_to_hash(b)


def test_rows_carry_the_signature_in_its_documented_shape(ctx):
    from schemas.assets import COLOUR_HUE_BINS, PHASH_CROP_LEVELS

    row = ingest(items({"a.png": encode(shapes(300, 200), "PNG")}), ctx).out.to_pylist()[0]
    assert [len(h) for h in row["phash_crops"]] == [16] * len(PHASH_CROP_LEVELS)
    assert [len(h) for h in row["phash_256"]] == [64] * (1 + len(PHASH_CROP_LEVELS))  # whole image, then crops
    assert len(row["colour_histogram"]) == COLOUR_HUE_BINS and 0 < sum(row["colour_histogram"]) <= 1
    assert row["phash"] == str(imagehash.phash(Image.open(io.BytesIO(encode(shapes(300, 200), "PNG")))))


@pytest.mark.parametrize("size", [(300, 200), (1600, 1000)])  # used as it is; reduced 7x before cropping
@pytest.mark.parametrize("share", [0.01, 0.02, 0.03, 0.05])
def test_a_cropped_copys_phash_matches_the_originals_crop_hash_at_its_level(ctx, size, share):
    from schemas.assets import PHASH_CROP_LEVELS

    img = shapes(*size, seed=3)
    original, copy = (ingest(items({"x": encode(i, "PNG")}), ctx).out.to_pylist()[0] for i in (img, crop(img, share)))
    at_level = bits_apart(copy["phash"], original["phash_crops"][PHASH_CROP_LEVELS.index(share)])
    assert at_level <= 2 and at_level <= bits_apart(copy["phash"], original["phash"])


def test_colour_histogram_puts_chroma_on_hue_and_grey_on_nothing():
    from pipelines.stages.ingest import colour_histogram

    def solid(colour):
        return colour_histogram(Image.new("RGB", (40, 30), colour))

    assert solid((255, 0, 0)) == [1.0] + [0.0] * 11  # full chroma, red bin
    assert solid((255, 128, 0))[1] == pytest.approx(1.0, abs=0.01)  # orange: 30°
    assert solid((0, 0, 255))[8] == 1.0  # blue: 240°
    assert solid((255, 64, 0))[:2] == pytest.approx([0.5, 0.5], abs=0.01)  # 15°: between red and orange
    assert solid((128, 0, 0)) == pytest.approx([0.502] + [0.0] * 11, abs=0.001)  # darker: less chroma
    assert solid((90, 90, 90)) == [0.0] * 12 and solid((0, 0, 0)) == [0.0] * 12
    half = Image.new("RGB", (40, 30), (255, 255, 255))
    half.paste((0, 0, 255), (0, 0, 20, 30))
    assert colour_histogram(half)[8] == pytest.approx(0.5, abs=0.01)  # half the pixels


def test_the_64_bit_dct_hash_is_imagehash_phash_bit_for_bit():
    from pipelines.stages.ingest import dct_hashes

    for seed in range(5):
        gray = shapes(97, 61, seed=seed).convert("L")
        phash, phash_256 = dct_hashes(gray.resize((32, 32), Image.LANCZOS))
        assert phash == str(imagehash.phash(gray))
        assert phash_256 == str(imagehash.phash(gray.resize((32, 32), Image.LANCZOS), hash_size=16, highfreq_factor=2))
