"""Source `hf_dataset`: the images of a local Hugging Face dataset, as stored bytes, undecoded.

`path` is a dataset saved with `Dataset.save_to_disk` / `DatasetDict.save_to_disk`, or a Parquet
file or folder of them (the Hub layout, `data/<split>-00000-of-00001.parquet`, or any `*.parquet`:
a file not named that way is split "train", as `load_dataset("parquet", ...)` names it). The image
column holds `datasets.Image()` cells, stored as struct<bytes, path>, or plain binary. Bytes are
read as stored (the column is cast to `Image(decode=False)`): `ingest` decodes each image once.
A cell with no bytes but a path (an image saved by reference) becomes an item that `ingest` reads
from that path; an empty cell becomes an item with neither, which `ingest` rejects.

source_ref is "<name>:<split>:<index>", `name` being the folder or file name without ".parquet".
"""

import hashlib
import re
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.errors import RecipeError

BATCH_ROWS = 1000
HUB_SHARD_NAME = re.compile(r"^(?P<split>[A-Za-z0-9_.]+)-\d+-of-\d+$")


def hf_dataset_items(*, path: str, split: str | None = None, image_column: str = "image") -> list[dict]:
    """`path`: a save_to_disk folder or Parquet file/folder; `split`: one split, or None for all."""
    root = Path(path).expanduser()
    if not root.exists():
        raise RecipeError("source hf_dataset", [f"path {str(path)!r} does not exist (resolved: {root.resolve()})"])
    root = root.resolve()
    name = root.name.removesuffix(".parquet")
    saved = root.is_dir() and ((root / "dataset_dict.json").exists() or (root / "state.json").exists())
    splits = _saved_splits(root, image_column) if saved else _parquet_splits(root, image_column)
    if split is not None:
        if split not in splits:
            problem = f"{root} has no split {split!r}; its splits are: {', '.join(splits)}"
            raise RecipeError("source hf_dataset", [problem])
        splits = {split: splits[split]}
    items = []
    for split_name, batches in splits.items():
        index = 0
        for cells in batches():
            for cell in cells:
                items.append(_item(cell, f"{name}:{split_name}:{index}", root))
                index += 1
    return items


def _saved_splits(root: Path, image_column: str) -> dict:
    """split -> a function yielding lists of image cells, for a `save_to_disk` folder."""
    import datasets

    loaded = datasets.load_from_disk(str(root))
    if isinstance(loaded, datasets.DatasetDict):
        named = dict(loaded)
    else:  # a lone Dataset has one split: the one it recorded, else "train"
        named = {str(loaded.split) if loaded.split else "train": loaded}
    for split_name, dataset in named.items():
        schema = dataset.data.schema
        _check_column(image_column, schema, f"{root} (split {split_name!r})")
        named[split_name] = dataset.cast_column(image_column, datasets.Image(decode=False))

    def batches(dataset):
        for table in dataset.with_format("arrow").iter(batch_size=BATCH_ROWS):
            yield table.column(image_column).to_pylist()

    return {split_name: partial(batches, dataset) for split_name, dataset in sorted(named.items())}


def _parquet_splits(root: Path, image_column: str) -> dict:
    """split -> a function yielding lists of image cells, for a Parquet file or folder."""
    files = [root] if root.is_file() else sorted(
        f for f in root.rglob("*.parquet") if not any(part.startswith(".") for part in f.relative_to(root).parts))
    if not files:
        raise RecipeError("source hf_dataset", [
            f"{root} is neither a dataset saved with save_to_disk (no dataset_dict.json or state.json) "
            "nor a Parquet file or folder (no *.parquet files)"])
    by_split: dict[str, list[Path]] = {}
    for file in files:
        match = HUB_SHARD_NAME.match(file.name.removesuffix(".parquet"))
        by_split.setdefault(match["split"] if match else "train", []).append(file)
        _check_column(image_column, pq.read_schema(file), str(file))

    def batches(split_files):
        for file in split_files:
            for batch in pq.ParquetFile(file).iter_batches(batch_size=BATCH_ROWS, columns=[image_column]):
                yield batch.column(0).to_pylist()

    return {split_name: partial(batches, split_files) for split_name, split_files in sorted(by_split.items())}


def _check_column(image_column: str, schema: pa.Schema, where: str) -> None:
    """The image column must exist and be stored as datasets.Image() stores it, or as plain binary."""
    columns = ", ".join(schema.names)
    if image_column not in schema.names:
        raise RecipeError("source hf_dataset", [
            f"{where} has no column {image_column!r}; its columns are: {columns}. "
            "Set `image_column` to the one that holds the images."])
    kind = schema.field(image_column).type
    if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
            or (pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0)):
        raise RecipeError("source hf_dataset", [
            f"{where}: column {image_column!r} is {kind}, not images (datasets.Image() stores struct<bytes, path>); "
            f"its columns are: {columns}"])


def _item(cell, source_ref: str, root: Path) -> dict:
    data, file = (cell, None) if not isinstance(cell, dict) else (cell.get("bytes"), cell.get("path"))
    item = {"source": "hf_dataset", "source_ref": source_ref, "path": None, "content": None, "scene": None}
    if data is not None:
        return {**item, "content": data, "fingerprint": "sha256:" + hashlib.sha256(data).hexdigest()}
    if file:  # stored by reference: a relative path is relative to the dataset's folder
        resolved = (root.parent if root.is_file() else root) / file  # an absolute `file` stays as is
        try:
            stat = resolved.stat()
            fingerprint = f"{resolved}:{stat.st_size}:{stat.st_mtime_ns}"
        except OSError:
            fingerprint = f"{resolved}:missing"
        return {**item, "path": str(resolved), "fingerprint": fingerprint}
    return {**item, "fingerprint": "empty"}
