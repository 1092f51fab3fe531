"""pipelines/selectors.py: every named rule on hand-built rows, at the edges of its window; MMR1's batches."""

import doctest

import pytest

import pipelines.selectors
from pipelines.selectors import (READS, RULES, dapo, easyr1, mcts_hard, mmr1, rap_easy, rap_right1,
                                 thinklite_online, thinklite_sc)


def group(n_correct: int, n: int = 8, reward_std: float | None = None) -> dict:
    rate = n_correct / n
    return {"method": "group_stats", "n_rollouts": n, "n_correct": n_correct, "pass_rate": rate,
            "reward_std": rate * (1 - rate) if reward_std is None else reward_std}


def test_the_doctests_hold():
    assert doctest.testmod(pipelines.selectors).failed == 0


@pytest.mark.parametrize("rule, pass_rate, kept", [
    (easyr1, 0.0, False), (easyr1, 0.01, False), (easyr1, 0.0125, True), (easyr1, 0.5, True),
    (easyr1, 0.985, True), (easyr1, 0.99, False), (easyr1, 1.0, False),
    (thinklite_online, 0.0, False), (thinklite_online, 0.02, True), (thinklite_online, 0.875, True),
    (thinklite_online, 0.9, False), (thinklite_online, 1.0, False),
])
def test_accuracy_windows_are_open_at_both_ends(rule, pass_rate, kept):
    assert rule({"pass_rate": pass_rate, "n_rollouts": 80}).kept is kept


def test_dapo_keeps_any_spread_and_reads_a_missing_std_as_none():
    assert dapo({"reward_std": 1e-9}).kept is True
    assert dapo({"reward_std": 0.0}).kept is False and dapo({"reward_std": None}).kept is False


def test_thinklite_sc_refuses_groups_smaller_than_50_instead_of_judging_them():
    small = thinklite_sc(group(0, n=8))
    assert (small.kept, small.refused) == (None, "too_few_rollouts")
    assert "8 rollouts; self-consistency needs 50" in small.why
    assert thinklite_sc(group(9, n=50)).kept is True      # 0.18 < 0.2
    assert thinklite_sc(group(10, n=50)).kept is False    # 0.2 is not below 0.2
    assert thinklite_sc(group(0, n=8), min_rollouts=8).kept is True


def test_mmr1_keeps_everything_weighted_by_learnability_over_8_rollouts():
    weights = {k: mmr1(group(k)).weight for k in range(9)}
    assert weights[4] == 0.25 and weights[0] == weights[8] == 0.0
    assert weights[2] == pytest.approx(0.25 * 0.75)
    assert all(mmr1(group(k)).kept for k in range(9))
    assert mmr1(group(2, n=4)).refused == "too_few_rollouts" and mmr1(group(2, n=4)).weight is None


def test_rap_rules_count_correct_rollouts():
    assert [rap_easy(group(k)).kept for k in (0, 1, 7, 8)] == [True, True, True, False]
    assert [rap_right1(group(k)).kept for k in (0, 1, 2, 8)] == [False, True, False, False]
    # rows written before n_correct existed: counted from the pass rate
    assert rap_right1({"pass_rate": 0.125, "n_rollouts": 8, "n_correct": None}).kept is True


def test_mcts_hard_keeps_exactly_more_than_five_iterations_or_unsolved():
    rows = [{"mcts_iters": k} for k in range(1, 51)] + [{"mcts_iters": None}]
    kept = [r["mcts_iters"] for r in rows if mcts_hard(r).kept]
    assert kept == list(range(6, 51)) + [None]
    assert "unsolved" in mcts_hard({"mcts_iters": None}).why
    assert [r["mcts_iters"] for r in rows if mcts_hard(r, max_easy_iters=6).kept] == list(range(7, 51)) + [None]


def test_every_rule_reads_one_method():
    assert set(READS) == set(RULES)
    assert {name for name, method in READS.items() if method == "mcts"} == {"mcts_hard"}

