"""difficulty: group statistics of each question's rollouts, per policy: how hard is it *for that policy*.

Per (question, policy), over the group sampled with the image: n, pass rate p (share judged
correct: accuracy, never the format-weighted reward), n_correct, reward spread, learnability
p·(1−p) (largest for questions solved half the time), the majority answer and its share of the
group, and the semantic entropy over answer clusters (MM-UPT's diagnostic: 0 when every sample says
the same thing). Answers are clustered by equivalence with the verifiers of the question's answer
type ("7", "7.0" and "seven" are one number), not by string equality; samples with no answer form
one cluster of their own for the entropy and can never be the majority. The same counts for the
group with the image removed (`*_text_only`), and the difference of the two pass rates, the causal
discrepancy RAP filters on (a question answerable from language priors has a gap near 0). A group
with fewer than `min_rollouts` scored answers is rejected (`difficulty.too_few_rollouts`): a pass
rate over two samples is noise.
"""

import math
import statistics

import pyarrow as pa

from pipelines.mmupt import majority_vote
from pipelines.stage import StageContext, StageResult, stage
from pipelines.verification import answer_clusters
from schemas import make_id


@stage(reads={"questions": ["question_id", "answer_type", "choices"],
              "rollouts": ["question_id", "policy_id", "with_image", "correct", "reward", "extracted"]},
       writes="difficulty", version=2, unit="question")  # 2: n_correct, majority answer, semantic entropy, text-only spread
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
    for question in questions.to_pylist():
        question_id = question["question_id"]
        answer_type, choices = question.get("answer_type") or "fib", tuple(question.get("choices") or ())
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
            summary = group_summary(with_image, answer_type, choices)
            text_only = group_summary(group["text"], answer_type, choices) if group["text"] else {}
            scored.append({"difficulty_id": make_id("difficulty", question_id, policy_id, "group_stats"), "question_id": question_id,
                           "policy_id": policy_id, "method": "group_stats", **summary,
                           "pass_rate_text_only": text_only.get("pass_rate"), "n_rollouts_text_only": text_only.get("n_rollouts"),
                           "reward_std_text_only": text_only.get("reward_std"),
                           "cde_gap": summary["pass_rate"] - text_only["pass_rate"] if text_only else None})
        for policy_id, detail in too_small:
            # The group is what was refused; the question is rejected only if no policy scored it.
            rejects.append(ctx.reject(make_id("group_stats", question_id, policy_id), f"{ctx.stage}.too_few_rollouts",
                                      detail, input_id=question_id))
        rows += scored
    return rows, rejects


def group_summary(group: list[dict], answer_type: str, choices: tuple = ()) -> dict:
    """The statistics of one group of rollout rows (`correct`, `reward`, `extracted` each), as difficulty columns."""
    correct = [bool(r["correct"]) for r in group]
    answers = [r.get("extracted") for r in group]
    clusters = answer_clusters(answers, answer_type, choices=choices)
    n_unanswered = sum(a is None for a in answers)
    majority, fraction = majority_vote(answers, answer_type, choices)
    rate = pass_rate(correct)
    return {"n_rollouts": len(group), "pass_rate": rate, "n_correct": sum(correct),
            "reward_std": reward_std([r["reward"] for r in group]), "learnability": learnability(rate),
            "majority_answer": majority, "majority_fraction": fraction,
            "semantic_entropy": semantic_entropy([len(c) for c in clusters] + ([n_unanswered] if n_unanswered else []))}


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


def semantic_entropy(cluster_sizes: list[int]) -> float:
    """H = −Σ_c (|c|/G) ln(|c|/G) over answer clusters of a group of G = Σ|c| samples, in nats.

    0 when the whole group agrees; ln(G) when every sample says something different.

    >>> semantic_entropy([8]), round(semantic_entropy([4, 4]), 4), round(semantic_entropy([1, 1, 1, 1]), 4)
    (0.0, 0.6931, 1.3863)
    """
    total = sum(cluster_sizes)
    return -sum(size / total * math.log(size / total) for size in cluster_sizes if size) + 0.0  # no -0.0

