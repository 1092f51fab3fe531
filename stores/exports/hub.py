"""Hugging Face Hub export: one dataset version as a Hub dataset repository, in a folder or uploaded.

The folder is what `datasets.load_dataset(folder_or_repo, config)` and the Hub's viewer read:

    README.md                                          the dataset card (stores/exports/dataset_card.py)
    data/<config>/train-00000-of-00002.parquet         each file at most `max_shard_bytes` (500 MB)
    data/<config>/train-00001-of-00002.parquet

One config per table worth publishing (`CONFIGS`), each a single `train` split:
- `samples` (the default): one row per question with its image as a `datasets.Image()` feature,
  the bytes *embedded* in the Parquet file (not a path), its best CoT, verdicts, difficulty per
  policy and reject reasons (see stores/exports/facts.py);
- `questions`, `captions`, `cots`, `verdicts`, `rollouts`, `difficulty`, `rejects`: the lake tables
  as they are at that version, with their lineage columns (`row_hash`, an internal change marker, left out).
Not published: `assets` (their images are in `samples`; `media_uri` is a path on this machine),
`policies` (checkpoint paths on this machine; the card's lineage names them), `mixtures`, and the run
tables (`versions`, `stage_stats`), summarised in the card. A table with no rows at that version
gets no config (`load_dataset` cannot read an empty file list); the card says so.

Upload (`upload`) uses `huggingface_hub`: `HfApi.create_repo` then `upload_folder`, which also deletes
data files a previous export left that this one does not have (so `train-*` never mixes two exports).
The token comes from `HF_TOKEN` or the stored login (`hf auth login`); thinkmill never prints it,
never writes it, and scrubs it from any error the Hub sends back. `HF_ENDPOINT` picks another Hub.
"""

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.errors import ExportError
from stores.exports import facts

MAX_SHARD_BYTES = 500 * 1000 * 1000  # the Hub's recommendation for Parquet shards
SPLIT = "train"
IMAGE_ROWS_PER_ROW_GROUP = 100  # as `datasets.push_to_hub` for image datasets: the viewer reads a row group at once


@dataclass(frozen=True)
class HubConfig:
    name: str
    about: str         # one line for the card
    table: str | None  # the lake table, or None for `samples`


CONFIGS = {config.name: config for config in (
    HubConfig("samples", "one row per question: image (embedded), question, answer, best CoT, verdicts, difficulty "
                         "per policy, reject reasons", None),
    HubConfig("questions", "QA items with their generator and lineage", "questions"),
    HubConfig("captions", "captions of each image, per style", "captions"),
    HubConfig("cots", "every reasoning trace (raw, refined, pseudo, bridge, bridged)", "cots"),
    HubConfig("verdicts", "every verifier outcome", "verdicts"),
    HubConfig("rollouts", "every sampled answer of every policy, with and without the image", "rollouts"),
    HubConfig("difficulty", "difficulty per (question, policy, method) and the selection decision", "difficulty"),
    HubConfig("rejects", "everything a stage refused, with its reason slug and detail", "rejects"),
)}
DEFAULT_CONFIG = "samples"


@dataclass
class ConfigExport:
    """What was written for one config: rows, shards, bytes (Arrow in memory and files on disk)."""

    name: str
    n_rows: int
    files: list[str] = field(default_factory=list)  # relative to the export folder
    num_bytes: int = 0
    download_size: int = 0
    features: object = None  # datasets.Features


@dataclass
class HubExport:
    folder: Path
    dataset: str
    version: int
    configs: dict[str, ConfigExport]
    skipped: dict[str, str]  # config -> why it has no files


def plan_shards(row_bytes: list[int], max_bytes: int) -> list[tuple[int, int]]:
    """Contiguous row ranges [start, stop) whose summed sizes stay within `max_bytes`.

    A row larger than `max_bytes` gets a range of its own (the writer then reports it).

    >>> plan_shards([4, 4, 4, 4, 4], 8)
    [(0, 2), (2, 4), (4, 5)]
    >>> plan_shards([10, 1, 1], 8)
    [(0, 1), (1, 3)]
    >>> plan_shards([], 8)
    []
    """
    ranges, start, total = [], 0, 0
    for index, size in enumerate(row_bytes):
        if index > start and total + size > max_bytes:
            ranges.append((start, index))
            start, total = index, 0
        total += size
    if row_bytes:
        ranges.append((start, len(row_bytes)))
    return ranges


def shard_name(index: int, n_shards: int) -> str:
    """
    >>> shard_name(0, 2)
    'train-00000-of-00002.parquet'
    """
    return f"{SPLIT}-{index:05d}-of-{n_shards:05d}.parquet"


def write_folder(lake, folder: Path, *, version: int | None = None, max_shard_bytes: int = MAX_SHARD_BYTES,
                 license: str | None = None, recipe_license: str | None = None, repo_id: str | None = None) -> HubExport:
    """Write `version` (latest when None) of the dataset in `lake` as a Hub dataset folder.

    `folder` must be empty or absent. The card's licence (an id such as "cc-by-4.0") is `license`
    when given, else the `license` recorded with the version's recipe, else `recipe_license` (the
    recipe file's `license` now, read by the caller), else "other": thinkmill never guesses one.
    `repo_id` only goes into the card's loading instructions. A failed export leaves the folder as
    it found it (absent or empty): never half an export that `load_dataset` would read as whole.
    """
    from stores.exports.dataset_card import write_card

    version = facts.resolve_version(lake, version)
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise ExportError(f"{folder} is not empty: the export would mix with what is there. "
                          f"Give an empty or new folder to --to-folder.")
    if max_shard_bytes < 1:
        raise ExportError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
    created = not folder.exists()
    try:
        exported, skipped = {}, {}
        for config in CONFIGS.values():
            rows = _rows(lake, config, version)
            if rows.num_rows == 0:
                skipped[config.name] = f"no {config.table or 'question'} rows at version {version}"
                continue
            exported[config.name] = _write_config(config.name, rows, folder, lake.root, max_shard_bytes=max_shard_bytes)
        export = HubExport(folder, lake.root.name, version, exported, skipped)
        write_card(lake, export, license=license, recipe_license=recipe_license, repo_id=repo_id)
    except BaseException:
        for child in folder.iterdir() if folder.exists() else ():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        if created and folder.exists():
            folder.rmdir()
        raise
    return export


def _rows(lake, config: HubConfig, version: int) -> pa.Table:
    if config.table is None:
        return facts.samples(lake, version)
    from schemas import TABLES

    spec = TABLES[config.table]
    return lake.sql(f"SELECT * EXCLUDE (row_hash) FROM {config.table} AT (VERSION => {int(version)}) ORDER BY {spec.id_column}")


def _features(rows: pa.Table, with_image: bool):
    """The `datasets` features: derived from the Arrow schema; `image_uri` becomes an embedded Image."""
    import datasets

    if not with_image:
        return datasets.Features.from_arrow_schema(rows.schema)
    features = {}
    for name, feature in datasets.Features.from_arrow_schema(rows.schema).items():
        if name == "image_uri":
            continue
        features[name] = feature
        if name == "question_id":
            features["image"] = datasets.Image()  # right after the id: what the viewer shows first
    return datasets.Features(features)


def _write_config(name: str, rows: pa.Table, folder: Path, dataset_root: Path, *, max_shard_bytes: int) -> ConfigExport:
    with_image = "image_uri" in rows.column_names
    features = _features(rows, with_image)
    schema = features.arrow_schema
    directory = folder / "data" / name
    directory.mkdir(parents=True, exist_ok=True)
    # Plan by size: the row's share of the table in memory plus its image file; Parquet's footer
    # (schema and features JSON) comes off the budget. A file that still comes out too large is split.
    per_row = rows.nbytes / rows.num_rows
    image_sizes = _image_sizes(rows, dataset_root) if with_image else [0] * rows.num_rows
    footer = len(schema.metadata[b"huggingface"]) + 8 * 1024
    pending = list(reversed(plan_shards([int(per_row) + size for size in image_sizes], max(1, max_shard_bytes - footer))))
    parts, num_bytes = [], 0
    while pending:
        start, stop = pending.pop()
        table = _materialise(rows.slice(start, stop - start), schema, dataset_root, with_image)
        part = directory / f".part-{len(parts):05d}.tmp"
        pq.write_table(table, part, row_group_size=IMAGE_ROWS_PER_ROW_GROUP if with_image else None)
        if part.stat().st_size > max_shard_bytes:
            part.unlink()
            if stop - start == 1:
                raise ExportError(
                    f"config {name!r}: row {rows.column(0)[start].as_py()} alone takes {table.nbytes} bytes, more than "
                    f"the largest shard allowed ({max_shard_bytes} bytes). Raise --max-shard-mb.")
            middle = (start + stop) // 2
            pending += [(middle, stop), (start, middle)]
            continue
        parts.append(part)
        num_bytes += table.nbytes
    export = ConfigExport(name, rows.num_rows, num_bytes=num_bytes, features=features)
    for index, part in enumerate(parts):
        final = directory / shard_name(index, len(parts))
        os.replace(part, final)
        export.files.append(final.relative_to(folder).as_posix())
        export.download_size += final.stat().st_size
    return export


def _image_path(dataset_root: Path, uri: str, question_id: str) -> Path:
    path = dataset_root / uri
    if not path.is_file():
        raise ExportError(
            f"the image of {question_id} is missing: {path} does not exist (media store {dataset_root / 'media'}). "
            f"The dataset folder is incomplete: restore its media/ folder, or re-run the recipe that ingested it.")
    return path


def _image_sizes(rows: pa.Table, dataset_root: Path) -> list[int]:
    ids, uris = rows.column("question_id").to_pylist(), rows.column("image_uri").to_pylist()
    return [0 if uri is None else _image_path(dataset_root, uri, qid).stat().st_size for qid, uri in zip(ids, uris)]


def _materialise(rows: pa.Table, schema: pa.Schema, dataset_root: Path, with_image: bool) -> pa.Table:
    """The rows as the Hub gets them: image bytes read into the table, types as `datasets` declares."""
    columns = {}
    if with_image:
        ids, uris = rows.column("question_id").to_pylist(), rows.column("image_uri").to_pylist()
        images = [None if uri is None else {"bytes": _image_path(dataset_root, uri, qid).read_bytes(), "path": Path(uri).name}
                  for qid, uri in zip(ids, uris)]
        columns["image"] = pa.array(images, type=schema.field("image").type)
    for name in schema.names:
        if name != "image":
            columns[name] = rows.column(name).cast(schema.field(name).type)
    return pa.table([columns[name] for name in schema.names], schema=schema)


# ---- upload ---------------------------------------------------------------------------------------

def upload(folder: Path, repo_id: str, *, private: bool = False, commit_message: str = "thinkmill export") -> str:
    """Create `repo_id` (a dataset repo; kept if it exists) and upload `folder` to it; return its URL.

    `private` applies when the repo is created; an existing repo keeps its visibility.
    """
    from huggingface_hub import HfApi, get_token

    token = get_token()
    if not token:
        raise ExportError(
            "no Hugging Face token: set HF_TOKEN in the environment or run `hf auth login`, then run the export "
            "again. To export without uploading, give --to-folder DIR.")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ExportError(f"repo {repo_id!r} is not of the form user/name (or org/name)")
    api = HfApi()
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset", commit_message=commit_message,
                          delete_patterns=["data/**"])
    except Exception as error:  # noqa: BLE001 (every failure becomes one message for people, token scrubbed)
        raise ExportError(f"upload to {repo_id} on {api.endpoint} failed: {scrub(f'{type(error).__name__}: {error}', token)}\n"
                             f"Check that the token (HF_TOKEN or `hf auth login`) may write to {repo_id}, or write the "
                             f"files with --to-folder DIR and upload them later.") from None
    return str(url)


def scrub(text: str, secret: str | None) -> str:
    """`text` with every occurrence of `secret` replaced.

    >>> scrub("401: bad token hf_abc for hf_abc", "hf_abc")
    '401: bad token *** for ***'
    """
    return text.replace(secret, "***") if secret else text

