"""The stage contract: a stage is a function from Arrow tables to kept rows + rejects.

    @stage(reads={"assets": ["asset_id", "media_uri"]}, writes="captions", version=1, unit="asset")
    def caption(assets: pa.Table, ctx: StageContext, *, styles: list[str] = ["coarse", "fine"]) -> StageResult

- `reads` names the tables the stage takes, in argument order, with the columns it needs (checked
  before it runs). The first one is its *subject*: its rows are the stage's items, counted in.
- `writes` is the table its output rows go to. Every output row names the item it came from in the
  subject's id column (`asset_id` for caption, `question_id` for verify, ...).
- Every subject item ends up kept (its id appears in `out`) or rejected (a reject row with that
  `input_id`), never neither: the flow checks `n_in == n_out + n_rejected` and stops otherwise.
- Parameters are keyword-only arguments with defaults and type hints: the recipe YAML and
  `--set stage.param=value` are validated against them.
- A stage never opens the lake; it gets models through `ctx.engine(role)`.
"""

import inspect
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

from schemas import TABLES, make_id
from schemas.errors import AccountingError, SchemaMismatch

# The input of `ingest` is not a lake table: it is what the sources yield.
SOURCE_ITEMS = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_ref", pa.string(), nullable=False),
        pa.field("path", pa.string()),  # a file to read, or None when `content` holds the bytes
        pa.field("content", pa.binary()),
        pa.field("scene", pa.string()),  # JSON scene graph of a synthetic image
        pa.field("fingerprint", pa.string(), nullable=False),  # cheap content identity for cache keys
    ]
)
SUBJECT_KEYS = {"source_items": "source_ref", **{name: t.id_column for name, t in TABLES.items()}}


@dataclass(frozen=True)
class StageSpec:
    """What the flow needs to know about a stage to place, shard, cache and check it."""

    name: str
    fn: Callable
    reads: dict[str, list[str]]
    writes: str
    version: int
    unit: str
    sharded: bool
    resources: dict
    doc: str

    @property
    def subject(self) -> str:
        return next(iter(self.reads))

    @property
    def key(self) -> str:
        return SUBJECT_KEYS[self.subject]

    @property
    def params(self) -> dict[str, inspect.Parameter]:
        sig = inspect.signature(self.fn)
        return {n: p for n, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}

    def check_columns(self, tables: dict[str, pa.Table]) -> None:
        for name, columns in self.reads.items():
            present = tables[name].schema.names
            missing = [c for c in columns if c not in present]
            if missing:
                raise SchemaMismatch(self.name, name, missing, present)

    def __call__(self, *args, **kwargs) -> "StageResult":
        return self.fn(*args, **kwargs)


def stage(*, reads: dict[str, list[str]], writes: str, version: int, unit: str | None = None,
          sharded: bool = True, resources: dict | None = None):
    """Declare a stage. `version`: bump when the same input would now give a different output."""

    def register(fn: Callable) -> StageSpec:
        doc = inspect.getdoc(inspect.getmodule(fn)) or ""
        return StageSpec(fn.__name__, fn, reads, writes, version, unit or next(iter(reads)).rstrip("s"),
                         sharded, resources or {"cpu": 1}, doc)

    return register


@dataclass
class StageResult:
    """What a stage returns: rows for its table, one reject per refused item, and side tables."""

    out: pa.Table
    rejects: pa.Table
    side: dict[str, pa.Table] = field(default_factory=dict)


@dataclass
class StageContext:
    """What a stage may use besides its tables: lineage, the dataset root, models, a seed, progress."""

    run_id: str
    stage: str
    stage_version: int
    config_hash: str
    root: Path
    engines: Any = None  # an object with .engine(role) -> Engine; see pipelines.engines.EngineRegistry
    seed: int = 0
    progress: Callable[[int], None] = lambda n: None  # call with the number of items just finished
    data_version: int | None = None  # the lake version the run started from

    def engine(self, role: str):
        return self.engines.engine(role)

    def media_path(self, media_uri: str) -> Path:
        return self.root / media_uri

    def lineage(self) -> dict:
        return {"run_id": self.run_id, "stage": self.stage, "stage_version": self.stage_version,
                "config_hash": self.config_hash, "row_hash": ""}

    def rows(self, table: str, rows: list[dict]) -> pa.Table:
        """An Arrow table of `table`'s schema from plain dicts, lineage filled in."""
        schema = TABLES[table].schema
        lineage = self.lineage()
        full = [{**{n: None for n in schema.names}, **lineage, **row} for row in rows]
        return pa.Table.from_pylist(full, schema=schema)

    def reject(self, subject_id: str, reason: str, detail: str, *, input_id: str | None = None,
               raw: str | None = None) -> dict:
        """One reject row. `reason` is '<stage>.<slug>'; `detail` says what was wrong, for people."""
        assert reason.startswith(f"{self.stage}."), f"reject reason {reason!r} must start with '{self.stage}.'"
        return {"reject_id": make_id("reject", self.stage, subject_id, reason), "subject_id": subject_id,
                "input_id": input_id or subject_id, "reason": reason, "detail": detail, "raw": raw}

    def rejects(self, rows: list[dict]) -> pa.Table:
        return self.rows("rejects", rows)

    def empty(self, table: str) -> pa.Table:
        return TABLES[table].schema.empty_table()


@dataclass
class Accounting:
    """Items in, kept and rejected by one stage over one shard."""

    n_in: int
    n_out: int
    n_rejected: int
    by_reason: dict[str, int]

    def __add__(self, other: "Accounting") -> "Accounting":
        return Accounting(self.n_in + other.n_in, self.n_out + other.n_out, self.n_rejected + other.n_rejected,
                          dict(Counter(self.by_reason) + Counter(other.by_reason)))

    def to_json(self) -> str:
        return json.dumps(self.by_reason, sort_keys=True)


def account(spec: StageSpec, subject: pa.Table, result: StageResult) -> Accounting:
    """Check that every subject item was kept or rejected, and count both.

    An item is rejected if any reject row names it as `input_id`; it is kept if the stage's output
    names it and it was not rejected. Anything else is a bug in the stage: `AccountingError`.
    """
    in_ids = subject.column(spec.key).to_pylist()
    in_set = set(in_ids)
    reject_inputs = result.rejects.column("input_id").to_pylist()
    rejected = in_set & set(reject_inputs)
    out_ids = output_input_ids(spec, result.out)
    kept = (in_set & out_ids) - rejected
    lost = sorted(in_set - kept - rejected)
    if lost:
        raise AccountingError(spec.name, len(in_set), len(kept), len(rejected), lost)
    invented = sorted(set(reject_inputs) - in_set)
    if invented:
        raise AccountingError(spec.name, len(in_set), len(kept), len(rejected),
                              [f"reject for an item not in the input: {i}" for i in invented])
    # Count each item's first reject reason (an item can fail several checks).
    first_reason: dict[str, str] = {}
    for input_id, reason in zip(reject_inputs, result.rejects.column("reason").to_pylist()):
        first_reason.setdefault(input_id, reason)
    return Accounting(len(in_set), len(kept), len(rejected), dict(Counter(first_reason.values())))


def output_input_ids(spec: StageSpec, out: pa.Table) -> set[str]:
    """The subject ids that the output rows came from."""
    if spec.key in out.schema.names:
        return set(out.column(spec.key).to_pylist())
    if spec.key == "asset_id" and "asset_ids" in out.schema.names:  # questions name their assets
        return {a for ids in out.column("asset_ids").to_pylist() for a in ids}
    if spec.key == "source_ref" and "source_ref" in out.schema.names:
        return set(out.column("source_ref").to_pylist())
    raise SchemaMismatch(spec.name, spec.writes, [spec.key], out.schema.names)


def kept_ids(spec: StageSpec, subject: pa.Table, result: StageResult) -> set[str]:
    """Subject ids passed on to later stages."""
    rejected = set(result.rejects.column("input_id").to_pylist())
    return (set(subject.column(spec.key).to_pylist()) & output_input_ids(spec, result.out)) - rejected
