"""splits: one row per question: is it for training, or held out to measure policies on?"""

from typing import Literal

from pydantic import Field

from schemas.base import Lineage, table

SPLITS = ("train", "held_out")


class Split(Lineage):
    """A question's split. Held-out questions are never selected or trained on; every policy is scored on them."""

    split_id: str = Field(description="one per question: a question's split never changes once written")
    question_id: str
    split: Literal["train", "held_out"]
    held_out_share: float = Field(ge=0, le=1, description="the share asked for when this question was assigned")
    seed: int


TABLE = table("splits", Split, "split_id")
