"""The stage contract: a stage is a function from Arrow tables to kept rows + rejects.

    @stage(reads={"assets": ["asset_id", "media_uri"]}, writes="captions", version=1, unit="asset")
    def caption(assets: pa.Table, ctx: StageContext, *, styles: list[str] = ["coarse", "fine"]) -> StageResult

- `reads` names the tables the stage takes, in argument order, with the columns it needs (checked
  before it runs). The first one is its *subject*: its rows are the stage's items, counted in.
- `writes` is the table its output rows go to. Every output row names the item it came from in the
  subject's id column (`asset_id` for caption, `question_id` for verify, ...).
- Every subject item ends up kept or rejected, never neither: the flow checks
  `n_in == n_out + n_rejected` and stops otherwise. An item is *rejected* when a reject row names it
  (`subject_id == input_id == item`), or when nothing in `out` came from it and some reject row has
  it as `input_id` (e.g. every candidate question of an image was refused). It is *kept* when
  rows in `out` came from it and it was not rejected. A reject of a finer thing (a candidate
  question of an image that still got others) records `subject_id` = that thing and `input_id` =
  the item, and does not reject the item.
- Video frames are not items. They are `assets` rows with a `parent_asset_id` (ingest writes them
  as outputs of the video's source item); in a stage whose subject is `assets` they come in the
  subject table next to their video, to be shown with it, and are not counted in, kept or rejected:
  they stay live exactly as long as their video (`kept_ids`).
- `engines` names the model roles the stage calls; their identity is part of its cache key.
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
    engines: tuple[str, ...]
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
          engines: tuple[str, ...] = (), sharded: bool = True, resources: dict | None = None):
    """Declare a stage. `version`: bump when the same input would now give a different output."""

    def register(fn: Callable) -> StageSpec:
        doc = inspect.getdoc(inspect.getmodule(fn)) or ""
        return StageSpec(fn.__name__, fn, reads, writes, version, unit or next(iter(reads)).rstrip("s"),
                         tuple(engines), sharded, resources or {"cpu": 1}, doc)

    return register


@dataclass
class StageResult:
    """What a stage returns: rows for its table, one reject per refused item, and side tables.

    `kept` is for stages whose output rows do not name their input items one by one (grpo writes
    one policy from many questions): the ids of the items it used. Leave it None otherwise.
    """

    out: pa.Table
    rejects: pa.Table
    side: dict[str, pa.Table] = field(default_factory=dict)
    kept: list[str] | None = None


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

    Anything neither kept nor rejected, or a reject for an item that was not in the input, is a bug
    in the stage: `AccountingError`.
    """
    in_set, kept, rejected = _classify(spec, subject, result)
    lost = sorted(in_set - kept - rejected)
    inputs = result.rejects.column("input_id").to_pylist()
    invented = sorted(set(inputs) - in_set)
    if lost or invented:
        raise AccountingError(spec.name, len(in_set), len(kept), len(rejected),
                              lost + [f"reject for an item not in the input: {i}" for i in invented])
    subjects = result.rejects.column("subject_id").to_pylist()
    first_reason: dict[str, str] = {}  # an item can fail several checks: count one reason per item
    for input_id, subject_id, reason in zip(inputs, subjects, result.rejects.column("reason").to_pylist()):
        if input_id in rejected and (subject_id == input_id or input_id not in first_reason):
            first_reason.setdefault(input_id, reason)
    return Accounting(len(in_set), len(kept), len(rejected), dict(Counter(first_reason.values())))


def kept_ids(spec: StageSpec, subject: pa.Table, result: StageResult) -> list[str]:
    """Subject ids passed on to later stages, in input order: the kept items, then the frames of kept videos."""
    _, kept, _ = _classify(spec, subject, result)
    ids = subject.column(spec.key).to_pylist()
    frames = [i for i, parent in zip(ids, parents(subject)) if parent is not None and parent in kept]
    return list(dict.fromkeys([i for i in item_ids(spec, subject) if i in kept] + frames))


def item_ids(spec: StageSpec, subject: pa.Table) -> list[str]:
    """The subject's items in order: every row's id, except video frames (rows with a parent asset)."""
    return [i for i, parent in zip(subject.column(spec.key).to_pylist(), parents(subject)) if parent is None]


def parents(subject: pa.Table) -> list[str | None]:
    """Each row's `parent_asset_id` (None for tables without one): set on video frames only."""
    if "parent_asset_id" in subject.schema.names:
        return subject.column("parent_asset_id").to_pylist()
    return [None] * subject.num_rows


def _classify(spec: StageSpec, subject: pa.Table, result: StageResult) -> tuple[set, set, set]:
    in_set = set(item_ids(spec, subject))
    subjects = result.rejects.column("subject_id").to_pylist()
    inputs = result.rejects.column("input_id").to_pylist()
    produced = set(result.kept) if result.kept is not None else output_input_ids(spec, result.out)
    item_rejects = {i for s, i in zip(subjects, inputs) if s == i}
    rejected = in_set & (item_rejects | (set(inputs) - produced))
    kept = (in_set & produced) - rejected
    return in_set, kept, rejected


def output_input_ids(spec: StageSpec, out: pa.Table) -> set[str]:
    """The subject ids that the output rows came from."""
    if spec.key in out.schema.names:
        return set(out.column(spec.key).to_pylist())
    if spec.key == "asset_id" and "asset_ids" in out.schema.names:  # questions name their assets
        return {a for ids in out.column("asset_ids").to_pylist() for a in ids}
    raise SchemaMismatch(spec.name, spec.writes, [spec.key], out.schema.names)
