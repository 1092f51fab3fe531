"""versions and stage_counts: what each committed recipe run was, and what every stage did in it."""

from datetime import datetime

from pydantic import Field

from schemas.base import Row, table


class Version(Row):
    """A named dataset version: one DuckLake snapshot written by one recipe run."""

    version: int = Field(description="the DuckLake snapshot id; use it in `AT (VERSION => n)`")
    name: str
    run_id: str
    recipe: str
    config_hash: str
    config: str = Field(description="JSON: the resolved recipe")
    counts: str = Field(description="JSON: rows added / removed per table by this run")
    created_at: datetime


class StageCount(Row):
    """Items in, kept and rejected by one stage in one run: in = kept + rejected, always."""

    stage_count_id: str
    run_id: str
    step_index: int
    stage: str
    stage_version: int
    unit: str = Field(description="what an item is for this stage, e.g. asset, question")
    n_in: int
    n_out: int
    n_rejected: int
    rejected_by_reason: str = Field(description="JSON: reason slug -> count")
    n_shards: int
    n_shards_cached: int
    wall_s: float


VERSIONS = table("versions", Version, "version")
STAGE_COUNTS = table("stage_counts", StageCount, "stage_count_id")
