"""The tables of one run as it goes: every row written so far, and which items are still live.

A later stage reads the rows earlier stages wrote in this run (falling back to the lake for tables
the run has not written), restricted to the items still live: an item rejected by any stage is not
handed to the next. Writes replace rows with the same id (dedup annotates assets; select annotates
difficulty) and append the rest. `lake.<table>` reads mean "as committed before this run".
"""

import json

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.stage import SUBJECT_KEYS, StageSpec
from schemas import TABLES
from schemas.base import canonical_json, content_columns, sha256_text


class RunTables:
    def __init__(self, lake_reader):
        self._lake = lake_reader  # callable: table name -> pa.Table as committed before this run
        self.tables: dict[str, pa.Table] = {}
        self.live: dict[str, set[str]] = {}
        self._lake_cache: dict[str, pa.Table] = {}

    def lake_table(self, name: str) -> pa.Table:
        if name not in self._lake_cache:
            self._lake_cache[name] = with_row_hash(name, self._lake(name))
        return self._lake_cache[name]

    def put(self, name: str, rows: pa.Table) -> None:
        """Write rows: same id replaces, new ids append; newly written ids become live."""
        key = SUBJECT_KEYS[name]
        rows = first_per_id(rows, key)
        if name in self.tables:
            new_ids = pa.array(set(rows.column(key).to_pylist()), type=pa.string())
            keep = pc.invert(pc.is_in(self.tables[name].column(key), value_set=new_ids))
            rows = pa.concat_tables([self.tables[name].filter(keep), rows.cast(self.tables[name].schema)])
        self.tables[name] = rows
        self.live.setdefault(name, set()).update(rows.column(key).to_pylist())

    def read(self, name: str) -> pa.Table:
        """Rows of a table for a stage: this run's live rows, else the lake's."""
        if name.startswith("lake."):
            return self.lake_table(name.removeprefix("lake."))
        if name not in self.tables:
            return self.lake_table(name)
        table = self.tables[name]
        live = pa.array(sorted(self.live.get(name, ())), type=pa.string())
        return table.filter(pc.is_in(table.column(SUBJECT_KEYS[name]), value_set=live))

    def inputs(self, spec: StageSpec) -> dict[str, pa.Table]:
        tables = {name: self.read(name) for name in spec.reads}
        # `lake.<subject>` means the *other* committed items (dedup compares new assets with earlier
        # ones): leaving the subject's own ids out also keeps a re-run's cache key unchanged.
        own = f"lake.{spec.subject}"
        if own in tables:
            key = SUBJECT_KEYS[spec.subject]
            ids = tables[spec.subject].column(key)
            tables[own] = tables[own].filter(pc.invert(pc.is_in(tables[own].column(key), value_set=ids)))
        return tables

    def apply(self, spec: StageSpec, out: pa.Table, rejects: pa.Table, side: dict[str, pa.Table], kept: list[str]) -> None:
        """Record a stage's result: its rows, its rejects, and the subject items still live."""
        live_before = set(self.live.get(spec.writes, ()))
        self.put(spec.writes, out)
        for name, rows in side.items():
            self.put(name, rows)
        self.put("rejects", rejects)
        if spec.writes != spec.subject:
            # Items the stage created are live, next to those earlier steps left live in the same table
            # (difficulty gets group_stats, mcts and rap rows from three stages, and `select` judges them
            # together); the subject narrows to what the stage kept.
            self.live[spec.writes] = live_before | set(out.column(SUBJECT_KEYS[spec.writes]).to_pylist())
        self.live[spec.subject] = set(kept)
        self.live["rejects"] = set(self.tables["rejects"].column("reject_id").to_pylist())

    def for_lake(self) -> dict[str, pa.Table]:
        """Everything this run wrote to lake tables (all rows, live or not: rejected items stay visible)."""
        return {name: rows for name, rows in self.tables.items() if name in TABLES}


def first_per_id(rows: pa.Table, key: str) -> pa.Table:
    """One row per id. Ids are content addresses, so two rows with one id are the same thing (e.g. the
    same image bytes reached through two shards): the first one stands."""
    ids = rows.column(key).to_pylist()
    if len(set(ids)) == len(ids):
        return rows
    seen, keep = set(), []
    for index, value in enumerate(ids):
        if value not in seen:
            seen.add(value)
            keep.append(index)
    return rows.take(pa.array(keep, type=pa.int64()))


def related(table: pa.Table, shard: pa.Table) -> pa.Table:
    """The rows of `table` that belong to the items of `shard` (by question id, else asset id). Asset rows
    bring their video frames along (rows whose parent_asset_id is one of the ids): a video is shown by them."""
    for column in ("question_id", "asset_id"):
        ids = _ids(shard, column)
        if ids is not None and column in table.schema.names:
            value_set = pa.array(sorted(ids), type=pa.string())
            wanted = pc.is_in(table.column(column), value_set=value_set)
            if column == "asset_id" and "parent_asset_id" in table.schema.names:
                wanted = pc.or_(wanted, pc.fill_null(pc.is_in(table.column("parent_asset_id"), value_set=value_set), False))
            return table.filter(wanted)
    return table


def shards(subject: pa.Table, size: int) -> list[pa.Table]:
    """The subject cut into shards of `size` items. Video frames are not items (pipelines/stage.py): each
    rides in its video's shard, whatever its row position, and does not count towards `size`."""
    parents = subject.column("parent_asset_id").to_pylist() if "parent_asset_id" in subject.schema.names else []
    if not any(p is not None for p in parents):
        return [subject.slice(i, size) for i in range(0, subject.num_rows, size)] or [subject]
    ids = subject.column("asset_id").to_pylist()
    items = [k for k, parent in enumerate(parents) if parent is None]
    frames_of: dict[str, list[int]] = {}
    for k, parent in enumerate(parents):
        if parent is not None:
            frames_of.setdefault(parent, []).append(k)
    cut = []
    for start in range(0, len(items), size):
        rows = [k for item in items[start:start + size] for k in [item, *frames_of.get(ids[item], [])]]
        cut.append(subject.take(pa.array(rows, type=pa.int64())))
    return cut or [subject.slice(0, 0)]


def _ids(shard: pa.Table, column: str) -> set[str] | None:
    if column in shard.schema.names:
        return set(shard.column(column).to_pylist())
    if column == "asset_id" and "asset_ids" in shard.schema.names:
        return {a for ids in shard.column("asset_ids").to_pylist() for a in ids}
    return None


def with_row_hash(name: str, rows: pa.Table) -> pa.Table:
    """Fill `row_hash` (sha256 over the content columns) for tables that have one."""
    if name not in TABLES or "row_hash" not in rows.schema.names or rows.num_rows == 0:
        return rows
    columns = content_columns(TABLES[name].schema)
    present = [c for c in columns if c in rows.schema.names]
    values = rows.select(present).to_pylist()
    hashes = pa.array([sha256_text(canonical_json(v)) for v in values], type=pa.string())
    index = rows.schema.get_field_index("row_hash")
    # Keep the schema's field (not null): an empty shard's table, returned above, has it, and shards concatenate.
    return rows.set_column(index, rows.schema.field(index), hashes)


def table_fingerprint(name: str, rows: pa.Table) -> str:
    """Content identity of a table for cache keys: its rows' hashes (or fingerprints), order-free."""
    for column in ("row_hash", "fingerprint"):
        if column in rows.schema.names:
            return sha256_text(json.dumps(sorted(rows.column(column).to_pylist())))
    return sha256_text(json.dumps(sorted(map(str, rows.column(SUBJECT_KEYS[name]).to_pylist()))))
