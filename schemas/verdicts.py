"""verdicts: one row per (subject, verifier): did a CoT or answer check out, and by which verifier."""

from pydantic import Field

from schemas.base import ModelLineage, table


class Verdict(ModelLineage):
    """The outcome of one verifier on one subject (a CoT's final answer, a rollout, a question)."""

    verdict_id: str
    subject_id: str
    question_id: str
    verifier: str = Field(description="math_verify, choice_letter, numeric, exact_text, judge")
    passed: bool
    score: float = Field(ge=0, le=1)
    detail: str = ""


TABLE = table("verdicts", Verdict, "verdict_id")
