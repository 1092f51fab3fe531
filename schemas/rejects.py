"""rejects: one row per thing a stage refused, with a stable reason slug. Nothing is lost silently."""

from pydantic import Field

from schemas.base import Lineage, table


class Reject(Lineage):
    """An input a stage did not pass on (or a finer item it dropped), and why."""

    reject_id: str = Field(description="hash of (stage, subject_id, reason)")
    subject_id: str = Field(description="what was refused: an asset, a candidate question, a CoT, ...")
    input_id: str = Field(description="the stage input item it came from (equals subject_id for most stages)")
    reason: str = Field(description="'<stage>.<slug>', stable once shipped: GROUP BY it")
    detail: str = Field(description="for people: what exactly was wrong")
    raw: str | None = Field(None, description="the raw model output or source reference, when there is one")


TABLE = table("rejects", Reject, "reject_id")
