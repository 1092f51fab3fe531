"""cots: one row per reasoning trace of a question (raw, refined, pseudo, bridge, bridged)."""

from typing import Literal

from pydantic import Field

from schemas.base import ModelLineage, table


class Cot(ModelLineage):
    """A chain of thought for a question and the final answer it reaches.

    Kinds: raw and refined (distill_cot); pseudo (an MLLM's caption-plus-reasoning), bridge (the textual
    description written from it) and bridged (the text reasoner's chain from that description), from bridge_cot.
    """

    cot_id: str
    question_id: str
    kind: Literal["raw", "refined", "pseudo", "bridge", "bridged"]
    text: str
    final_answer: str | None = Field(None, description="answer extracted from the trace; None if it has none")
    n_tokens: int = Field(description="whitespace-separated tokens in `text`")
    reflections: int = Field(description="'Wait'-type self-corrections in `text` (Vision-R1's reflection count)")


TABLE = table("cots", Cot, "cot_id")
