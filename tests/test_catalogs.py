"""Catalog specs, the SQLite catalog under several writers, and the whole-version check itself."""

import sqlite3
from threading import Thread

import pyarrow as pa
import pytest

from schemas import TABLES
from schemas.errors import CatalogError
from stores import catalogs
from stores.lake import Lake
from tests.lake_checks import whole_version_problems
from tests.test_postgres_catalog import caption_ids, commit


def test_specs_name_a_kind_and_never_a_password(tmp_path):
    root = tmp_path / "datasets" / "d"
    assert catalogs.parse("sqlite", root) == catalogs.Catalog("sqlite", str(root / "catalog.sqlite"), f"{root}/data/")
    pg = catalogs.parse("postgres:host=db   dbname=lake", root, data_path="s3://bucket/lake")
    assert (pg.connection, pg.data_path, pg.metadata_schema) == ("host=db dbname=lake", "s3://bucket/lake/", "thinkmill_d")
    assert pg.extensions == ["postgres", "httpfs"]  # object storage through httpfs
    assert "METADATA_SCHEMA 'thinkmill_d'" in pg.attach_statement(read_only=True)
    for spec, message in [("postgres:", "names no database"), ("postgres:dbname=x password=p", "PGPASSWORD"),
                          ("sqlite:/elsewhere.db", "always lives in the dataset folder"), ("duckdb", "unknown catalog")]:
        with pytest.raises(CatalogError, match=message):
            catalogs.parse(spec, root)


def test_an_existing_dataset_keeps_its_sqlite_catalog(tmp_path):
    root = tmp_path / "datasets" / "d"
    with Lake.open(root, create=True) as lake:
        commit(lake, "run-1", ["c1"])
    assert not (root / "catalog.json").exists()  # the default needs no record
    with pytest.raises(CatalogError, match="has the catalog 'sqlite', not 'postgres:dbname=x'"):
        Lake.open(root, catalog="postgres:dbname=x")
    with Lake.open(root, catalog="sqlite") as lake:  # naming the catalog it has is fine
        assert caption_ids(lake) == ["c1"]


def test_the_sqlite_catalog_is_in_wal_mode_so_readers_never_wait(tmp_path):
    root = tmp_path / "datasets" / "d"
    Lake.open(root, create=True).close()
    connection = sqlite3.connect(root / "catalog.sqlite")
    assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    connection.close()


def test_sqlite_writers_committing_at_once_take_turns_and_duplicate_nothing(tmp_path):
    root = tmp_path / "datasets" / "busy"
    Lake.open(root, create=True).close()
    landed: dict[str, list] = {}

    def writer(name: str, offset: int) -> None:
        with Lake.open(root) as lake:
            landed[name] = [commit(lake, f"{name}{k}", [f"c{offset + 10 * k + j:04d}" for j in range(10)]).version
                            for k in range(3)]

    threads = [Thread(target=writer, args=(name, offset)) for name, offset in (("a", 0), ("b", 5))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert sorted(landed) == ["a", "b"]
    expected = sorted({f"c{offset + 10 * k + j:04d}" for offset in (0, 5) for k in range(3) for j in range(10)})
    with Lake.open(root, read_only=True) as reader:
        assert caption_ids(reader) == expected
        assert whole_version_problems(reader) == []
        versions = [v["version"] for v in reader.versions()]
    assert versions == sorted(v for runs in landed.values() for v in runs if v is not None)


def test_the_whole_version_check_sees_a_snapshot_written_behind_the_lakes_back(tmp_path):
    root = tmp_path / "datasets" / "d"
    with Lake.open(root, create=True) as lake:
        commit(lake, "run-1", ["c1", "c2"])
        assert whole_version_problems(lake) == []
        # A writer that is not Lake.commit: rows, but no versions row and no accounting for them.
        lake._con.register("_rows", pa.Table.from_pylist(
            [{"caption_id": "c1", "asset_id": "a", "style": "fine", "text": "again", "row_hash": "h"}],
            schema=TABLES["captions"].schema))
        lake._con.execute("INSERT INTO lake.captions SELECT * FROM _rows")
        problems = whole_version_problems(lake)
    assert problems == ["snapshot 2: 0 versions rows for it, not 1"]
