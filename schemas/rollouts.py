"""rollouts: one row per sampled answer of a policy to a question (with or without the image)."""

from pydantic import Field

from schemas.base import ModelLineage, table


class Rollout(ModelLineage):
    """One of the G answers a policy gave to a question; `group_id` ties the G together."""

    rollout_id: str
    question_id: str
    policy_id: str
    group_id: str = Field(description="hash of (question, policy, with_image, sampling params)")
    sample_index: int
    with_image: bool
    response: str
    extracted: str | None = Field(None, description="answer extracted from the response; None if none was found")
    correct: bool
    format_ok: bool = Field(description="response follows <think>…</think><answer>…</answer>")
    reward: float


TABLE = table("rollouts", Rollout, "rollout_id")
