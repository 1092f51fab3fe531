"""pipelines/mcts.py: the search's phases, and its statistics against a policy stub of known solve probability.

`SolveStub` is an instrument engine: for item i it writes `depth - 1` filler steps, then a final
answer that is right with probability p_i, each sample drawn from the request's seed. Every attempt
the search makes is then a Bernoulli(p_i) trial, so the iteration that first solves an item is
geometric: P(K = 1) = p, mean 1/p, and a share (1 − p)^N stays unsolved after N iterations. The
judge is the real scripted teacher.
"""

import doctest
import random
import re

import pytest

import pipelines.mcts
from pipelines.engines.base import Request, Response, text_of
from pipelines.engines.openai_compatible import request_body
from pipelines.mcts import (MCTSConfig, Node, Problem, judge_reward, puct, run_searches, select, step_prompt, ucb1)
from tests.stages.fixtures import teacher


class SolveStub:
    """Policy stub: item `i` is solved by a sample with probability `p[i]`, after `depth - 1` filler steps."""

    name, model, revision = "stub", "solve-stub", "1"

    def __init__(self, p: dict[str, float], *, depth: int = 4, continues: bool = True, repeat_steps: bool = False):
        self.p, self.depth, self.continues_assistant_prefix, self.repeat_steps = p, depth, continues, repeat_steps
        self.requests: list[Request] = []

    def generate(self, requests: list[Request]) -> list[Response]:
        self.requests += requests
        return [Response([self._sample(r, k) for k in range(r.n)], r.call_id(self.name, self.model, self.revision))
                for r in requests]

    def _sample(self, request: Request, k: int) -> str:
        text = text_of(request.messages).split("Here is your question:")[-1]
        item, done = re.search(r"item (\S+):", text).group(1), text.count("<end>")
        rng = random.Random(f"{request.seed}/{k}")
        if done + 1 < self.depth:
            return f"### Step{done + 1}: I look again." if self.repeat_steps else f"### Step{done + 1}: note {rng.random():.12f}"
        answer = 3 if rng.random() < self.p[item] else 4
        return f"### Final Answer: The answer is: \\boxed{{{answer}}}."


def problems(p: dict[str, float]) -> list[Problem]:
    return [Problem(item, step_prompt(f"item {item}: how many red squares are there?"), "How many red squares?", "3", "num")
            for item in p]


def search_all(p: dict[str, float], stub=None, **config):
    stub = stub or SolveStub(p)
    results = run_searches(problems(p), policy=stub, judge_engine=teacher(), config=MCTSConfig(**config))
    return {r.problem_id: r for r in results}, stub


def test_the_doctests_hold():
    assert doctest.testmod(pipelines.mcts).failed == 0


def test_iterations_to_solve_are_geometric_in_the_solve_probability():
    p = {f"easy{i}": 0.3 for i in range(250)} | {f"hard{i}": 0.1 for i in range(250)}
    results, _ = search_all(p, max_iterations=20, seed=1)
    easy = [results[f"easy{i}"] for i in range(250)]
    hard = [results[f"hard{i}"] for i in range(250)]
    assert all(r.error is None for r in results.values())
    # p = 0.3: practically all solved (0.7^20 < 0.1%); mean 1/p, and the first attempt succeeds 30% of the time
    iterations = [r.iterations for r in easy if r.solved]
    assert len(iterations) >= 248
    assert sum(iterations) / len(iterations) == pytest.approx(1 / 0.3, abs=0.5)  # sd of the mean ~0.17
    assert sum(k == 1 for k in iterations) / len(iterations) == pytest.approx(0.3, abs=0.09)
    # p = 0.1 with N = 20: (0.9)^20 = 12% unsolved; among the solved, P(K <= 5) = (1 - 0.9^5) / (1 - 0.9^20)
    unsolved = sum(not r.solved for r in hard) / len(hard)
    assert unsolved == pytest.approx(0.9 ** 20, abs=0.065)  # sd ~0.021
    within_five = sum(r.iterations <= 5 for r in hard if r.solved) / sum(r.solved for r in hard)
    assert within_five == pytest.approx((1 - 0.9 ** 5) / (1 - 0.9 ** 20), abs=0.1)
    assert all(r.iterations_run == 20 and r.solution is None for r in hard if not r.solved)


def test_a_solved_search_stops_at_once_and_keeps_its_path_and_the_judges_reply():
    results, stub = search_all({"sure": 1.0}, max_iterations=50)
    result = results["sure"]
    assert (result.iterations, result.iterations_run) == (1, 1)
    assert result.solution[-1] == "### Final Answer: The answer is: \\boxed{3}." and len(result.solution) == 4
    assert result.judge_reply == "The generated answer is true."
    # iteration 1: one expansion (n = k) writes step 1, three simulated steps write 2..4, then one judge call
    assert [r.n for r in stub.requests] == [3, 1, 1, 1]
    assert result.counts == {"policy_requests": 4, "policy_samples": 6, "judge_requests": 1}


def test_an_unsolvable_item_runs_every_iteration_and_is_reported_unsolved():
    results, _ = search_all({"never": 0.0}, max_iterations=7)
    assert results["never"].iterations is None and results["never"].iterations_run == 7
    assert results["never"].counts["judge_requests"] == 7


def test_the_same_seed_gives_the_same_searches_and_another_seed_others():
    p = {f"item{i}": 0.2 for i in range(40)}
    first, _ = search_all(p, max_iterations=15, seed=7)
    again, _ = search_all(p, max_iterations=15, seed=7)
    other, _ = search_all(p, max_iterations=15, seed=8)
    def summary(results):
        return [(r.iterations, r.solution, r.n_nodes) for r in results.values()]
    assert summary(first) == summary(again)
    assert summary(first) != summary(other)


def test_ucb1_and_puct_pick_different_children_in_a_constructed_case():
    # N = 8 at the parent; child A: 2 visits, value 0; child B: 6 visits, value 0.5
    assert ucb1(8, 2, 0.0, 1.0) < ucb1(8, 6, 0.5, 1.0)  # 1.020 < 1.089: ucb1 prefers B
    assert puct(8, 2, 0.0, 1.0) > puct(8, 6, 0.5, 1.0)  # 0.943 > 0.904: puct prefers A
    root = Node(steps=(), visits=8)
    a = Node(steps=("a",), parent=root, visits=2, value_sum=0.0)
    b = Node(steps=("b",), parent=root, visits=6, value_sum=3.0)
    root.children = [a, b]
    assert select(root, rule="ucb1", c=1.0) is b
    assert select(root, rule="puct", c=1.0) is a


def test_ucb1_tries_every_unvisited_child_first_and_puct_need_not():
    root = Node(steps=(), visits=5)
    visited = Node(steps=("v",), parent=root, visits=5, value_sum=5.0)  # rewarded every time
    fresh = Node(steps=("f",), parent=root)
    root.children = [visited, fresh]
    assert select(root, rule="ucb1", c=0.3) is fresh      # unvisited: +inf
    assert select(root, rule="puct", c=0.3) is visited    # 1 + 0.3·sqrt(5)/6 = 1.11 > 0.3·sqrt(5) = 0.67


def test_with_judge_rewards_of_0_or_1_the_two_rules_search_alike():
    """A search stops at its first reward 1, so every value is 0 and both rules reduce to "fewest visits
    first" (ties to the first child): ucb1 and puct build the same trees. They differ once values do
    (the constructed cases above), e.g. with a graded judge."""
    p = {f"item{i}": 0.1 for i in range(30)}
    by_ucb1, _ = search_all(p, max_iterations=12, selection="ucb1")
    by_puct, _ = search_all(p, max_iterations=12, selection="puct")
    assert [(r.iterations, r.n_nodes, r.solution) for r in by_ucb1.values()] == \
           [(r.iterations, r.n_nodes, r.solution) for r in by_puct.values()]
    with pytest.raises(ValueError, match="unknown selection rule 'uct'; rules: ucb1, puct"):
        search_all(p, selection="uct")


def test_an_expansion_is_one_request_with_n_k_continuing_the_steps_as_the_assistants_turn():
    _, stub = search_all({"never": 0.0}, max_iterations=3)
    first, second = stub.requests[0], stub.requests[1]
    assert first.n == 3 and first.messages[-1]["role"] == "user" and not first.continue_final_message
    assert second.n == 1 and second.continue_final_message
    assert second.messages[:-1] == first.messages  # the same prefix, then the steps so far
    assert second.messages[-1]["role"] == "assistant" and second.messages[-1]["content"].endswith("<end>\n")
    assert all(r.stop == ("<end>",) and r.temperature == 0.5 and r.top_p == 0.9 for r in stub.requests)


def test_an_engine_that_cannot_continue_gets_the_steps_rendered_into_the_prompt():
    stub = SolveStub({"never": 0.0}, continues=False)
    search_all({"never": 0.0}, stub, max_iterations=3)
    later = stub.requests[1]
    assert later.messages[-1]["role"] == "user" and not later.continue_final_message
    assert "Your solution so far:\n### Step1: note" in text_of(later.messages)


def test_repeated_states_are_not_sent_again():
    stub = SolveStub({"never": 0.0}, repeat_steps=True)  # every expansion proposes k identical steps
    results, _ = search_all({"never": 0.0}, stub, max_iterations=10)
    sent = [(repr(r.messages), r.n) for r in stub.requests]
    assert len(sent) == len(set(sent))  # no (state, n) asked twice
    assert results["never"].counts["repeated_states"] > 0
    assert results["never"].counts["policy_requests"] == len(stub.requests)


def test_a_failed_call_ends_that_search_with_its_error_and_not_the_others():
    class Failing(SolveStub):
        def generate(self, requests):
            return [Response([], r.call_id("stub", "m", "1"), error="HTTP 500") if "item bad:" in text_of(r.messages)
                    else out for r, out in zip(requests, super().generate(requests))]

    p = {"bad": 0.5, "good": 1.0}
    results, _ = search_all(p, Failing(p))
    assert results["bad"].error == "the policy failed: HTTP 500" and results["good"].iterations == 1


def test_the_judge_reward_reads_the_first_sentence_only():
    assert judge_reward("True. The steps are right.") == 1.0
    assert judge_reward("The answer 3 is wrong. It is not true that it is right.") == 0.0


def test_the_openai_body_asks_the_server_to_continue_the_final_message():
    request = Request(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "### Step1: a <end>\n"}],
                      continue_final_message=True)
    body = request_body(request, "m")
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert "continue_final_message" not in request_body(Request(messages=[{"role": "user", "content": "q"}]), "m")
    # a continued call is a different call from the same messages answered as a new turn
    plain = Request(messages=request.messages)
    assert request.call_id("openai", "m", "r") != plain.call_id("openai", "m", "r")
