"""Where a dataset's DuckLake catalog lives: SQLite beside its data (the default), or PostgreSQL.

A catalog spec names it:

    sqlite                              <dataset>/catalog.sqlite, in WAL mode. One machine; `flow sql`
                                        reads while a run commits; concurrent writers take turns.
    postgres:<libpq connection string>  e.g. `postgres:dbname=thinkmill host=db.internal user=tm`.
                                        Many writers, many machines. One database holds many datasets,
                                        each in its own schema (`thinkmill_<dataset>`).

The spec is chosen when a dataset is created (`flow run … --catalog SPEC`, or THINKMILL_CATALOG) and,
when it is not the default, recorded in `<dataset>/catalog.json`, so every later command (`flow sql`,
`flow versions`, the next run) finds the catalog without being told. The Parquet files go to
`<dataset>/data/` unless `data_path` names another place (`s3://bucket/prefix/`, a shared mount):
writers on several machines need one they all reach, and it is fixed once the catalog exists.
Passwords never go in the spec (it is written to disk): libpq reads PGPASSWORD or ~/.pgpass.
"""

import json
import os
import re
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path

from schemas.base import sha256_text
from schemas.errors import CatalogError

SQLITE_FILE = "catalog.sqlite"
RECORD_FILE = "catalog.json"
SPEC_FORMS = "'sqlite' (the default) or 'postgres:<libpq connection string>', e.g. 'postgres:dbname=thinkmill host=127.0.0.1'"


@dataclass(frozen=True)
class Catalog:
    """A dataset's catalog: what to ATTACH, with which DuckDB extensions, and where its Parquet goes."""

    kind: str                          # a key of KINDS
    connection: str                    # sqlite: the file; postgres: the libpq connection string
    data_path: str                     # ends with '/'
    metadata_schema: str | None = None  # postgres: the schema holding this dataset's ducklake_* tables

    @property
    def extensions(self) -> list[str]:
        """DuckDB extensions the ATTACH needs, besides ducklake."""
        wanted = {"sqlite": ["sqlite"], "postgres": ["postgres"]}[self.kind]
        if "://" in self.data_path:  # s3://, gs://, https://: object storage through httpfs
            wanted.append("httpfs")
        return wanted

    def attach_statement(self, *, read_only: bool) -> str:
        options = ["READ_ONLY"] if read_only else [f"DATA_PATH {_quote(self.data_path)}", "DATA_INLINING_ROW_LIMIT 0"]
        if self.metadata_schema:
            options.append(f"METADATA_SCHEMA {_quote(self.metadata_schema)}")
        return f"ATTACH {_quote(f'ducklake:{self.kind}:{self.connection}')} AS lake ({', '.join(options)})"

    def prepare_for_writing(self) -> None:
        """SQLite: switch the catalog file to WAL (once; it stays so). In the default rollback-journal
        mode a commit locks readers out and a reader's open transaction makes a commit fail; in WAL
        mode readers never wait and writers wait only for each other."""
        if self.kind == "sqlite":
            Path(self.connection).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.connection, timeout=60)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
            finally:
                conn.close()

    def describe(self) -> str:
        where = f" (schema {self.metadata_schema})" if self.metadata_schema else ""
        return f"{self.kind}:{self.connection}{where}, data in {self.data_path}"

    @property
    def spec(self) -> str:
        return "sqlite" if self.kind == "sqlite" else f"{self.kind}:{self.connection}"


def _sqlite(connection: str, root: Path, data_path: str) -> Catalog:
    if connection:
        raise CatalogError(f"catalog 'sqlite:{connection}': a SQLite catalog always lives in the dataset folder "
                           f"({root / SQLITE_FILE}); write just 'sqlite'")
    return Catalog("sqlite", str(root / SQLITE_FILE), data_path)


def _postgres(connection: str, root: Path, data_path: str) -> Catalog:
    if not connection.strip():
        raise CatalogError(f"catalog 'postgres:' names no database. Write e.g. "
                           f"'postgres:dbname=thinkmill host=127.0.0.1 port=5432 user=thinkmill'")
    if re.search(r"(^|\s)password\s*=", connection):
        raise CatalogError("the catalog spec holds a password, and it would be written to the dataset's catalog.json. "
                           "Leave it out and set PGPASSWORD (or a ~/.pgpass line) instead")
    return Catalog("postgres", " ".join(connection.split()), data_path, metadata_schema=metadata_schema(root.name))


KINDS = {"sqlite": _sqlite, "postgres": _postgres}


def metadata_schema(dataset: str) -> str:
    """The PostgreSQL schema of a dataset: `thinkmill_<name>`, plus a short hash when the name had to change.

    >>> metadata_schema("wethink")
    'thinkmill_wethink'
    >>> metadata_schema("We-Think.v2")
    'thinkmill_we_think_v2_74a14c'
    """
    plain = re.sub(r"[^a-z0-9_]", "_", dataset.lower())
    return f"thinkmill_{plain}" if plain == dataset else f"thinkmill_{plain}_{sha256_text(dataset)[:6]}"


def parse(spec: str, root: Path, data_path: str | None = None) -> Catalog:
    """The catalog a spec names for the dataset at `root` (nothing is opened)."""
    kind, _, connection = spec.strip().partition(":")
    if kind not in KINDS:
        raise CatalogError(f"unknown catalog {spec!r}: use {SPEC_FORMS}")
    return KINDS[kind](connection, Path(root), _folder(data_path) if data_path else f"{Path(root) / 'data'}/")


def exists(root: Path) -> bool:
    """Whether a dataset was created at `root` (with any catalog)."""
    return (Path(root) / RECORD_FILE).exists() or (Path(root) / SQLITE_FILE).exists()


def recorded(root: Path) -> Catalog | None:
    """The catalog of the dataset at `root`, or None when there is no dataset there."""
    root = Path(root)
    if (root / RECORD_FILE).exists():
        fields = json.loads((root / RECORD_FILE).read_text())
        return Catalog(**{name: fields.get(name) for name in Catalog.__dataclass_fields__})
    if (root / SQLITE_FILE).exists():
        return parse("sqlite", root)
    return None


def resolve(root: Path, *, spec: str | None = None, data_path: str | None = None) -> tuple[Catalog, bool]:
    """The catalog to attach for `root`, and whether it is new (the dataset does not exist yet).

    For an existing dataset, `spec` and `data_path` may be left out; given, they must match what the
    dataset was created with: a dataset keeps its catalog.
    """
    root = Path(root)
    have = recorded(root)
    if have is None:
        return parse(spec or "sqlite", root, data_path), True
    if spec is not None and _normal(parse(spec, root).spec) != _normal(have.spec):
        raise CatalogError(f"dataset {root.name!r} has the catalog {have.spec!r}, not {spec!r}. A dataset keeps the "
                           f"catalog it was created with: leave out --catalog, or give another --dataset name")
    if data_path is not None and _folder(data_path) != have.data_path:
        raise CatalogError(f"dataset {root.name!r} keeps its Parquet files in {have.data_path}, not {_folder(data_path)}; "
                           f"leave out --data-path, or give another --dataset name")
    return have, False


def record(root: Path, catalog: Catalog) -> None:
    """Write `<dataset>/catalog.json` (atomically), unless the catalog is the plain default."""
    if catalog.kind == "sqlite" and catalog.data_path == f"{Path(root) / 'data'}/":
        return
    tmp = Path(root) / f".{RECORD_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(asdict(catalog), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, Path(root) / RECORD_FILE)


def _folder(path: str) -> str:
    return path if path.endswith("/") else path + "/"


def _normal(spec: str) -> str:
    kind, _, connection = spec.partition(":")
    return f"{kind}:{' '.join(sorted(connection.split()))}"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
