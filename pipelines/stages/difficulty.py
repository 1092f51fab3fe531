"""difficulty: group statistics of each question's rollouts, per policy: how hard is it *for that policy*.

Per (question, policy): pass rate and reward spread of the group with the image, learnability
p·(1−p) (largest for questions solved half the time), the pass rate with the image removed, and
their difference, the causal discrepancy RAP filters on (a question answerable from language priors
has a gap near 0). A group with fewer than `min_rollouts` scored answers is rejected
(`difficulty.too_few_rollouts`): a pass rate over two samples is noise.
"""

import statistics

import pyarrow as pa

from pipelines.stage import StageContext, StageResult, stage
from schemas import make_id


@stage(reads={"questions": ["question_id"], "rollouts": ["question_id", "policy_id", "with_image", "correct", "reward"]},
       writes="difficulty", version=1, unit="question")
def difficulty(questions: pa.Table, rollouts: pa.Table, ctx: StageContext, *, min_rollouts: int = 4) -> StageResult:
    """`min_rollouts`: smallest group (with the image) that gets a score."""
    out, rejects = group_statistics(questions, rollouts, ctx, min_rollouts=min_rollouts)
    return StageResult(ctx.rows("difficulty", out), ctx.rejects(rejects))


def group_statistics(questions: pa.Table, rollouts: pa.Table, ctx: StageContext, *, min_rollouts: int) -> tuple[list, list]:
    """Difficulty rows and rejects per question (shared with `rescore`, whose slugs it then carries)."""
    groups: dict[tuple, dict] = {}
    for r in rollouts.to_pylist():
        group = groups.setdefault((r["question_id"], r["policy_id"]), {"image": [], "text": []})
        group["image" if r["with_image"] else "text"].append(r)
    rows, rejects = [], []
    for question_id in questions.column("question_id").to_pylist():
        policies = sorted(p for q, p in groups if q == question_id)
        if not policies:
            rejects.append(ctx.reject(question_id, f"{ctx.stage}.too_few_rollouts", "no rollouts for this question"))
        scored, too_small = [], []
        for policy_id in policies:
            group = groups[(question_id, policy_id)]
            with_image = group["image"]
            if len(with_image) < min_rollouts:
                too_small.append((policy_id, f"{len(with_image)} rollouts with the image for {policy_id}; need {min_rollouts}"))
                continue
            rate = pass_rate([r["correct"] for r in with_image])
            text_rate = pass_rate([r["correct"] for r in group["text"]]) if group["text"] else None
            scored.append({"difficulty_id": make_id("difficulty", question_id, policy_id, "group_stats"), "question_id": question_id,
                           "policy_id": policy_id, "method": "group_stats", "n_rollouts": len(with_image), "pass_rate": rate,
                           "reward_std": reward_std([r["reward"] for r in with_image]), "learnability": learnability(rate),
                           "pass_rate_text_only": text_rate, "cde_gap": None if text_rate is None else rate - text_rate})
        for policy_id, detail in too_small:
            # The group is what was refused; the question is rejected only if no policy scored it.
            rejects.append(ctx.reject(make_id("group_stats", question_id, policy_id), f"{ctx.stage}.too_few_rollouts",
                                      detail, input_id=question_id))
        rows += scored
    return rows, rejects


def pass_rate(correct: list[bool]) -> float:
    """Share of correct answers.

    >>> pass_rate([True, False, True, True])
    0.75
    """
    return sum(map(bool, correct)) / len(correct)


def reward_std(rewards: list[float]) -> float:
    """Population standard deviation of a group's rewards (0 when every answer scored the same).

    >>> reward_std([1.0, 1.0, 1.0])
    0.0
    """
    return statistics.pstdev(rewards) if len(rewards) > 1 else 0.0


def learnability(pass_rate: float) -> float:
    """p·(1−p): largest at p = 0.5, zero for questions always or never solved.

    >>> learnability(0.5), learnability(1.0)
    (0.25, 0.0)
    """
    return pass_rate * (1 - pass_rate)
