"""hf_dataset reads stored image bytes from save_to_disk folders and Parquet exports; ingest decodes them."""

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines.sources import source_items
from pipelines.sources.hf_dataset import hf_dataset_items
from pipelines.stage import StageContext, account
from pipelines.stages.ingest import ingest
from schemas.errors import RecipeError

SIZES = [(32, 24), (20, 40), (50, 50)]


def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in SIZES]


@pytest.fixture
def dataset() -> datasets.Dataset:
    return datasets.Dataset.from_dict({"image": images(), "label": [0, 1, 2]}).cast_column("image", datasets.Image())


@pytest.fixture
def ctx(tmp_path) -> StageContext:
    return StageContext(run_id="run-test", stage="ingest", stage_version=1, config_hash="test", root=tmp_path / "dataset")


def ingested_sizes(spec: dict, ctx: StageContext) -> dict[str, tuple[int, int]]:
    table = source_items(spec)
    result = ingest(table, ctx)
    assert account(ingest, table, result).n_rejected == 0
    return {row["source_ref"]: (row["width"], row["height"]) for row in result.out.to_pylist()}


def test_a_saved_dataset_yields_bytes_that_ingest_decodes(tmp_path, dataset, ctx):
    dataset.save_to_disk(str(tmp_path / "shapes"))
    items = hf_dataset_items(path=str(tmp_path / "shapes"))
    assert [i["source_ref"] for i in items] == ["shapes:train:0", "shapes:train:1", "shapes:train:2"]
    assert all(i["content"][:8] == b"\x89PNG\r\n\x1a\n" and i["path"] is None for i in items)  # stored, not re-encoded
    assert ingested_sizes({"hf_dataset": {"path": str(tmp_path / "shapes")}}, ctx) == {
        "shapes:train:0": (32, 24), "shapes:train:1": (20, 40), "shapes:train:2": (50, 50)}


def test_a_dataset_dict_yields_every_split_or_the_one_asked_for(tmp_path, dataset):
    datasets.DatasetDict({"train": dataset, "test": dataset.select([2])}).save_to_disk(str(tmp_path / "dd"))
    refs = [i["source_ref"] for i in hf_dataset_items(path=str(tmp_path / "dd"))]
    assert refs == ["dd:test:0", "dd:train:0", "dd:train:1", "dd:train:2"]
    assert [i["source_ref"] for i in hf_dataset_items(path=str(tmp_path / "dd"), split="test")] == ["dd:test:0"]
    with pytest.raises(RecipeError, match="has no split 'validation'; its splits are: test, train"):
        hf_dataset_items(path=str(tmp_path / "dd"), split="validation")


def test_a_parquet_export_yields_the_same_bytes(tmp_path, dataset, ctx):
    dataset.save_to_disk(str(tmp_path / "saved"))
    dataset.to_parquet(str(tmp_path / "shapes.parquet"))
    saved = hf_dataset_items(path=str(tmp_path / "saved"))
    exported = hf_dataset_items(path=str(tmp_path / "shapes.parquet"))
    assert [i["source_ref"] for i in exported] == ["shapes:train:0", "shapes:train:1", "shapes:train:2"]
    assert [i["content"] for i in exported] == [i["content"] for i in saved]
    assert [i["fingerprint"] for i in exported] == [i["fingerprint"] for i in saved]
    assert ingested_sizes({"hf_dataset": {"path": str(tmp_path / "shapes.parquet")}}, ctx)["shapes:train:1"] == (20, 40)


def test_a_hub_layout_folder_takes_splits_from_file_names(tmp_path, dataset):
    data = tmp_path / "hub" / "data"
    data.mkdir(parents=True)
    dataset.select([0, 1]).to_parquet(str(data / "train-00000-of-00002.parquet"))
    dataset.select([2]).to_parquet(str(data / "train-00001-of-00002.parquet"))
    dataset.select([0]).to_parquet(str(data / "test-00000-of-00001.parquet"))
    refs = [i["source_ref"] for i in hf_dataset_items(path=str(tmp_path / "hub"))]
    assert refs == ["hub:test:0", "hub:train:0", "hub:train:1", "hub:train:2"]


def test_images_stored_by_path_are_read_from_that_path(tmp_path, ctx):
    # save_to_disk embeds the bytes; a Parquet file can still hold {bytes: null, path}: relative to its folder.
    for n, image in enumerate(images()):
        image.save(tmp_path / f"{n}.png")
    cells = [{"bytes": None, "path": "0.png"}, {"bytes": None, "path": str(tmp_path / "1.png")}, {"bytes": None, "path": "2.png"}]
    pq.write_table(pa.table({"image": pa.array(cells, pa.struct([("bytes", pa.binary()), ("path", pa.string())]))}),
                   tmp_path / "refs.parquet")
    items = hf_dataset_items(path=str(tmp_path / "refs.parquet"))
    assert [i["path"] for i in items] == [str(tmp_path / f"{n}.png") for n in range(3)]
    assert all(i["content"] is None for i in items)
    assert ingested_sizes({"hf_dataset": {"path": str(tmp_path / "refs.parquet")}}, ctx)["refs:train:2"] == (50, 50)


def test_a_missing_image_column_error_lists_the_columns(tmp_path, dataset):
    dataset.rename_column("image", "picture").save_to_disk(str(tmp_path / "renamed"))
    with pytest.raises(RecipeError, match=r"has no column 'image'; its columns are: picture, label\. Set `image_column`"):
        hf_dataset_items(path=str(tmp_path / "renamed"))
    assert len(hf_dataset_items(path=str(tmp_path / "renamed"), image_column="picture")) == 3
    pq.write_table(pa.table({"label": [1, 2]}), tmp_path / "labels.parquet")
    with pytest.raises(RecipeError, match="has no column 'image'; its columns are: label"):
        hf_dataset_items(path=str(tmp_path / "labels.parquet"))
    with pytest.raises(RecipeError, match="column 'label' is int64, not images"):
        hf_dataset_items(path=str(tmp_path / "labels.parquet"), image_column="label")


def test_a_path_that_is_no_dataset_is_an_error(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        hf_dataset_items(path=str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecipeError, match="neither a dataset saved with save_to_disk .* nor a Parquet file or folder"):
        hf_dataset_items(path=str(tmp_path / "empty"))


def test_refs_two_sources_share_are_prefixed_with_the_source_name(tmp_path, dataset):
    dataset.save_to_disk(str(tmp_path / "pics"))
    (tmp_path / "folder").mkdir()
    images()[0].save(tmp_path / "folder" / "pics:train:0", "PNG")  # a file named like a dataset ref
    images()[1].save(tmp_path / "folder" / "other.png")
    table = source_items({"hf_dataset": {"path": str(tmp_path / "pics")}, "image_folder": {"path": str(tmp_path / "folder")}})
    assert table["source_ref"].to_pylist() == [
        "hf_dataset:pics:train:0", "pics:train:1", "pics:train:2", "other.png", "image_folder:pics:train:0"]
    assert table["source"].to_pylist() == ["hf_dataset"] * 3 + ["image_folder"] * 2
