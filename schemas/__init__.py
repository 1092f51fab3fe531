"""The record types of thinkmill: one Arrow schema + one pydantic model per table.

This package imports nothing of ours; everyone else imports it.
"""

from schemas import (assets, captions, cots, difficulty, loop_rounds, mixtures, policies, questions, rejects, rollouts, runs,
                     splits, verdicts)
from schemas.base import LINEAGE_COLUMNS, SCHEMA_VERSION, Table, content_columns, make_id

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        assets.TABLE,
        captions.TABLE,
        questions.TABLE,
        cots.TABLE,
        verdicts.TABLE,
        splits.TABLE,       # which questions are held out (the `holdout` stage)
        rollouts.TABLE,
        difficulty.TABLE,
        mixtures.TABLE,
        policies.TABLE,
        rejects.TABLE,
        runs.VERSIONS,
        runs.STAGE_STATS,
        loop_rounds.TABLE,  # what each round of a loop run did
    )
}

# Tables a run appends to (one row per run); every other table is keyed by content and upserted.
RUN_TABLES = ("versions", "stage_stats", "loop_rounds")

__all__ = ["TABLES", "RUN_TABLES", "SCHEMA_VERSION", "LINEAGE_COLUMNS", "Table", "content_columns", "make_id"]
