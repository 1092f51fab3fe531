"""The fidelity report's arms: does a short GRPO run on a selected subset beat one on a random subset?

For one policy and one dataset version (issue 4, part 6), the training questions (held-out ones never
train) are split into arms by the published selectors, and each arm trains a copy of the policy with
the same short GRPO run and is scored on the same held-out questions:

- `mcts`: ThinkLite-VL's selection, `mcts_hard` on the `mcts` rows (solved after more than 5
  iterations, or unsolved);
- `random`: as many questions as `mcts` kept, drawn uniformly with the report's seed;
- `self_consistency`: ThinkLite-VL's offline baseline, `thinklite_sc` (accuracy < 0.2 over ≥ 50
  rollouts) on the `group_stats` rows;
- `full`: every training question;
- `base`: no training, the policy as it is (the figure every arm is compared with).

Training and scoring are MoDoMoDo's pilot machinery (`pipelines.modomodo.train_and_score`): the same
GRPO settings for every arm, greedy answers on the held-out questions, a reward preset for the score.
An arm with no questions is reported empty, with the reason, never filled up. Nothing is tuned for
any arm; the synthetic world and the tiny policy are what they are, and the report prints what comes out.
"""

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.modomodo import PilotItem, score_items, train_and_score
from pipelines.stages.select import kept_questions

ARMS = ("base", "mcts", "random", "self_consistency", "full")


@dataclass(frozen=True)
class Arm:
    name: str
    question_ids: list[str]
    chosen_by: str  # how the arm was chosen, or why it is empty


@dataclass
class ArmResult:
    name: str
    n_train: int
    chosen_by: str
    held_out_reward: float | None = None  # None: the arm was empty, so nothing trained
    train_reward: float | None = None
    steps: int = 0
    trained_ids: list[str] = field(default_factory=list)


def choose_arms(rows: list[dict], pool: list[str], *, policy_id: str, seed: int = 0) -> list[Arm]:
    """The training arms from `difficulty` row dicts of `policy_id`, restricted to the `pool` of training questions.

    >>> rows = [{"question_id": q, "policy_id": "p", "method": "mcts", "mcts_iters": it} for q, it in
    ...         [("a", 2), ("b", 9), ("c", None), ("d", 1)]]
    >>> [(arm.name, len(arm.question_ids)) for arm in choose_arms(rows, ["a", "b", "c", "d"], policy_id="p")]
    [('mcts', 2), ('random', 2), ('self_consistency', 0), ('full', 4)]
    """
    mine = [r for r in rows if r["policy_id"] == policy_id]
    in_pool = set(pool)
    mcts = sorted(q for q, _ in kept_questions(mine, ["mcts_hard"]) if q in in_pool)
    sc = sorted(q for q, _ in kept_questions(mine, ["thinklite_sc"]) if q in in_pool)
    has_mcts = any(r["method"] == "mcts" for r in mine)
    sc_sizes = sorted({r.get("n_rollouts") or 0 for r in mine if r["method"] == "group_stats"})
    return [
        Arm("mcts", mcts, "mcts_hard: solved after > 5 iterations, or unsolved" if has_mcts
            else "no mcts rows for this policy: add an `mcts` step"),
        Arm("random", sorted(random.Random(seed).sample(sorted(pool), min(len(mcts), len(pool)))),
            f"uniform, as many as mcts kept (seed {seed})"),
        Arm("self_consistency", sc, "thinklite_sc: accuracy < 0.2 over >= 50 rollouts" if sc_sizes and sc_sizes[-1] >= 50
            else f"thinklite_sc needs groups of >= 50 rollouts; this version has {sc_sizes or 'none'} "
                 "(run `rollouts` with group_size: 50)"),
        Arm("full", sorted(pool), "every training question"),
    ]


def run_arms(model_dir: Path, arms: list[Arm], items: dict[str, PilotItem], held_out: list[PilotItem], work_dir: Path, *,
             steps: int = 8, num_generations: int = 4, batch_size: int = 8, max_completion_length: int = 48,
             learning_rate: float = 1e-3, rewards: tuple[str, ...] = ("format", "accuracy"), score_reward: str = "wethink",
             score_max_tokens: int = 48, seed: int = 0, progress=lambda message: None) -> list[ArmResult]:
    """Score the base policy, then train and score one copy per non-empty arm (same settings for all)."""
    from pipelines.engines.hf import HFEngine

    if not held_out:
        raise ValueError("no held-out questions to score the arms on: add a `holdout` step to the recipe")
    progress("base: scoring the untrained policy")
    base = score_items(HFEngine(str(model_dir), batch_size=64), held_out, reward=score_reward,
                       max_tokens=score_max_tokens, seed=seed)
    results = [ArmResult("base", 0, "no training", held_out_reward=base)]
    prompts_per_step = batch_size // num_generations
    for arm in arms:
        chosen = [items[q] for q in arm.question_ids if q in items]
        result = ArmResult(arm.name, len(chosen), arm.chosen_by)
        if len(chosen) >= prompts_per_step:
            progress(f"{arm.name}: GRPO on {len(chosen)} questions, {steps} steps")
            pilot = train_and_score(model_dir, chosen, held_out, [], Path(work_dir) / arm.name, steps=steps,
                                    num_generations=num_generations, batch_size=batch_size,
                                    max_completion_length=max_completion_length, learning_rate=learning_rate,
                                    rewards=rewards, score_reward=score_reward, score_max_tokens=score_max_tokens, seed=seed)
            result.held_out_reward, result.train_reward = pilot.in_domain, pilot.train_reward
            result.steps, result.trained_ids = pilot.steps, list(pilot.trained_ids)
        elif chosen:
            result.chosen_by += f" (only {len(chosen)}: one GRPO step needs {prompts_per_step}; not trained)"
        results.append(result)
    return results


def histogram(values: list[float], *, low: float = -1.0, high: float = 1.0, bins: int = 8) -> list[tuple[float, float, int]]:
    """(left edge, right edge, count) per equal-width bin over [low, high]; the last bin includes `high`.

    >>> histogram([-1.0, 0.0, 0.1, 1.0], bins=4)
    [(-1.0, -0.5, 1), (-0.5, 0.0, 0), (0.0, 0.5, 2), (0.5, 1.0, 1)]
    """
    width = (high - low) / bins
    counts = [0] * bins
    for value in values:
        if low <= value <= high and not math.isnan(value):
            counts[min(int((value - low) / width), bins - 1)] += 1
    return [(round(low + i * width, 10), round(low + (i + 1) * width, 10), counts[i]) for i in range(bins)]
