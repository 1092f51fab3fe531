"""select: a named rule marks every group_stats row; the rows it does not keep are rejects `select.<rule>`."""

import pytest

from pipelines.stage import account, kept_ids
from pipelines.stages.select import RULES, select
from tests.stages.fixtures import context

P = "tiny-llava@0123456789ab"
# name -> (pass_rate, reward_std): the edges of every rule's window
GROUPS = {
    "never": (0.0, 0.0),
    "rarely": (0.005, 0.05),   # solved, but below easyr1's 1 %
    "half": (0.5, 0.5),
    "often": (0.9, 0.3),       # at thinklite_online's upper edge (exclusive)
    "almost": (0.995, 0.05),   # above easyr1's 99 %
    "always": (1.0, 0.0),
    "flat": (0.5, 0.0),        # half right, yet every reward equal (e.g. all-format, no accuracy weight)
}
KEEPS = {
    "dapo": {"rarely", "half", "often", "almost"},
    "easyr1": {"half", "often", "flat"},
    "thinklite_online": {"rarely", "half", "flat"},
}


@pytest.fixture
def ctx(tmp_path):
    return context("select", tmp_path)


def difficulty_table(ctx, groups=GROUPS, method="group_stats"):
    return ctx.rows("difficulty", [
        {"difficulty_id": f"d-{name}", "question_id": f"q-{name}", "policy_id": P, "method": method, "n_rollouts": 8,
         "pass_rate": rate, "reward_std": std, "learnability": rate * (1 - rate), "run_id": "earlier", "stage": "difficulty"}
        for name, (rate, std) in groups.items()])


def run(table, ctx, **params):
    result = select(table, ctx, **params)
    account(select, table, result)  # every row kept or rejected, or AccountingError
    return result


@pytest.mark.parametrize("rule", sorted(KEEPS))
def test_each_rule_keeps_exactly_its_window_and_rejects_the_rest_with_its_name(ctx, rule):
    table = difficulty_table(ctx)
    result = select(table, ctx, rule=rule)
    counts = account(select, table, result)
    selected = {r["question_id"].removeprefix("q-") for r in result.out.to_pylist() if r["selected"]}
    assert selected == KEEPS[rule]
    assert (counts.n_in, counts.n_out, counts.n_rejected) == (7, len(KEEPS[rule]), 7 - len(KEEPS[rule]))
    assert counts.by_reason == {f"select.{rule}": 7 - len(KEEPS[rule])}
    assert sorted(result.rejects["subject_id"].to_pylist()) == sorted(f"d-{n}" for n in set(GROUPS) - KEEPS[rule])
    assert [i.removeprefix("d-") for i in kept_ids(select, table, result)] == [n for n in GROUPS if n in KEEPS[rule]]


def test_every_row_is_annotated_with_the_rule_and_why(ctx):
    result = run(difficulty_table(ctx), ctx, rule="easyr1")
    assert result.out.num_rows == 7
    rows = {r["question_id"]: r for r in result.out.to_pylist()}
    assert rows["q-half"]["reason"] == "easyr1: pass rate 0.50 inside (0.01, 0.99)"
    assert rows["q-always"]["reason"] == "easyr1: pass rate 1.00 outside (0.01, 0.99)"
    assert rows["q-always"]["selected"] is False
    details = dict(zip(result.rejects["subject_id"].to_pylist(), result.rejects["detail"].to_pylist()))
    assert details["d-always"] == "question q-always: pass rate 1.00 outside (0.01, 0.99)"
    # Rows are rewritten as this stage's (the annotation is select's), with their statistics untouched.
    assert {r["stage"] for r in result.out.to_pylist()} == {"select"}
    assert rows["q-rarely"]["pass_rate"] == 0.005 and rows["q-rarely"]["n_rollouts"] == 8


def test_dapo_reads_the_reward_spread(ctx):
    result = run(difficulty_table(ctx, {"spread": (1.0, 0.1), "none": (0.5, None)}), ctx, rule="dapo")
    rows = {r["question_id"]: r for r in result.out.to_pylist()}
    assert rows["q-spread"]["selected"] is True  # all answers right, yet rewards differ (format): GRPO has signal
    assert rows["q-none"]["selected"] is False and rows["q-none"]["reason"] == "dapo: reward std 0.000 = 0"


def test_rows_of_other_methods_pass_through_unjudged(ctx):
    table = difficulty_table(ctx, {"searched": (0.5, 0.5)}, method="mcts")
    result = select(table, ctx, rule="dapo")
    (row,) = result.out.to_pylist()
    assert row["selected"] is None and row["reason"] is None and result.rejects.num_rows == 0
    assert account(select, table, result).n_out == 1


def test_an_unknown_rule_lists_the_rules_and_suggests_the_nearest(ctx):
    with pytest.raises(ValueError) as caught:
        select(difficulty_table(ctx), ctx, rule="dapoo")
    assert str(caught.value) == "unknown selection rule 'dapoo'; rules: dapo, easyr1, thinklite_online. Did you mean 'dapo'?"
    assert sorted(RULES) == sorted(KEEPS)
