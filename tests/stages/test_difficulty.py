"""difficulty: pass rate, reward spread, learnability and CDE gap per (question, policy), from rollout groups."""

import pytest

from pipelines.stage import account, kept_ids
import doctest
import importlib
import math

from pipelines.stages.difficulty import difficulty, learnability, pass_rate, reward_std, semantic_entropy
from schemas import make_id
from tests.stages.fixtures import context

P = "tiny-llava@0123456789ab"
Q = "tiny-llava@ba9876543210"


@pytest.fixture
def ctx(tmp_path):
    return context("difficulty", tmp_path)


def rollouts(ctx, groups: dict[tuple[str, str, bool], list[tuple]]):
    """groups: (question_id, policy_id, with_image) -> [(correct, reward), ...] or [(correct, reward, extracted), ...]"""
    rows = []
    for (question_id, policy_id, with_image), samples in groups.items():
        group_id = f"group-{question_id}-{policy_id}-{with_image}"
        for index, (correct, reward, *extracted) in enumerate(samples):
            rows.append({"rollout_id": f"{group_id}-{index}", "question_id": question_id, "policy_id": policy_id,
                         "group_id": group_id, "sample_index": index, "with_image": with_image, "response": "…",
                         "extracted": extracted[0] if extracted else None, "correct": correct, "format_ok": True,
                         "reward": reward})
    return ctx.rows("rollouts", rows)


def questions(ctx, ids, answer_type="num", choices=None):
    return ctx.rows("questions", [{"question_id": i, "asset_ids": ["a"], "question": "?", "answer": "1", "answer_type": answer_type,
                                   "choices": choices, "category": "c", "abilities": ["counting"], "reward_route": "rule",
                                   "generator": "g"} for i in ids])


def run(ctx, ids, groups, answer_type="num", choices=None, **params):
    subject = questions(ctx, ids, answer_type, choices)
    result = difficulty(subject, rollouts(ctx, groups), ctx, **params)
    return result, account(difficulty, subject, result)


def rows(result) -> dict[tuple[str, str], dict]:
    return {(r["question_id"], r["policy_id"]): r for r in result.out.to_pylist()}


def test_group_statistics_from_a_hand_built_group(ctx):
    image = [(True, 1.0), (True, 1.0), (False, 0.3), (False, 0.3)]
    text = [(True, 1.0), (False, 0.0), (False, 0.0), (False, 0.3)]
    result, counts = run(ctx, ["q1"], {("q1", P, True): image, ("q1", P, False): text})
    assert (counts.n_in, counts.n_out, counts.n_rejected) == (1, 1, 0)
    row = rows(result)[("q1", P)]
    assert (row["method"], row["n_rollouts"]) == ("group_stats", 4)  # the image group only
    assert row["pass_rate"] == 0.5
    assert row["reward_std"] == pytest.approx(0.35)  # population std of [1, 1, 0.3, 0.3]
    assert row["learnability"] == 0.25
    assert row["pass_rate_text_only"] == 0.25
    assert row["cde_gap"] == 0.25  # answerable from the image more often than from language alone
    assert row["difficulty_id"] == make_id("difficulty", "q1", P, "group_stats")
    assert row["selected"] is None and row["stage"] == "difficulty"


def test_always_or_never_solved_groups_have_no_spread_and_no_learnability(ctx):
    result, _ = run(ctx, ["easy", "hard"], {("easy", P, True): [(True, 1.0)] * 5, ("hard", P, True): [(False, 0.3)] * 5})
    easy, hard = rows(result)[("easy", P)], rows(result)[("hard", P)]
    assert (easy["pass_rate"], easy["reward_std"], easy["learnability"]) == (1.0, 0.0, 0.0)
    assert (hard["pass_rate"], hard["reward_std"], hard["learnability"]) == (0.0, 0.0, 0.0)


def test_without_a_text_only_group_the_cde_gap_is_unknown_not_zero(ctx):
    result, _ = run(ctx, ["q1"], {("q1", P, True): [(True, 1.0), (False, 0.0), (True, 1.0), (True, 1.0)]})
    row = rows(result)[("q1", P)]
    assert row["pass_rate"] == 0.75 and row["pass_rate_text_only"] is None and row["cde_gap"] is None


def test_a_negative_cde_gap_means_the_image_hurt(ctx):
    result, _ = run(ctx, ["q1"], {("q1", P, True): [(False, 0.0)] * 4, ("q1", P, False): [(True, 1.0)] * 4})
    assert rows(result)[("q1", P)]["cde_gap"] == -1.0


def test_too_few_rollouts_with_the_image_is_rejected_however_many_text_only_ones_there_are(ctx):
    result, counts = run(ctx, ["q-ok", "q-small", "q-none"], {
        ("q-ok", P, True): [(True, 1.0)] * 4,
        ("q-small", P, True): [(True, 1.0)] * 3,
        ("q-small", P, False): [(True, 1.0)] * 8,
    })
    assert list(rows(result)) == [("q-ok", P)]
    assert (counts.n_out, counts.n_rejected, counts.by_reason) == (1, 2, {"difficulty.too_few_rollouts": 2})
    details = dict(zip(result.rejects["input_id"].to_pylist(), result.rejects["detail"].to_pylist()))
    assert details == {"q-small": f"3 rollouts with the image for {P}; need 4", "q-none": "no rollouts for this question"}
    # the refused thing is the group; the question falls with it because no policy scored it
    assert result.rejects["subject_id"].to_pylist()[0].startswith("group_stats-")


def test_min_rollouts_is_the_smallest_group_scored(ctx):
    groups = {("q1", P, True): [(True, 1.0), (False, 0.0)]}
    assert run(ctx, ["q1"], groups, min_rollouts=2)[1].n_out == 1
    assert run(ctx, ["q1"], groups, min_rollouts=3)[1].by_reason == {"difficulty.too_few_rollouts": 1}


def test_each_policy_gets_its_own_row(ctx):
    result, counts = run(ctx, ["q1"], {("q1", P, True): [(True, 1.0)] * 4, ("q1", Q, True): [(False, 0.0), (True, 1.0)] * 2})
    got = rows(result)
    assert got[("q1", P)]["pass_rate"] == 1.0 and got[("q1", Q)]["pass_rate"] == 0.5
    assert got[("q1", P)]["difficulty_id"] != got[("q1", Q)]["difficulty_id"]
    assert counts.n_out == 1


def test_rollouts_of_questions_not_given_are_ignored(ctx):
    result, counts = run(ctx, ["q1"], {("q1", P, True): [(True, 1.0)] * 4, ("other", P, True): [(True, 1.0)] * 4})
    assert list(rows(result)) == [("q1", P)] and counts.n_in == 1


def test_the_statistics_are_plain_functions():
    assert pass_rate([True, False, False, False]) == 0.25
    assert reward_std([0.0, 1.0]) == 0.5 and reward_std([0.7]) == 0.0
    assert learnability(0.5) == 0.25 and learnability(0.0) == learnability(1.0) == 0.0
    assert learnability(0.25) == pytest.approx(0.1875)


def test_a_question_scored_for_one_policy_is_kept_when_another_policys_group_is_too_small(ctx):
    subject = questions(ctx, ["q1"])
    result = difficulty(subject, rollouts(ctx, {("q1", P, True): [(True, 1.0)] * 4, ("q1", Q, True): [(True, 1.0)]}), ctx)
    assert list(rows(result)) == [("q1", P)]
    assert result.rejects["reason"].to_pylist() == ["difficulty.too_few_rollouts"]
    assert kept_ids(difficulty, subject, result) == ["q1"]


def test_the_doctests_hold():
    module = importlib.import_module("pipelines.stages.difficulty")  # the package attribute is the stage itself
    assert doctest.testmod(module).failed == 0 and doctest.testmod(module).attempted >= 4


def test_majority_and_entropy_cluster_answers_by_equivalence_not_by_string(ctx):
    # "3", "3.0" and "three" are one number; "4" is another; two samples gave no answer.
    image = [(True, 1.0, "3"), (True, 1.0, "3.0"), (True, 0.7, "three"), (False, 0.3, "4"), (False, 0.3, "4"),
             (False, 0.0, None), (False, 0.0, None), (True, 1.0, "3")]
    result, _ = run(ctx, ["q1"], {("q1", P, True): image})
    row = rows(result)[("q1", P)]
    assert (row["n_rollouts"], row["n_correct"], row["pass_rate"]) == (8, 4, 0.5)
    assert row["majority_answer"] == "3" and row["majority_fraction"] == 0.5  # 4 of 8, the no-answers counted in G
    expected = -sum(p * math.log(p) for p in (4 / 8, 2 / 8, 2 / 8))  # clusters {3}, {4}, {no answer}
    assert row["semantic_entropy"] == pytest.approx(expected)
    # by string equality "3", "3.0" and "three" would be three clusters, and the entropy higher
    assert semantic_entropy([2, 1, 1, 2, 2]) > row["semantic_entropy"]


def test_multiple_choice_answers_cluster_by_the_letter_they_name(ctx):
    image = [(True, 1.0, "B"), (True, 1.0, "(b)"), (True, 1.0, "12 apples"), (False, 0.3, "A")]
    result, _ = run(ctx, ["q1"], {("q1", P, True): image}, answer_type="mc", choices=["10 apples", "12 apples", "9", "8"])
    row = rows(result)[("q1", P)]
    assert row["majority_answer"] == "B" and row["majority_fraction"] == 0.75


def test_no_answer_never_wins_the_majority_and_a_unanimous_group_has_zero_entropy(ctx):
    result, _ = run(ctx, ["silent", "unanimous"], {("silent", P, True): [(False, 0.0, None)] * 5 + [(False, 0.3, "7")] * 3,
                                                    ("unanimous", P, True): [(True, 1.0, "1")] * 4})
    silent, unanimous = rows(result)[("silent", P)], rows(result)[("unanimous", P)]
    assert silent["majority_answer"] == "7" and silent["majority_fraction"] == 3 / 8
    assert silent["semantic_entropy"] == pytest.approx(-(5 / 8 * math.log(5 / 8) + 3 / 8 * math.log(3 / 8)))
    assert unanimous["semantic_entropy"] == 0.0 and unanimous["majority_fraction"] == 1.0


def test_the_text_only_group_gets_its_own_size_and_spread(ctx):
    result, _ = run(ctx, ["q1"], {("q1", P, True): [(True, 1.0)] * 4,
                                  ("q1", P, False): [(True, 1.0), (False, 0.0), (False, 0.0), (False, 0.0), (False, 0.0), (True, 1.0)]})
    row = rows(result)[("q1", P)]
    assert (row["n_rollouts"], row["reward_std"]) == (4, 0.0)
    assert row["n_rollouts_text_only"] == 6 and row["pass_rate_text_only"] == pytest.approx(1 / 3)
    assert row["reward_std_text_only"] == pytest.approx(math.sqrt(2 / 9))
    assert row["cde_gap"] == pytest.approx(2 / 3)
