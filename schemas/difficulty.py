"""difficulty: one row per (question, policy, method): how hard a question is *for a policy*."""

from pydantic import Field

from schemas.base import Lineage, table


class Difficulty(Lineage):
    """Difficulty of a question for one policy by one method, and whether a selector kept it."""

    difficulty_id: str
    question_id: str
    policy_id: str
    method: str = Field(description="group_stats, mcts, rap")
    n_rollouts: int | None = None
    pass_rate: float | None = Field(None, ge=0, le=1, description="share of rollouts with the image judged correct")
    reward_std: float | None = Field(None, ge=0, description="population std of rewards in the group")
    learnability: float | None = Field(None, ge=0, le=0.25, description="pass_rate * (1 - pass_rate)")
    pass_rate_text_only: float | None = Field(None, ge=0, le=1, description="same group, image removed")
    cde_gap: float | None = Field(None, description="pass_rate - pass_rate_text_only (RAP's causal discrepancy)")
    n_correct: int | None = Field(None, ge=0, description="rollouts with the image judged correct")
    majority_answer: str | None = Field(None, description="most frequent extracted answer (with the image)")
    majority_fraction: float | None = Field(None, ge=0, le=1, description="share of the group giving it")
    semantic_entropy: float | None = Field(None, ge=0, description="-sum p_c log p_c over answer clusters (MM-UPT)")
    n_rollouts_text_only: int | None = None
    reward_std_text_only: float | None = Field(None, ge=0)
    mcts_iters: int | None = Field(None, description="MCTS iterations to first solve; None if unsolved")
    mcts_path: str | None = Field(None, description="JSON: the solving path's steps (MCTS), None if unsolved")
    ace: float | None = Field(None, description="RAP attention confidence (log space); None where not computed")
    weight: float | None = Field(None, ge=0, description="sampling weight a selector gave (e.g. MMR1's p(1-p))")
    detail: str | None = Field(None, description="JSON: method-specific facts (parameters, mode, skipped-because)")
    selected: bool | None = Field(None, description="set by `select`; None until a selector ran")
    reason: str | None = Field(None, description="selector and rule that decided `selected`")


TABLE = table("difficulty", Difficulty, "difficulty_id")
