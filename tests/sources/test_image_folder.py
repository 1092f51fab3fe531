"""image_folder lists every regular file, sorted, hidden ones skipped; source_items checks recipes against signatures."""

import os

import pytest

from pipelines.sources import SOURCES, source_items
from pipelines.sources.image_folder import image_folder_items
from pipelines.stage import SOURCE_ITEMS
from schemas.errors import RecipeError


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "photos"
    for name in ["b.jpg", "a.png", "notes.txt", "sub/c.png", "sub/deeper/d.webp", ".hidden.png", "sub/.DS_Store",
                 ".cache/e.png", "sub/.thumbs/f.png"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(name.encode())
    return root


def test_walks_subfolders_skips_hidden_and_sorts(folder):
    items = image_folder_items(path=str(folder))
    assert [i["source_ref"] for i in items] == ["a.png", "b.jpg", "notes.txt", "sub/c.png", "sub/deeper/d.webp"]
    assert all(i["path"] == str(folder.resolve() / i["source_ref"]) and i["content"] is None for i in items)
    assert {i["source"] for i in items} == {"image_folder"}


def test_not_recursive_lists_only_the_top_folder(folder):
    assert [i["source_ref"] for i in image_folder_items(path=str(folder), recursive=False)] == ["a.png", "b.jpg", "notes.txt"]


def test_fingerprint_is_path_size_and_mtime_and_changes_with_the_file(folder):
    (first,) = [i for i in image_folder_items(path=str(folder)) if i["source_ref"] == "a.png"]
    stat = (folder / "a.png").stat()
    assert first["fingerprint"] == f"a.png:{stat.st_size}:{stat.st_mtime_ns}"
    os.utime(folder / "a.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    (again,) = [i for i in image_folder_items(path=str(folder)) if i["source_ref"] == "a.png"]
    assert again["fingerprint"] != first["fingerprint"]


def test_a_missing_folder_is_an_error_naming_the_path(tmp_path):
    with pytest.raises(RecipeError, match=r"path '.*nowhere' does not exist"):
        image_folder_items(path=str(tmp_path / "nowhere"))
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(RecipeError, match=r"file\.png' is a file, not a folder"):
        image_folder_items(path=str(tmp_path / "file.png"))


def test_source_items_returns_one_table_of_the_source_items_schema(folder):
    table = source_items({"image_folder": {"path": str(folder)}})
    assert table.schema == SOURCE_ITEMS
    assert table["source_ref"].to_pylist()[:2] == ["a.png", "b.jpg"]


def test_unknown_source_error_lists_the_sources():
    with pytest.raises(RecipeError) as error:
        source_items({"image_folders": {"path": "x"}})
    message = str(error.value)
    assert "unknown source 'image_folders'; sources are: hf_dataset, image_folder, synthetic" in message
    assert "Did you mean 'image_folder'?" in message
    assert sorted(SOURCES) == ["hf_dataset", "image_folder", "synthetic"]


def test_parameter_errors_are_gathered_and_list_the_valid_parameters(folder):
    with pytest.raises(RecipeError) as error:
        source_items({"image_folder": {"pth": str(folder)}, "hf_dataset": {"path": "x", "column": "img"}})
    assert error.value.problems == [
        "source 'image_folder' has no parameter 'pth'; its parameters are: path, recursive. Did you mean 'path'?",
        "source 'image_folder' needs parameter 'path'; its parameters are: path, recursive",
        "source 'hf_dataset' has no parameter 'column'; its parameters are: path, split, image_column. Did you mean 'image_column'?",
    ]


def test_synthetic_parameters_are_checked_against_its_signature_without_running_it():
    with pytest.raises(RecipeError, match="source 'synthetic' has no parameter 'scene'; its parameters are: .*scenes"):
        source_items({"synthetic": {"scene": 3}})
