"""The lake: one DuckLake catalog per dataset (Parquet files + snapshots), queried with DuckDB.

A dataset lives in one folder: `catalog.sqlite` (the DuckLake catalog; SQLite so a second process
can read while a run writes), `data/` (the Parquet files), `media/` (content-addressed files).
Many writers on many machines use a PostgreSQL catalog instead (stores/catalogs.py: `catalog.json`
then says where it is).
A dataset *version* is a DuckLake snapshot: one recipe run commits every table in one transaction,
with a commit message and a `versions` row, so `SELECT … FROM questions AT (VERSION => 3)` reads
the dataset exactly as run 3 left it.

Rows are keyed by content-addressed ids. A commit inserts rows whose id is new, replaces rows whose
id exists with a different `row_hash`, and skips the rest, so re-running a recipe adds no duplicate
rows, and a run that changes nothing commits nothing (no new version).

Concurrent writers: a commit is one transaction that reads what exists (to upsert) and writes. DuckLake
would merge two concurrent inserts into one table on its own, and two runs adding the same new id
would then both insert it. So a writer turns DuckLake's own retry off: when another writer committed
since this transaction began, the commit fails, and `commit` redoes the whole transaction against the
new snapshot (re-reading what exists), with backoff and jitter. Each run thus lands as one whole
snapshot, as if the runs had committed one after the other.
"""

import json
import random
import re
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa

from schemas import SCHEMA_VERSION, TABLES
from schemas.errors import CommitConflict, LakeError, ReadOnlyLake, UnknownDataset, UnknownTable, UnknownVersion
from stores import catalogs
from stores.extensions import connect, load_extension

CATALOG_FILE = catalogs.SQLITE_FILE
COMMIT_ATTEMPTS = 12  # another writer's commit in between costs one attempt; twelve in a row is a crowd
READ_ONLY_STATEMENTS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}

# Views over the tables: what a person (or the Hub export) wants to look at, one row per question.
VIEWS = {
    "samples": """
        SELECT q.question_id, q.question, q.answer, q.answer_type, q.choices, q.category, q.abilities,
               q.reward_route, a.asset_id, a.media_uri, a.width, a.height, a.source,
               c.text AS refined_cot, c.final_answer AS cot_answer,
               v.passed AS verified, v.verifier
        FROM questions q
        JOIN assets a ON a.asset_id = q.asset_ids[1]
        LEFT JOIN cots c ON c.question_id = q.question_id AND c.kind = 'refined'
        LEFT JOIN verdicts v ON v.subject_id = c.cot_id
    """,
    # Cold-start SFT data: every chain of thought whose final answer a verifier passed.
    "sft_examples": """
        SELECT q.question_id, q.question, q.answer, q.answer_type, q.choices, a.media_uri,
               c.cot_id, c.kind AS cot_kind, c.text AS cot, c.final_answer, c.n_tokens, c.reflections, v.verifier
        FROM cots c
        JOIN verdicts v ON v.subject_id = c.cot_id AND v.passed
        JOIN questions q ON q.question_id = c.question_id
        JOIN assets a ON a.asset_id = q.asset_ids[1]
    """,
}

# Tables renamed since a dataset may have been written: new name -> (old name, {old column: new column}).
# The next commit renames them in place (DuckLake keeps their rows and history: versions before the
# rename answer to the old name with `AT (VERSION => n)`); until then reads of the new name see the old
# table, new columns NULL.
RENAMED = {"stage_stats": ("stage_counts", {"stage_count_id": "stage_stats_id"})}


@dataclass(frozen=True)
class Commit:
    """What a commit did: the new version (None when nothing changed) and rows added/removed per table."""

    version: int | None
    added: dict[str, int]
    removed: dict[str, int]
    attempts: int = 1  # transactions tried: 1 + the times another writer committed first


def dataset_root(home: Path, name: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise LakeError(f"dataset name {name!r} is not allowed: use letters, digits, '_', '-' and '.', starting with a letter or digit")
    return Path(home) / "datasets" / name


def list_datasets(home: Path) -> list[str]:
    base = Path(home) / "datasets"
    return sorted(p.name for p in base.iterdir() if catalogs.exists(p)) if base.exists() else []


class Lake:
    """A connection to one dataset's catalog. Verbs: open, table, sql, versions, diff, commit."""

    def __init__(self, con: duckdb.DuckDBPyConnection, root: Path, read_only: bool):
        self._con, self.root, self.read_only = con, Path(root), read_only
        self.catalog: catalogs.Catalog | None = None  # set by `open`

    @classmethod
    def open(cls, root: Path, *, read_only: bool = False, create: bool = False, catalog: str | None = None,
             data_path: str | None = None) -> "Lake":
        """Attach the dataset's catalog (`root/catalog.sqlite`, or the one `root/catalog.json` names).

        `create`: make the dataset if it does not exist, with the catalog spec `catalog` (default:
        SQLite) and its Parquet files under `data_path` (default: `root/data/`); see stores/catalogs.py.
        For an existing dataset both may be left out, and must match when given.
        """
        root = Path(root)
        location, new = catalogs.resolve(root, spec=catalog, data_path=data_path)
        if new:
            if not create:
                raise UnknownDataset(root.name, root.parent, list_datasets(root.parent.parent))
            root.mkdir(parents=True, exist_ok=True)
            if "://" not in location.data_path:
                Path(location.data_path).mkdir(parents=True, exist_ok=True)
        if not read_only:
            location.prepare_for_writing()
        con = connect()
        for extension in location.extensions:
            load_extension(con, extension)
        try:
            con.execute(location.attach_statement(read_only=read_only))
        except duckdb.Error as error:
            con.close()
            raise LakeError(f"cannot open the catalog of dataset {root.name!r} ({location.describe()}): "
                            f"{str(error).splitlines()[0]}") from None
        if new:
            catalogs.record(root, location)
        con.execute("USE lake")
        if not read_only:
            # A commit that another writer overtook fails instead of being merged by DuckLake: `commit`
            # then redoes it against the new snapshot, so two runs never both insert one new id.
            con.execute("SET ducklake_max_retry_count = 0")
        lake = cls(con, root, read_only)
        lake.catalog = location
        lake._check_schema_version()
        if read_only:
            lake._view_renamed_tables()
            # Defence in depth behind the statement check in `sql`: no files, no new attachments. Not
            # with Parquet on an object store, which DuckDB reaches only with external access on.
            if "://" not in location.data_path:
                con.execute("SET allowed_directories = ?", [[location.data_path]])
                con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
        return lake

    def close(self) -> None:
        self._con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- reading -------------------------------------------------------------------------------

    def tables(self) -> list[str]:
        rows = self._con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'lake' ORDER BY 1").fetchall()
        return [r[0] for r in rows]

    def table(self, name: str, *, version: int | None = None) -> pa.Table:
        """All rows of `name` as of `version` (latest when None)."""
        known = self.tables()
        if version is not None:
            self._check_version(version)
        at = "" if version is None else f" AT (VERSION => {int(version)})"
        old_name = RENAMED.get(name, (None,))[0]
        if name not in known:
            if old_name in known:  # a dataset written before the rename, not committed to since
                return self._renamed_rows(name, self._con.execute(f"SELECT * FROM lake.{old_name}{at}").fetch_arrow_table())
            if name in TABLES:  # declared but never written: an empty table of the right shape
                return TABLES[name].schema.empty_table()
            raise UnknownTable(name, sorted(set(known) | set(TABLES)))
        try:
            return self._con.execute(f"SELECT * FROM lake.{name}{at}").fetch_arrow_table()
        except duckdb.CatalogException:
            if old_name is None or version is None:
                raise
            # `version` predates the rename: the table had its old name then.
            return self._renamed_rows(name, self._con.execute(f"SELECT * FROM lake.{old_name}{at}").fetch_arrow_table())

    def _renamed_rows(self, name: str, rows: pa.Table) -> pa.Table:
        """Rows of a table under its old name, in the new table's schema (new columns NULL)."""
        columns = RENAMED[name][1]
        rows = rows.rename_columns([columns.get(c, c) for c in rows.column_names])
        schema = TABLES[name].schema
        return pa.table({f.name: rows.column(f.name).cast(f.type) if f.name in rows.column_names
                         else pa.nulls(rows.num_rows, f.type) for f in schema}, schema=schema)

    def _view_renamed_tables(self) -> None:
        """Let SQL name a renamed table by its new name on a dataset written before the rename."""
        known = set(self.tables())
        for name, (old_name, columns) in RENAMED.items():
            if name in known or old_name not in known:
                continue
            have = [r[0] for r in self._con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE database_name='lake' AND table_name=?", [old_name]).fetchall()]
            select = [f"{old} AS {new}" for old, new in columns.items()] + [
                f.name if f.name in have else f"NULL::{_duckdb_type(f.type)} AS {f.name}"
                for f in TABLES[name].schema if f.name not in columns.values()]
            self._con.execute(f"CREATE TEMP VIEW {name} AS SELECT {', '.join(select)} FROM lake.{old_name}")

    def sql(self, query: str) -> pa.Table:
        """Run one or more read-only statements; return the last result. Writes raise ReadOnlyLake."""
        try:
            statements = duckdb.extract_statements(query)
        except duckdb.Error as error:
            raise LakeError(f"SQL does not parse: {error}") from None
        if not statements:
            raise LakeError("no SQL statement given")
        for statement in statements:
            if statement.type not in READ_ONLY_STATEMENTS:
                raise ReadOnlyLake(statement.query, f"{statement.type.name} statements are refused")
        result = None
        for statement in statements:
            try:
                result = self._con.execute(statement.query).fetch_arrow_table()
            except duckdb.PermissionException as error:
                raise ReadOnlyLake(statement.query, str(error).split("\n")[0]) from None
            except duckdb.Error as error:
                raise LakeError(f"{type(error).__name__}: {error}".split("\n\n")[0] + self._hint(error)) from None
        return result

    def _hint(self, error: Exception) -> str:
        text = str(error)
        if "does not exist" in text and "Table" in text:
            return f"\nTables in this dataset: {', '.join(self.tables() + list(VIEWS))}"
        if "VERSION" in text or "snapshot" in text.lower():
            return f"\nVersions: {', '.join(str(v['version']) for v in self.versions())}"
        return ""

    def versions(self) -> list[dict]:
        """Committed versions, oldest first, with their commit message."""
        if "versions" not in self.tables():
            return []
        return self._con.execute("""
            SELECT v.version, v.name, v.recipe, v.run_id, v.config_hash, v.counts, v.created_at, s.commit_message
            FROM lake.versions v LEFT JOIN lake.snapshots() s ON s.snapshot_id = v.version
            ORDER BY v.version""").fetch_arrow_table().to_pylist()

    def current_version(self) -> int | None:
        versions = self.versions()
        return versions[-1]["version"] if versions else None

    def _check_version(self, version: int) -> None:
        known = [v["version"] for v in self.versions()]
        if int(version) not in known:
            raise UnknownVersion(self.root.name, version, known)

    def diff(self, old: int, new: int, *, tables: list[str] | None = None) -> dict[str, dict]:
        """Per table (all, or `tables`): ids added, removed, and changed (same id, new content) from `old` to `new`.

        One SQL join per table over the two snapshots (DuckDB does the work; only changed ids come back).
        """
        versions = [v["version"] for v in self.versions()]
        for version in (old, new):
            if int(version) not in versions:
                raise UnknownVersion(self.root.name, version, versions)
        known = self.tables()
        for name in tables or []:
            if name not in known:
                raise UnknownTable(name, sorted(t for t in known if t in TABLES))
        created = self._created_at()
        out = {}
        for name in tables or known:
            if name not in TABLES:
                continue
            out[name] = {"added": [], "removed": [], "changed": []}
            query = diff_sql(self._rows_for_diff(name, old, created), self._rows_for_diff(name, new, created))
            for change, row_id in self._con.execute(query).fetchall():
                out[name][change].append(row_id)
        return out

    def _created_at(self) -> dict[str, int]:
        """The snapshot in which each table was created."""
        created = {}
        for snapshot, changes in self._con.execute("SELECT snapshot_id, changes FROM lake.snapshots() ORDER BY 1").fetchall():
            for qualified in (changes or {}).get("tables_created", []):
                created.setdefault(qualified.split(".")[-1], snapshot)
        return created

    def _rows_for_diff(self, name: str, version: int, created: dict[str, int]) -> str:
        """SQL for (id, row_hash) of `name` at `version`; no rows when the table did not exist yet."""
        if created.get(name, 0) > int(version):
            return "SELECT NULL::VARCHAR AS id, NULL::VARCHAR AS row_hash WHERE false"
        id_col = TABLES[name].id_column
        row_hash = "row_hash" if "row_hash" in TABLES[name].schema.names else "NULL::VARCHAR"
        return f"SELECT CAST({id_col} AS VARCHAR) AS id, {row_hash} AS row_hash FROM lake.{name} AT (VERSION => {int(version)})"

    # ---- writing -------------------------------------------------------------------------------

    def commit(self, tables: dict[str, pa.Table], *, run_id: str, recipe: str, config_hash: str,
               config: dict, stage_stats: pa.Table | None = None, name: str | None = None,
               run_rows: dict[str, pa.Table] | None = None, before_commit=None) -> Commit:
        """Upsert every table and record the run, in one transaction = one snapshot = one version.

        Nothing is committed (and no version is made) when no table gains, loses or changes a row.
        `run_rows`: rows of other per-run tables (`RUN_TABLES`), appended only when a version is made.
        When another writer commits first, the transaction is redone on top of theirs (see the module
        doc), up to COMMIT_ATTEMPTS times. `before_commit()` runs inside each attempt, every table
        written, just before COMMIT (a test instrument holds or kills the run there).
        """
        if self.read_only:
            raise ReadOnlyLake("commit", "this lake was opened read-only")
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                commit = self._commit_once(tables, run_id=run_id, recipe=recipe, config_hash=config_hash, config=config,
                                           stage_stats=stage_stats, name=name, run_rows=run_rows,
                                           before_commit=before_commit)
                return replace(commit, attempts=attempt)
            except duckdb.Error as error:
                if not _overtaken(error):
                    raise
                last_error = str(error).splitlines()[0][:200]
            time.sleep(min(5.0, 0.05 * 2 ** attempt) * random.uniform(0.5, 1.0))  # backoff with jitter
        raise CommitConflict(self.root.name, COMMIT_ATTEMPTS, last_error)

    def _commit_once(self, tables: dict[str, pa.Table], *, run_id: str, recipe: str, config_hash: str, config: dict,
                     stage_stats: pa.Table | None, name: str | None, run_rows: dict[str, pa.Table] | None,
                     before_commit) -> Commit:
        con = self._con
        con.execute("BEGIN TRANSACTION")
        try:
            self._ensure_tables()
            added, removed = {}, {}
            for table_name, rows in tables.items():
                if rows.num_rows == 0:
                    continue
                added[table_name], removed[table_name] = self._upsert(table_name, rows)
            if not any(added.values()) and not any(removed.values()):
                con.execute("ROLLBACK")
                return Commit(None, added, removed)
            version = con.execute("SELECT max(snapshot_id) + 1 FROM lake.snapshots()").fetchone()[0]
            counts = {t: {"added": added.get(t, 0), "removed": removed.get(t, 0)} for t in sorted(set(added) | set(removed))}
            if stage_stats is not None and stage_stats.num_rows:
                self._append("stage_stats", stage_stats)
            for table_name, rows in (run_rows or {}).items():  # other one-row-per-run tables (loop_rounds)
                if rows.num_rows:
                    self._append(table_name, rows)
            version_row = {
                "version": version, "name": name or f"v{version}", "run_id": run_id, "recipe": recipe,
                "config_hash": config_hash, "config": json.dumps(config, sort_keys=True, default=str),
                "counts": json.dumps(counts, sort_keys=True), "created_at": datetime.now(timezone.utc),
            }
            self._append("versions", pa.Table.from_pylist([version_row], schema=TABLES["versions"].schema))
            message = f"{recipe} run {run_id} config {config_hash[:12]}"
            extra = json.dumps({"schema_version": SCHEMA_VERSION, "run_id": run_id, "recipe": recipe, "config_hash": config_hash})
            con.execute("CALL lake.set_commit_message('thinkmill', ?, extra_info => ?)", [message, extra])
            if before_commit is not None:
                before_commit()
            con.execute("COMMIT")
        except BaseException:
            try:
                con.execute("ROLLBACK")
            except duckdb.Error:
                pass  # a failed COMMIT has rolled back already
            raise
        landed = con.execute("SELECT commit_extra_info FROM lake.snapshots() WHERE snapshot_id = ?", [version]).fetchall()
        if not landed or json.loads(landed[0][0] or "{}").get("run_id") != run_id:
            # Cannot happen with DuckLake's own retry off; a loud stop if it ever does.
            raise LakeError(f"the commit of run {run_id} to {self.root.name} did not land as snapshot {version}, so its "
                            f"versions row is wrong. Report this; `flow versions {self.root.name}` shows what landed")
        return Commit(version, added, removed)

    def _ensure_tables(self) -> None:
        existing = set(self.tables())
        for table_name, (old_name, columns) in RENAMED.items():
            if old_name in existing and table_name not in existing:
                self._con.execute(f"ALTER TABLE lake.{old_name} RENAME TO {table_name}")
                for old_column, new_column in columns.items():
                    self._con.execute(f"ALTER TABLE lake.{table_name} RENAME COLUMN {old_column} TO {new_column}")
                existing = (existing - {old_name}) | {table_name}
        for table_name, spec in TABLES.items():
            if table_name not in existing:
                self._con.register("_empty", spec.schema.empty_table())
                self._con.execute(f"CREATE TABLE lake.{table_name} AS SELECT * FROM _empty")
                self._con.unregister("_empty")
                continue
            have = {r[0] for r in self._con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE database_name='lake' AND table_name=?", [table_name]).fetchall()}
            for field in spec.schema:
                if field.name not in have:  # schema evolution: new columns are added, never dropped
                    duck_type = _duckdb_type(field.type)
                    self._con.execute(f"ALTER TABLE lake.{table_name} ADD COLUMN {field.name} {duck_type}")
        for view, body in VIEWS.items():
            self._con.execute(f"CREATE OR REPLACE VIEW lake.{view} AS {body}")

    def _upsert(self, table_name: str, rows: pa.Table) -> tuple[int, int]:
        spec = TABLES[table_name]
        rows = rows.select(spec.schema.names).cast(spec.schema)
        id_col = spec.id_column
        self._con.register("_staged", rows)
        try:
            # A row whose id exists with other content is a new version of that thing: replace it.
            removed = self._con.execute(f"""
                DELETE FROM lake.{table_name} WHERE {id_col} IN (
                    SELECT s.{id_col} FROM _staged s JOIN lake.{table_name} l USING ({id_col})
                    WHERE s.row_hash IS DISTINCT FROM l.row_hash)""").fetchone()[0]
            columns = ", ".join(spec.schema.names)
            added = self._con.execute(f"""
                INSERT INTO lake.{table_name} ({columns})
                SELECT {columns} FROM _staged s
                WHERE NOT EXISTS (SELECT 1 FROM lake.{table_name} l WHERE l.{id_col} = s.{id_col})""").fetchone()[0]
        finally:
            self._con.unregister("_staged")
        return int(added), int(removed)

    def _append(self, table_name: str, rows: pa.Table) -> None:
        spec = TABLES[table_name]
        self._con.register("_staged", rows.select(spec.schema.names).cast(spec.schema))
        columns = ", ".join(spec.schema.names)  # by name: a table that gained columns has them at its end
        try:
            self._con.execute(f"INSERT INTO lake.{table_name} ({columns}) SELECT {columns} FROM _staged")
        finally:
            self._con.unregister("_staged")

    def _check_schema_version(self) -> None:
        rows = self._con.execute(
            "SELECT commit_extra_info FROM lake.snapshots() WHERE commit_extra_info IS NOT NULL ORDER BY snapshot_id DESC LIMIT 1").fetchall()
        if rows and rows[0][0]:
            written = json.loads(rows[0][0]).get("schema_version", 0)
            if written > SCHEMA_VERSION:
                raise LakeError(f"{self.root} was written with schema version {written}; this thinkmill reads up to "
                                f"{SCHEMA_VERSION}. Upgrade thinkmill (pip install -U thinkmill).")


def diff_sql(before: str, after: str) -> str:
    """Ids added, removed and changed between two row sets, each an SQL query with columns (id, row_hash)."""
    return f"""
        SELECT CASE WHEN b.id IS NULL THEN 'added' WHEN a.id IS NULL THEN 'removed' ELSE 'changed' END AS change,
               coalesce(a.id, b.id) AS id
        FROM ({before}) b FULL OUTER JOIN ({after}) a ON a.id = b.id
        WHERE b.id IS NULL OR a.id IS NULL OR a.row_hash IS DISTINCT FROM b.row_hash
        ORDER BY 2"""


def _overtaken(error: Exception) -> bool:
    """Whether a failed commit lost a race with another writer (worth redoing), rather than being wrong.

    PostgreSQL catalog: DuckLake's commit fails once it finds a newer snapshot (its retries are off).
    SQLite catalog: a writer's open transaction locks the file, so the other one's statements fail with
    "database is locked" until it is done.
    """
    text = str(error)
    return "maximum retry count" in text or "database is locked" in text or (
        isinstance(error, duckdb.TransactionException) and "conflict" in text.lower())


def _duckdb_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_list(arrow_type):
        return _duckdb_type(arrow_type.value_type) + "[]"
    return {pa.string(): "VARCHAR", pa.int64(): "BIGINT", pa.float64(): "DOUBLE", pa.bool_(): "BOOLEAN",
            pa.binary(): "BLOB", pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ"}[arrow_type]
