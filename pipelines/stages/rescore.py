"""rescore: the newly trained policy re-runs the rollouts, and its difficulty rows are written.

This closes the loop: after `grpo`, the policy it trained samples G answers per question (with and
without the image) and each question gets a `difficulty` row for the *new* policy id next to the
base policy's, so a later `select` can re-select for the policy that will train next. Uses the
newest policy of kind `policy_kind` written in this run (or the lake). Questions are rejected
when there is no such policy (`rescore.no_policy`) or the group could not be generated.
"""

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.stage import StageContext, StageResult, stage
from pipelines.stages.difficulty import group_statistics
from pipelines.stages.rollouts import sample_and_score


@stage(reads={"questions": ["question_id", "question", "answer", "answer_type", "choices", "asset_ids"],
              "assets": ["asset_id", "kind", "media_uri", "sha256", "scene", "parent_asset_id", "frame_ts"], "policies": ["policy_id", "kind", "path"]},
       writes="rollouts", version=2, unit="question", engines=("policy", "judge"))  # 2: difficulty's new group statistics
def rescore(questions: pa.Table, assets: pa.Table, policies: pa.Table, ctx: StageContext, *, group_size: int = 8,
            with_image: list[bool] = [True, False], temperature: float = 1.0, top_p: float = 1.0, max_tokens: int = 48,
            reward: str = "wethink", min_rollouts: int = 4, policy_kind: str = "grpo") -> StageResult:
    """`policy_kind`: which trained policy re-scores (the newest of that kind)."""
    candidates = [p for p in policies.to_pylist() if p["kind"] == policy_kind]
    if not candidates:
        rejects = [ctx.reject(q, "rescore.no_policy", f"no policy of kind {policy_kind!r} to re-score with (did a grpo step run?)")
                   for q in questions.column("question_id").to_pylist()]
        return StageResult(ctx.empty("rollouts"), ctx.rejects(rejects))
    policy = ctx.engines.engine_for_model(candidates[-1]["path"])
    rows, rejects = sample_and_score(policy, questions, assets, ctx, group_size=group_size, with_image=with_image,
                                     temperature=temperature, top_p=top_p, max_tokens=max_tokens, reward=reward)
    rollouts = ctx.rows("rollouts", rows)
    rejected = {r["input_id"] for r in rejects}
    scored = questions.filter(pc.invert(pc.is_in(questions.column("question_id"), value_set=pa.array(sorted(rejected), type=pa.string()))))
    difficulty_rows, difficulty_rejects = group_statistics(scored, rollouts, ctx, min_rollouts=min_rollouts)
    return StageResult(rollouts, ctx.rejects(rejects + difficulty_rejects), side={"difficulty": ctx.rows("difficulty", difficulty_rows)})
