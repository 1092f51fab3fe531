"""Shared pieces of every table: lineage columns, content-addressed ids, and pydantic → Arrow.

Each table module defines one pydantic model (the record type, used to validate and document a row)
and derives its Arrow schema from it with `arrow_schema`, so the two never drift. Every row carries
lineage (`run_id`, `stage`, `stage_version`, `config_hash`) and a `row_hash` over its content
columns: the lake uses the id to find "the same thing" and the row hash to see whether it changed.
"""

import hashlib
import json
import types
import typing
from datetime import datetime

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

# Bump when a table gains, loses or retypes a column. Stored in every catalog; a lake written by a
# newer schema refuses to open with an older thinkmill.
SCHEMA_VERSION = 5  # 2: assets gained phash_crops, phash_256, colour_histogram; 3: difficulty gained group, MCTS and RAP columns
# 4: mixtures gained detail
# 5: stage_counts became stage_stats, with model calls and tokens per stage

LINEAGE_COLUMNS = ("run_id", "stage", "stage_version", "config_hash", "row_hash")
MODEL_LINEAGE_COLUMNS = ("model", "model_revision", "prompt_version", "call_id")


class Row(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Lineage(Row):
    """Who wrote a row: the run, the stage (and its version) and the hash of the resolved recipe."""

    run_id: str
    stage: str
    stage_version: int
    config_hash: str
    row_hash: str = ""  # sha256 over the content columns (everything but lineage); filled at staging


class ModelLineage(Lineage):
    """Rows produced by a model also name the model, its revision, the prompt version and the call."""

    model: str | None = None
    model_revision: str | None = None
    prompt_version: str | None = None
    call_id: str | None = None


def make_id(kind: str, *parts) -> str:
    """Content-addressed id: `<kind>-` + the first 24 hex of sha256 over the canonical parts.

    >>> make_id("caption", "asset-1", "coarse") == make_id("caption", "asset-1", "coarse")
    True
    """
    return f"{kind}-{sha256_text(canonical_json(list(parts)))[:24]}"


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


_SCALARS = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_(), datetime: pa.timestamp("us", tz="UTC")}


def _arrow_type(annotation, where: str) -> tuple[pa.DataType, bool]:
    """(type, nullable) for a pydantic field annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"{where}: unions other than `X | None` cannot be stored ({annotation})")
        return _arrow_type(args[0], where)[0], True
    if origin is typing.Literal:
        return pa.string(), False
    if origin is list:
        (item,) = typing.get_args(annotation)
        return pa.list_(_arrow_type(item, where)[0]), False
    if origin is typing.Annotated:
        return _arrow_type(typing.get_args(annotation)[0], where)
    if annotation in _SCALARS:
        return _SCALARS[annotation], False
    if annotation is bytes:
        return pa.binary(), False
    raise TypeError(f"{where}: no Arrow type for {annotation!r}; store JSON as `str`")


def arrow_schema(model: type[BaseModel], *, metadata: dict | None = None) -> pa.Schema:
    """The Arrow schema of a record type: one field per model field, in declaration order."""
    # The entity's own columns first (id leading), lineage last: `SELECT *` reads naturally.
    lineage = set(LINEAGE_COLUMNS) | set(MODEL_LINEAGE_COLUMNS)
    names = sorted(model.model_fields, key=lambda n: n in lineage)
    fields = []
    for name in names:
        info = model.model_fields[name]
        arrow_type, nullable = _arrow_type(info.annotation, f"{model.__name__}.{name}")
        fields.append(pa.field(name, arrow_type, nullable=nullable or info.default is None))
    return pa.schema(fields, metadata={"schema_version": str(SCHEMA_VERSION), **(metadata or {})})


def content_columns(schema: pa.Schema) -> list[str]:
    """Columns whose values are the row's content (what `row_hash` covers): all but lineage."""
    skip = set(LINEAGE_COLUMNS) | {"call_id"}
    return [name for name in schema.names if name not in skip]


class Table(typing.NamedTuple):
    """A table of the lake: its name, record type, Arrow schema, id column and natural key."""

    name: str
    model: type[BaseModel]
    schema: pa.Schema
    id_column: str
    doc: str


def table(name: str, model: type[BaseModel], id_column: str) -> Table:
    doc = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""
    return Table(name, model, arrow_schema(model), id_column, doc)
