"""select: a list of named rules judged per question; every row marked with every verdict; drops are rejects `select.<rule>`."""

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
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
    assert str(caught.value) == ("unknown selection rule 'dapoo'; rules: dapo, easyr1, thinklite_online, thinklite_sc, "
                                 "mmr1, rap_easy, rap_right1, mcts_hard. Did you mean 'dapo'?")
    assert set(KEEPS) < set(RULES)


# ---- rule lists, every selector through the stage, accounting --------------------------------------------------

def rows_of(ctx, specs: dict[str, dict]) -> "pa.Table":
    """Difficulty rows from name -> columns; `method` defaults to group_stats, the question to q-<name>."""
    return ctx.rows("difficulty", [
        {"difficulty_id": f"d-{name}", "question_id": columns.pop("question_id", f"q-{name}"), "policy_id": P,
         "method": columns.pop("method", "group_stats"), "run_id": "earlier", "stage": "difficulty", **columns}
        for name, columns in ((n, dict(c)) for n, c in specs.items())])


def by_question(result) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in result.out.to_pylist():
        out.setdefault(row["question_id"], []).append(row)
    return out


def reasons(result) -> dict[str, str]:
    return dict(zip(result.rejects["subject_id"].to_pylist(), result.rejects["reason"].to_pylist()))


def test_a_rule_list_keeps_only_what_every_rule_keeps_and_names_the_first_rule_that_dropped(ctx):
    table = difficulty_table(ctx)
    result = run(table, ctx, rules=["dapo", "easyr1"])
    selected = {r["question_id"].removeprefix("q-") for r in result.out.to_pylist() if r["selected"]}
    assert selected == KEEPS["dapo"] & KEEPS["easyr1"] == {"half", "often"}
    got = {subject.removeprefix("d-"): reason for subject, reason in reasons(result).items()}
    # never/always/flat fail dapo first; rarely/almost pass dapo and fail easyr1
    assert got == {"never": "select.dapo", "always": "select.dapo", "flat": "select.dapo",
                   "rarely": "select.easyr1", "almost": "select.easyr1"}
    counts = account(select, table, result)
    assert (counts.n_in, counts.n_out, counts.n_rejected) == (7, 2, 5)
    assert counts.by_reason == {"select.dapo": 3, "select.easyr1": 2}


def test_every_rules_verdict_is_recorded_even_after_one_dropped(ctx):
    import json

    result = run(difficulty_table(ctx), ctx, rules=["dapo", "easyr1"])
    always = by_question(result)["q-always"][0]
    assert always["reason"] == "dapo: reward std 0.000 = 0; easyr1: pass rate 1.00 outside (0.01, 0.99)"
    verdicts = json.loads(always["detail"])["select"]
    assert [(v["rule"], v["verdict"]) for v in verdicts] == [("dapo", "dropped"), ("easyr1", "dropped")]
    detail = dict(zip(result.rejects["subject_id"].to_pylist(), result.rejects["detail"].to_pylist()))["d-always"]
    assert detail == "question q-always: reward std 0.000 = 0"


def test_the_easyr1_trap_well_formatted_wrong_answers_pass_on_reward_but_not_on_accuracy(tmp_path):
    """All 8 answers wrong but in the right format: the mean reward is 0.3 (WeThink) or 0.1 (EasyR1 weights),
    inside EasyR1's (0.01, 0.99) window; the filter must read accuracy, and drop the group."""
    from pipelines.rewards import score
    from pipelines.stages.difficulty import difficulty

    wrong = "<think>I count the red squares: there are 5.</think><answer>5</answer>"
    for weights, mean_reward in (("wethink", 0.3), ("easyr1", 0.1)):
        reward = score(wrong, "3", answer_type="num", weights=weights)["overall"]
        assert reward == pytest.approx(mean_reward)  # what a filter on the reward would see
        assert 0.01 < reward < 0.99
        dctx = context("difficulty", tmp_path)
        questions = dctx.rows("questions", [{"question_id": "q-trap", "asset_ids": ["a"], "question": "How many red squares?",
                                             "answer": "3", "answer_type": "num", "category": "counting",
                                             "abilities": ["counting"], "reward_route": "rule", "generator": "world"}])
        rollouts = dctx.rows("rollouts", [{"rollout_id": f"r{i}", "question_id": "q-trap", "policy_id": P, "group_id": "g",
                                           "sample_index": i, "with_image": True, "response": wrong, "extracted": "5",
                                           "correct": False, "format_ok": True, "reward": reward} for i in range(8)])
        scored = difficulty(questions, rollouts, dctx).out
        (row,) = scored.to_pylist()
        assert row["pass_rate"] == 0.0 and row["reward_std"] == 0.0
        result = run(scored, context("select", tmp_path), rules=["easyr1"])
        assert result.out.to_pylist()[0]["selected"] is False
        assert reasons(result) == {row["difficulty_id"]: "select.easyr1"}


def test_thinklite_sc_refuses_small_groups_with_its_own_reason(ctx):
    table = rows_of(ctx, {"g8": {"n_rollouts": 8, "pass_rate": 0.0, "reward_std": 0.0},
                          "g50-hard": {"n_rollouts": 50, "pass_rate": 0.1, "reward_std": 0.3},
                          "g50-easy": {"n_rollouts": 50, "pass_rate": 0.6, "reward_std": 0.5}})
    result = run(table, ctx, rules=["thinklite_sc"])
    assert reasons(result) == {"d-g8": "select.thinklite_sc.too_few_rollouts", "d-g50-easy": "select.thinklite_sc"}
    rows = {r["question_id"]: r for r in result.out.to_pylist()}
    assert rows["q-g50-hard"]["selected"] is True
    assert rows["q-g8"]["selected"] is False and rows["q-g8"]["reason"].startswith("thinklite_sc: refused: 8 rollouts")
    details = dict(zip(result.rejects["subject_id"].to_pylist(), result.rejects["detail"].to_pylist()))
    assert "self-consistency needs 50" in details["d-g8"]


def test_mmr1_keeps_every_group_and_writes_its_weight(ctx):
    table = rows_of(ctx, {f"k{k}": {"n_rollouts": 8, "n_correct": k, "pass_rate": k / 8, "reward_std": 0.1} for k in (0, 2, 4, 8)})
    result = run(table, ctx, rules=["mmr1"])
    weights = {r["question_id"]: r["weight"] for r in result.out.to_pylist()}
    assert weights == {"q-k0": 0.0, "q-k2": pytest.approx(0.1875), "q-k4": 0.25, "q-k8": 0.0}
    assert result.rejects.num_rows == 0 and all(r["selected"] for r in result.out.to_pylist())


def test_rap_easy_and_rap_right1_through_the_stage(ctx):
    table = rows_of(ctx, {f"k{k}": {"n_rollouts": 8, "n_correct": k, "pass_rate": k / 8, "reward_std": 0.1} for k in (0, 1, 3, 8)})
    easy = {r["question_id"] for r in run(table, ctx, rules=["rap_easy"]).out.to_pylist() if r["selected"]}
    right1 = {r["question_id"] for r in run(table, ctx, rules=["rap_right1"]).out.to_pylist() if r["selected"]}
    assert easy == {"q-k0", "q-k1", "q-k3"} and right1 == {"q-k1"}


def mcts_rows(ctx, iters: dict[str, int | None], with_group_stats: dict[str, float] | None = None):
    specs = {f"m-{name}": {"question_id": f"q-{name}", "method": "mcts", "mcts_iters": k, "detail": '{"k": 3}'}
             for name, k in iters.items()}
    specs |= {f"g-{name}": {"question_id": f"q-{name}", "n_rollouts": 8, "pass_rate": rate, "reward_std": 0.2}
              for name, rate in (with_group_stats or {}).items()}
    return rows_of(ctx, specs)


def test_mcts_hard_keeps_exactly_more_than_five_iterations_and_every_unsolved_item_marked(ctx):
    iters = {f"i{k}": k for k in range(1, 11)} | {"unsolved-a": None, "unsolved-b": None}
    table = mcts_rows(ctx, iters)
    result = run(table, ctx, rules=["mcts_hard"])
    rows = {r["question_id"].removeprefix("q-"): r for r in result.out.to_pylist()}
    assert {name for name, r in rows.items() if r["selected"]} == {f"i{k}" for k in range(6, 11)} | {"unsolved-a", "unsolved-b"}
    assert rows["unsolved-a"]["mcts_iters"] is None and "unsolved" in rows["unsolved-a"]["reason"]
    assert set(reasons(result).values()) == {"select.mcts_hard"} and len(reasons(result)) == 5
    import json
    assert json.loads(rows["i3"]["detail"])["k"] == 3  # the search's own facts survive next to the verdicts
    counts = account(select, table, result)
    assert (counts.n_in, counts.n_out, counts.n_rejected) == (12, 7, 5)


def test_rules_of_different_methods_compose_per_question(ctx):
    table = mcts_rows(ctx, {"hard-mid": 9, "hard-never": None, "easy": 2, "no-search": None},
                      with_group_stats={"hard-mid": 0.5, "hard-never": 0.0, "easy": 0.5, "no-search": 0.5})
    table = table.filter(pa.compute.not_equal(table["difficulty_id"], "d-m-no-search"))  # that question was never searched
    result = run(table, ctx, rules=["thinklite_online", "mcts_hard"])
    rows = by_question(result)
    assert {q for q, rs in rows.items() if all(r["selected"] for r in rs)} == {"q-hard-mid"}
    assert all(len(rs) == 2 or q == "q-no-search" for q, rs in rows.items())  # both rows of a question marked alike
    assert reasons(result) == {"d-g-hard-never": "select.thinklite_online", "d-m-hard-never": "select.thinklite_online",
                               "d-g-easy": "select.mcts_hard", "d-m-easy": "select.mcts_hard",
                               "d-g-no-search": "select.mcts_hard.no_mcts_row"}
    account(select, table, result)


def test_rule_parameters_are_checked_and_passed(ctx):
    table = mcts_rows(ctx, {"i6": 6, "i8": 8})
    strict = run(table, ctx, rules=[{"mcts_hard": {"max_easy_iters": 7}}])
    assert {r["question_id"] for r in strict.out.to_pylist() if r["selected"]} == {"q-i8"}
    with pytest.raises(ValueError, match="rule mcts_hard has no parameter 'max_iters'; it takes: max_easy_iters"):
        select(table, ctx, rules=[{"mcts_hard": {"max_iters": 7}}])
    with pytest.raises(ValueError, match="max_easy_iters='many'"):
        select(table, ctx, rules=[{"mcts_hard": {"max_easy_iters": "many"}}])
    with pytest.raises(ValueError, match="set `rules` or `rule`, not both"):
        select(table, ctx, rules=["dapo"], rule="easyr1")


def test_an_unknown_rule_in_a_recipe_fails_when_the_recipe_loads():
    from flows.recipes import load_recipe
    from schemas.errors import RecipeError

    with pytest.raises(RecipeError, match="'mcts_hard'"):  # the message lists the rules there are
        load_recipe("build-wethink", ["select.rules=[mcts_hardd]"])


def test_the_decision_is_a_plain_function_of_row_dicts_too(ctx):
    from pipelines.stages.select import kept_questions

    table = mcts_rows(ctx, {"hard": 9, "easy": 2, "never": None}, with_group_stats={"hard": 0.5, "easy": 0.5, "never": 0.0})
    rows = table.to_pylist()
    assert kept_questions(rows, ["mcts_hard"]) == {("q-hard", P), ("q-never", P)}
    assert kept_questions(rows, ["thinklite_online", "mcts_hard"]) == {("q-hard", P)}
    staged = run(table, ctx, rules=["thinklite_online", "mcts_hard"])
    assert {(r["question_id"], r["policy_id"]) for r in staged.out.to_pylist() if r["selected"]} == {("q-hard", P)}
