"""rescore: the newly trained policy re-runs the rollouts, and its difficulty rows are written.

This closes the loop: after `grpo`, the policy it trained samples G answers per question (with and
without the image) and each question gets a `difficulty` row for the *new* policy id next to the
old one's, so the next `select` can re-select for the policy that trains next. Uses the newest
policy of kind `policy_kind` written in this run (or the lake). Which questions (`subset`):
- `all` (default): every question handed to the step, so the next round can select from all of them;
- `selected`: the questions selected for training, plus every held-out one (`splits`), so the new
  policy is still measured; cheaper, and each round then narrows to what the last one trained on;
- anything else is a DuckDB condition over the questions' columns, e.g. `category = 'counting'` or
  `answer_type IN ('mc', 'num')`; held-out questions are again always included.
A question outside the subset is rejected as `rescore.not_in_subset` (it was not re-scored), and
questions are rejected when there is no such policy (`rescore.no_policy`) or the group could not
be generated (as in `rollouts`).
"""

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.stage import StageContext, StageResult, stage
from pipelines.stages.difficulty import group_statistics
from pipelines.stages.rollouts import sample_and_score


@stage(reads={"questions": ["question_id", "question", "answer", "answer_type", "choices", "asset_ids"],
              "assets": ["asset_id", "kind", "media_uri", "sha256", "scene", "parent_asset_id", "frame_ts"], "policies": ["policy_id", "kind", "path"],
              "difficulty": ["question_id", "selected"], "splits": ["question_id", "split"]},
       writes="rollouts", version=3, unit="question", engines=("policy", "judge"))  # 2: new group statistics; 3: subset
def rescore(questions: pa.Table, assets: pa.Table, policies: pa.Table, difficulty: pa.Table, splits: pa.Table, ctx: StageContext, *,
            group_size: int = 8, with_image: list[bool] = [True, False], temperature: float = 1.0, top_p: float = 1.0,
            max_tokens: int = 48, reward: str = "wethink", min_rollouts: int = 4, policy_kind: str = "grpo",
            subset: str = "all") -> StageResult:
    """`policy_kind`: which trained policy re-scores (the newest of that kind); `subset`: all, selected or a condition."""
    wanted = subset_ids(questions, difficulty, splits, subset)
    outside = [ctx.reject(q, "rescore.not_in_subset", f"not re-scored: outside subset {subset!r}")
               for q in questions.column("question_id").to_pylist() if q not in wanted]
    questions = questions.filter(pc.is_in(questions.column("question_id"), value_set=pa.array(sorted(wanted), type=pa.string())))
    candidates = [p for p in policies.to_pylist() if p["kind"] == policy_kind]
    if not candidates:
        rejects = [ctx.reject(q, "rescore.no_policy", f"no policy of kind {policy_kind!r} to re-score with (did a grpo step run?)")
                   for q in questions.column("question_id").to_pylist()]
        return StageResult(ctx.empty("rollouts"), ctx.rejects(outside + rejects))
    policy = ctx.engines.engine_for_model(candidates[-1]["path"])
    rows, rejects = sample_and_score(policy, questions, assets, ctx, group_size=group_size, with_image=with_image,
                                     temperature=temperature, top_p=top_p, max_tokens=max_tokens, reward=reward)
    rollouts = ctx.rows("rollouts", rows)
    rejected = {r["input_id"] for r in rejects}
    scored = questions.filter(pc.invert(pc.is_in(questions.column("question_id"), value_set=pa.array(sorted(rejected), type=pa.string()))))
    difficulty_rows, difficulty_rejects = group_statistics(scored, rollouts, ctx, min_rollouts=min_rollouts)
    return StageResult(rollouts, ctx.rejects(outside + rejects + difficulty_rejects),
                       side={"difficulty": ctx.rows("difficulty", difficulty_rows)})


def subset_ids(questions: pa.Table, difficulty: pa.Table, splits: pa.Table, subset: str) -> set[str]:
    """Ids of the questions `subset` names (see the module doc); held-out questions always belong."""
    ids = set(questions.column("question_id").to_pylist())
    if subset == "all":
        return ids
    held_out = {r["question_id"] for r in splits.to_pylist() if r["split"] == "held_out"}
    if subset == "selected":
        chosen = {r["question_id"] for r in difficulty.to_pylist() if r["selected"]}
    else:
        chosen = _matching(questions, subset)
    return ids & (chosen | held_out)


def _matching(questions: pa.Table, condition: str) -> set[str]:
    connection = duckdb.connect()
    try:
        connection.register("questions", questions)
        rows = connection.execute(f"SELECT question_id FROM questions WHERE {condition}").fetchall()
    except duckdb.Error as error:
        raise ValueError(f"rescore: subset {condition!r} is neither 'all', 'selected' nor a condition DuckDB can run over the "
                         f"questions ({str(error).splitlines()[0]}). Columns: {', '.join(questions.schema.names)}. "
                         "Example: --set \"rescore.subset=category = 'counting'\"") from None
    finally:
        connection.close()
    return {row[0] for row in rows}
