"""Named selection rules (ALGORITHMS §3, §4, §7): pure functions from one difficulty row to a verdict.

Each rule reads the row of one difficulty method (`READS`: group statistics, or the MCTS search) and
says keep, drop, or refuse: a rule *refuses* a row it cannot judge fairly (ThinkLite's
self-consistency baseline over 8 rollouts instead of 50 is not that baseline), and the refusal has a
reason of its own instead of a silent verdict. Parameters are keyword arguments with the published
values as defaults; `select` (pipelines/stages/select.py) composes them, and the fidelity report can
call them directly:

    >>> easyr1({"pass_rate": 0.0, "n_rollouts": 8}).kept   # all wrong, however well formatted
    False
    >>> mcts_hard({"mcts_iters": None}).kept                # unsolved: the hardest, kept
    True

Rules:
- `dapo`: reward std > 0. A group whose rewards are all equal gives GRPO no advantage to learn from.
- `easyr1`: 0.01 < accuracy < 0.99, on the pass rate, *not* the format-weighted reward: a group of
  well-formatted wrong answers has a mean reward of 0.3 under WeThink's 0.7/0.3 weights (0.1 under
  EasyR1's 0.9/0.1) and would pass a filter on the reward.
- `thinklite_online`: 0 < accuracy < 0.9 (ThinkLite-VL's online-filtering baseline).
- `thinklite_sc`: accuracy < 0.2 over at least 50 rollouts (ThinkLite-VL's offline self-consistency
  baseline); a smaller group is refused (`too_few_rollouts`).
- `mmr1`: keeps every group and weights it by p(1−p) over at least 8 rollouts (MMR1's variance-aware
  sampling); GRPO draws half of each batch by these weights (`grpo.batch_composition: mmr1`,
  pipelines/training_order.py).
- `rap_easy`: drop groups whose rollouts were all correct (RAP: trivial items teach nothing).
- `rap_right1`: keep groups with exactly one correct rollout (RAP's "right-1" candidates).
- `mcts_hard`: keep items MCTS solved only after more than 5 iterations, and every unsolved item
  (ThinkLite-VL's selection, K > 5). Unsolved items are kept and marked, never dropped.
"""

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Verdict:
    """One rule's word on one row. `kept` None: refused (cannot judge), with `refused` the slug of why."""

    kept: bool | None
    why: str                     # for people: the numbers the rule looked at
    refused: str | None = None   # e.g. "too_few_rollouts"
    weight: float | None = None  # a sampling weight, for rules that give one (mmr1)


def dapo(row: dict) -> Verdict:
    """Keep groups whose rewards are not all equal (DAPO's dynamic sampling)."""
    std = row.get("reward_std") or 0.0
    return Verdict(std > 0, f"reward std {std:.3f} {'>' if std > 0 else '='} 0")


def easyr1(row: dict, *, min_pass_rate: float = 0.01, max_pass_rate: float = 0.99) -> Verdict:
    """Keep min < accuracy < max (EasyR1's online filter), on the pass rate, not the overall reward."""
    return _inside("pass rate", row["pass_rate"], min_pass_rate, max_pass_rate)


def thinklite_online(row: dict, *, min_pass_rate: float = 0.0, max_pass_rate: float = 0.9) -> Verdict:
    """Keep min < accuracy < max (ThinkLite-VL's online baseline)."""
    return _inside("pass rate", row["pass_rate"], min_pass_rate, max_pass_rate)


def thinklite_sc(row: dict, *, max_pass_rate: float = 0.2, min_rollouts: int = 50) -> Verdict:
    """Keep accuracy < max over at least `min_rollouts` rollouts (ThinkLite-VL's self-consistency baseline)."""
    n = row.get("n_rollouts") or 0
    if n < min_rollouts:
        return Verdict(None, f"{n} rollouts; self-consistency needs {min_rollouts} (sample more: rollouts.group_size)",
                       refused="too_few_rollouts")
    rate = row["pass_rate"]
    return Verdict(rate < max_pass_rate, f"pass rate {rate:.2f} {'<' if rate < max_pass_rate else '>='} {max_pass_rate} "
                                         f"over {n} rollouts")


def mmr1(row: dict, *, min_rollouts: int = 8) -> Verdict:
    """Keep, weighted by p(1−p) (MMR1's variance-aware sampling; weight 0 for always/never solved)."""
    n = row.get("n_rollouts") or 0
    if n < min_rollouts:
        return Verdict(None, f"{n} rollouts; the p(1-p) weight needs {min_rollouts}", refused="too_few_rollouts")
    rate = row["pass_rate"]
    weight = rate * (1 - rate)
    return Verdict(True, f"weight p(1-p) = {weight:.3f} (pass rate {rate:.2f} over {n} rollouts)", weight=weight)


def rap_easy(row: dict) -> Verdict:
    """Drop groups whose every rollout was correct (RAP removes trivial items)."""
    n, n_correct = row.get("n_rollouts"), _n_correct(row)
    return Verdict(n_correct < n, f"{n_correct} of {n} rollouts correct")


def rap_right1(row: dict) -> Verdict:
    """Keep groups with exactly one correct rollout (RAP's right-1 candidates)."""
    n, n_correct = row.get("n_rollouts"), _n_correct(row)
    return Verdict(n_correct == 1, f"{n_correct} of {n} rollouts correct ({'exactly' if n_correct == 1 else 'not'} one)")


def mcts_hard(row: dict, *, max_easy_iters: int = 5) -> Verdict:
    """Keep items MCTS solved after more than `max_easy_iters` iterations, and every unsolved item.

    `mcts_iters` counts iterations from 1 (the solving one included). ThinkLite-VL's released code
    stores its 0-based loop index instead, so its `K > 5` keeps one iteration fewer than ours does:
    set `max_easy_iters: 6` to reproduce that code exactly; 5 follows the paper's wording.
    """
    iters = row.get("mcts_iters")
    if iters is None:
        return Verdict(True, "unsolved within the search budget: kept as one of the hardest")
    return Verdict(iters > max_easy_iters, f"solved at iteration {iters} {'>' if iters > max_easy_iters else '<='} {max_easy_iters}")


RULES: dict[str, Callable[..., Verdict]] = {
    "dapo": dapo, "easyr1": easyr1, "thinklite_online": thinklite_online, "thinklite_sc": thinklite_sc,
    "mmr1": mmr1, "rap_easy": rap_easy, "rap_right1": rap_right1, "mcts_hard": mcts_hard,
}
# The difficulty method whose row each rule judges.
READS: dict[str, str] = {name: "group_stats" for name in RULES} | {"mcts_hard": "mcts"}


def one_per_question(rows: list[dict]) -> tuple[list[dict], list[tuple[dict, dict]]]:
    """The rows with one per question (the first of each), and the (duplicate, row kept instead) pairs.

    A rule list that reads two methods (say `thinklite_online` on group statistics and `mcts_hard` on
    MCTS) marks both difficulty rows of a kept question selected: the question must still train once
    and count once in a mixture.

    >>> kept, duplicates = one_per_question([{"question_id": "q1", "method": "group_stats"},
    ...                                      {"question_id": "q2", "method": "group_stats"},
    ...                                      {"question_id": "q1", "method": "mcts"}])
    >>> [r["question_id"] for r in kept], [(d["method"], k["method"]) for d, k in duplicates]
    (['q1', 'q2'], [('mcts', 'group_stats')])
    """
    first: dict[str, dict] = {}
    kept, duplicates = [], []
    for row in rows:
        if row["question_id"] in first:
            duplicates.append((row, first[row["question_id"]]))
        else:
            first[row["question_id"]] = row
            kept.append(row)
    return kept, duplicates


def _inside(name: str, value: float, low: float, high: float) -> Verdict:
    inside = low < value < high
    return Verdict(inside, f"{name} {value:.2f} {'inside' if inside else 'outside'} ({low:g}, {high:g})")


def _n_correct(row: dict) -> int:
    """n_correct, or pass rate × n for rows written before the column existed."""
    if row.get("n_correct") is not None:
        return row["n_correct"]
    return round(row["pass_rate"] * row["n_rollouts"])
