"""mcts: one difficulty row per question (solved at iteration K, or unsolved and kept), on a policy stub of
known solve probability and on the real tiny policy with the scripted judge; then `select` with `mcts_hard`."""

import json
import random
import sqlite3

import pytest

from pipelines.engines import EngineRegistry
from pipelines.engines.base import Response, images_of, text_of
from pipelines.mcts import FEW_SHOT
from pipelines.stage import account, kept_ids
from pipelines.stages.mcts import mcts
from pipelines.stages.select import select
from stores.call_cache import CallCache
from tests.policy import one_thread
from tests.stages.fixtures import Counting, Roles, context, failing, ingest_scenes, scripted, teacher, true_questions

_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)
WRONG = "none of these"


class AnswerStub:
    """Policy stub for real questions: after `depth - 1` filler steps, the right answer with probability
    `p[question]`, else a wrong one. It knows the answers by (image sha256, question line), as a test may."""

    name, model, revision = "stub", "answer-stub", "0123456789abcdef"
    continues_assistant_prefix = True

    def __init__(self, questions, assets, p: dict[str, float], *, depth: int = 3, open_ended: bool = False):
        self.depth, self.requests = depth, []
        self.right, self.p = {}, {}
        sha256 = dict(zip(assets["asset_id"].to_pylist(), assets["sha256"].to_pylist()))
        for q in questions.to_pylist():
            answer = q["choices"][ord(q["answer"]) - 65] if open_ended and q["answer_type"] == "mc" else q["answer"]
            key = (sha256[q["asset_ids"][0]], q["question"])
            self.right[key], self.p[key] = answer, p[q["question_id"]]

    def generate(self, requests):
        self.requests += requests
        return [Response([self._sample(r, k) for k in range(r.n)], r.call_id(self.name, self.model, self.revision)) for r in requests]

    def _sample(self, request, k):
        asked = text_of(request.messages).split("Here is your question:\n")[1]
        key, done = (images_of(request.messages)[0]["sha256"], asked.split("\n")[0]), asked.count("<end>")
        rng = random.Random(f"{request.seed}/{k}")
        if done + 1 < self.depth:
            return f"### Step{done + 1}: I look at the image ({rng.random():.9f})."
        answer = self.right[key] if rng.random() < self.p[key] else WRONG
        return f"### Final Answer: The answer is: \\boxed{{{answer}}}."


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset")
    assets = ingest_scenes(root, scenes=8, families=["counting", "relations", "arithmetic", "bar_chart"])
    questions = true_questions(context("synthesize_qa", root), assets, types=("mc", "num", "fib"), per_asset=2)
    return root, assets, questions


def solve_probabilities(questions) -> dict[str, float]:
    return {q: (1.0, 0.0, 0.12, 0.3)[i % 4] for i, q in enumerate(questions["question_id"].to_pylist())}


@pytest.fixture(scope="module")
def searched(world):
    root, assets, questions = world
    stub = AnswerStub(questions, assets, solve_probabilities(questions))
    ctx = context("mcts", root, Roles(policy=stub, judge=teacher()))
    result = mcts(questions, assets, ctx, max_iterations=12)
    return result, stub


def test_every_question_gets_one_mcts_row_solved_or_unsolved(world, searched):
    _, _, questions = world
    result, _ = searched
    counts = account(mcts, questions, result)
    assert (counts.n_in, counts.n_out, counts.n_rejected) == (16, 16, 0)
    rows = {r["question_id"]: r for r in result.out.to_pylist()}
    p = solve_probabilities(questions)
    assert {r["method"] for r in rows.values()} == {"mcts"} and {r["policy_id"] for r in rows.values()} == {"answer-stub@0123456789ab"}
    assert all(rows[q]["mcts_iters"] == 1 for q in p if p[q] == 1.0)         # solved by the first attempt
    assert all(rows[q]["mcts_iters"] is None for q in p if p[q] == 0.0)      # never solved, still a row
    for row in rows.values():
        detail = json.loads(row["detail"])
        assert detail["solved"] is (row["mcts_iters"] is not None)
        assert (detail["k"], detail["temperature"], detail["top_p"], detail["max_steps"], detail["max_iterations"],
                detail["c"], detail["selection"]) == (3, 0.5, 0.9, 10, 12, 1.0, "ucb1")
        assert detail["prefix"] == "continued"
        if row["mcts_iters"] is None:
            assert row["mcts_path"] is None and detail["iterations_run"] == 12
        else:
            path = json.loads(row["mcts_path"])
            assert len(path) == 3 and path[-1].startswith("### Final Answer: The answer is:")
            assert detail["judge_reply"] == "The generated answer is true."


def test_mcts_hard_then_keeps_exactly_the_items_solved_after_five_iterations_and_the_unsolved(world, searched):
    root, _, _ = world
    result, _ = searched
    iters = {r["question_id"]: r["mcts_iters"] for r in result.out.to_pylist()}
    hard = {q for q, k in iters.items() if k is None or k > 5}
    assert any(k is None for k in iters.values()) and any(k is not None and k > 5 for k in iters.values())
    assert any(k is not None and k <= 5 for k in iters.values())
    table = result.out
    selected = select(table, context("select", root), rules=["mcts_hard"])
    counts = account(select, table, selected)
    assert {r["question_id"] for r in selected.out.to_pylist() if r["selected"]} == hard
    assert (counts.n_out, counts.n_rejected, counts.by_reason) == (len(hard), 16 - len(hard), {"select.mcts_hard": 16 - len(hard)})
    assert len(kept_ids(select, table, selected)) == len(hard)


def test_the_policy_sees_the_image_the_few_shot_prompt_and_an_expansion_asks_for_k_steps_at_once(world, searched):
    _, assets, _ = world
    _, stub = searched
    first = stub.requests[0]
    assert first.n == 3 and len(images_of(first.messages)) == 1
    assert text_of(first.messages).startswith(FEW_SHOT)
    assert "\nA. " in text_of(first.messages) or "Answer with a number." in text_of(first.messages)


def test_open_ended_hides_the_options_and_grades_against_the_options_text(world):
    root, assets, questions = world
    mc = questions.filter([t == "mc" for t in questions["answer_type"].to_pylist()])
    always = {q: 1.0 for q in mc["question_id"].to_pylist()}
    stub, judge = AnswerStub(mc, assets, always, open_ended=True), Counting(teacher())
    result = mcts(mc, assets, context("mcts", root, Roles(policy=stub, judge=judge)), max_iterations=3, open_ended=True)
    assert mc.num_rows >= 2 and all(r["mcts_iters"] == 1 for r in result.out.to_pylist())
    for request in stub.requests:
        assert "\nA. " not in text_of(request.messages) and "Answer in a few words." in text_of(request.messages)
    options = {q["question"]: q["choices"][ord(q["answer"]) - 65] for q in mc.to_pylist()}
    for request in judge.requests:  # the judge grades against the option's text, as free text
        assert request.hints["answer_type"] == "fib" and request.hints["reference"] in options.values()
        assert f"Ground truth answer: {request.hints['reference']}\n" in text_of(request.messages)
    assert all(json.loads(r["detail"])["open_ended"] for r in result.out.to_pylist())
    # by default the options are shown and the reference is the letter
    shown, judge = AnswerStub(mc, assets, always), Counting(teacher())
    mcts(mc, assets, context("mcts", root, Roles(policy=shown, judge=judge)), max_iterations=2)
    assert all("\nA. " in text_of(r.messages) for r in shown.requests)
    assert {r.hints["reference"] for r in judge.requests} <= set("ABCD") and {r.hints["answer_type"] for r in judge.requests} == {"mc"}


def test_a_missing_image_and_a_failing_policy_are_rejects_with_reasons(world):
    root, assets, questions = world
    two = questions.slice(0, 2)
    no_assets = assets.slice(0, 0)
    always = {q: 1.0 for q in two["question_id"].to_pylist()}
    missing = mcts(two, no_assets, context("mcts", root, Roles(policy=AnswerStub(two, assets, always), judge=teacher())))
    assert set(missing.rejects["reason"].to_pylist()) == {"mcts.missing_image"} and missing.out.num_rows == 0
    broken = mcts(two, assets, context("mcts", root, Roles(policy=failing("HTTP 503 from the model server"), judge=teacher())))
    counts = account(mcts, two, broken)
    assert counts.by_reason == {"mcts.engine_error": 2}
    assert broken.rejects["detail"].to_pylist()[0] == "the policy failed: HTTP 503 from the model server"


# ---- the real tiny policy, the scripted judge, the call cache ------------------------------------------------

TINY = {"engine": "hf", "model": "local:tiny-llava"}


def real_run(root, assets, questions):
    engines = EngineRegistry({"policy": TINY, "judge": scripted()}, home=root, cache=CallCache(root / "calls.sqlite"))
    result = mcts(questions, assets, context("mcts", root, engines), max_iterations=2, max_steps=3, max_step_tokens=12)
    return result, engines.cache_counts()


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    assets = ingest_scenes(root, scenes=2, families=["counting", "arithmetic"])
    questions = true_questions(context("synthesize_qa", root), assets, types=("num",), per_asset=1)
    first, first_counts = real_run(root, assets, questions)
    again, again_counts = real_run(root, assets, questions)
    return root, questions, first, first_counts, again, again_counts


def test_the_tiny_policy_searches_each_question_with_the_scripted_judge(real):
    root, questions, result, counts, _, _ = real
    assert account(mcts, questions, result).n_out == questions.num_rows == 2
    for row in result.out.to_pylist():
        detail = json.loads(row["detail"])
        assert row["policy_id"].startswith("tiny-llava@") and detail["prefix"] == "continued"
        assert detail["policy_requests"] >= 2 and detail["judge_requests"] >= 1
        assert row["mcts_iters"] in (None, 1, 2) and detail["iterations_run"] in (1, 2)
    assert counts["misses"] > 0
    # the hf engine was sent the steps so far as the assistant's turn to continue
    with sqlite3.connect(root / "calls.sqlite") as db:
        steps = [json.loads(m) for (m,) in db.execute("SELECT messages FROM calls WHERE task = 'mcts.step'")]
        judged = db.execute("SELECT count(*) FROM calls WHERE task = 'mcts.judge'").fetchone()[0]
    assert any(m[-1]["role"] == "assistant" for m in steps) and judged >= 2


def test_a_rerun_replays_every_call_from_the_cache_and_finds_the_same(real):
    _, _, first, _, again, again_counts = real
    assert again_counts["misses"] == 0 and again_counts["hits"] > 0
    columns = ["question_id", "mcts_iters", "mcts_path", "detail"]
    assert again.out.select(columns).to_pylist() == first.out.select(columns).to_pylist()
