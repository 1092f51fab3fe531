"""versions and stage_stats: what each committed recipe run was, and what every stage did in it.

`stage_stats` was `stage_counts` up to schema version 4 (in, kept, rejected, shards, wall time); version 5
renamed it and added the model calls and tokens. A dataset written before keeps its runs readable:
the first commit with this code renames the table in place (old rows get NULL calls and tokens: not
recorded), and until then the lake reads `stage_counts` as `stage_stats` (see stores/lake.py RENAMED).
Time travel to a version older than the rename reads the old name: `stage_counts AT (VERSION => n)`.
"""

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


class StageStats(Row):
    """What one stage did in one run: items in, kept and rejected (in = kept + rejected, always), model calls, tokens, time."""

    stage_stats_id: str
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
    # Model calls of the shards this run computed (a shard Prefect answered from its task cache makes none).
    # None on rows written before schema version 5, which did not record them.
    n_calls_made: int | None = Field(None, description="calls sent to a model (paid)")
    n_calls_cached: int | None = Field(None, description="requests answered from the call cache instead")
    prompt_tokens: int | None = Field(None, description="prompt tokens of the calls made, as the engines report them")
    completion_tokens: int | None = Field(None, description="completion tokens of the calls made")
    wall_s: float


VERSIONS = table("versions", Version, "version")
STAGE_STATS = table("stage_stats", StageStats, "stage_stats_id")
