"""questions: one row per QA item (WeThink fields: problem, answer, category, abilities, reward route)."""

from typing import Literal

from pydantic import Field

from schemas.base import ModelLineage, table

ANSWER_TYPES = ("mc", "fib", "num", "des", "bbox")

# The declared ability taxonomy: a question must combine several of these (WeThink's
# ability-combination constraint). Recipes may narrow it; names are stable once shipped.
ABILITIES = {
    "counting": "count objects, possibly only those with some attribute",
    "attribute_recognition": "recognise colour, shape, size or material",
    "spatial_reasoning": "relate positions: left/right, above/below, nearest, inside",
    "arithmetic": "add, subtract, multiply or compare quantities",
    "comparison": "decide which is larger, smaller, more or fewer",
    "chart_reading": "read values, labels and axes of charts and plots",
    "ocr": "read text or numbers written in the image",
    "geometry": "reason about lengths, angles and areas",
    "world_knowledge": "use facts not shown in the image",
    "temporal_reasoning": "follow a video over time: what happened first, how often, what changed",
}
# Abilities only a video can exercise: not offered to question writers for a still image.
VIDEO_ABILITIES = ("temporal_reasoning",)


class Question(ModelLineage):
    """A question about one or more assets, with its reference answer and how to check it."""

    question_id: str = Field(description="hash of asset ids + question text")
    asset_ids: list[str]
    question: str
    answer: str = Field(description="reference answer: a letter for mc, a number for num, text otherwise")
    answer_type: Literal["mc", "fib", "num", "des", "bbox"]
    choices: list[str] = Field(default_factory=list, description="mc only: option texts, in letter order A, B, ...")
    category: str = Field(description="family or domain, e.g. counting, bar_chart")
    abilities: list[str] = Field(description="abilities the question combines, from the declared taxonomy")
    reward_route: Literal["rule", "model"] = Field(description="rule: checked by the verifiers; model: by the judge")
    generator: str = Field(description="model that wrote the question")


TABLE = table("questions", Question, "question_id")
