"""loop_rounds: one row per round of a loop run (select → GRPO → re-score), written by the flow."""

from pydantic import Field

from schemas.base import Row, table


class LoopRound(Row):
    """Round r selected on the difficulty rows of `scored_by`, trained from it, and re-scored with `policy_id`."""

    loop_round_id: str
    run_id: str
    round: int = Field(ge=1, description="1 for the first round")
    scored_by: str = Field(description="policy whose difficulty rows this round selected on, and which it trained from")
    policy_id: str | None = Field(None, description="policy this round trained; None when it had nothing to train on")
    n_candidates: int = Field(description="difficulty rows of `scored_by` on training questions, handed to the round")
    n_selected: int
    n_trained: int = Field(description="selected items the GRPO step trained on")
    n_rescored: int = Field(description="questions the new policy re-ran rollouts on and scored")
    n_held_out: int = Field(description="questions set aside (splits), never handed to the round")
    step_indexes: list[int] = Field(description="the round's rows in stage_stats")
    note: str | None = None


TABLE = table("loop_rounds", LoopRound, "loop_round_id")
