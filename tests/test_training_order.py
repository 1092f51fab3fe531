"""pipelines/training_order.py: the mixture's order and MMR1's half-weighted batches; and the doctests of the GRPO modules."""

import doctest
import importlib
from collections import Counter

import pytest

from pipelines.training_order import mixture_order, mmr1_order


def test_mixture_order_draws_by_weight_without_repeats_until_a_domain_runs_out():
    domains = ["a"] * 100 + ["b"] * 100
    order = mixture_order(domains, {"a": 0.8, "b": 0.2}, seed=3)
    assert len(order) == len(set(order))  # each item at most once
    drawn = Counter(domains[i] for i in order)
    assert drawn["a"] == 100 and drawn["b"] < 60  # a ran out first, having been drawn about four times as often
    assert mixture_order(domains, {"a": 0.8, "b": 0.2}, seed=3) == order  # seeded


def test_mixture_order_names_unknown_domains():
    with pytest.raises(ValueError, match="mixture weights name domains with no items: c; domains present: a, b"):
        mixture_order(["a", "b"], {"c": 1.0})


def test_mmr1_batches_are_half_weighted_half_uniform():
    weights = [0.25] + [0.0] * 9  # only item 0 is "learnable"
    order = mmr1_order(weights, prompts_per_batch=4, n_batches=50, seed=1)
    assert len(order) == 200
    weighted = [order[b * 4 + k] for b in range(50) for k in (0, 1)]
    uniform = [order[b * 4 + k] for b in range(50) for k in (2, 3)]
    assert set(weighted) == {0}
    assert len(set(uniform)) >= 8  # the uniform half reaches (nearly) every item
    assert Counter(uniform)[0] < 30


def test_mmr1_with_no_weights_is_uniform_and_odd_batches_favour_the_uniform_half():
    order = mmr1_order([None, None, None], prompts_per_batch=3, n_batches=100, seed=0)
    assert len(order) == 300 and set(order) == {0, 1, 2}
    with pytest.raises(ValueError, match="prompts_per_batch and n_batches must be >= 1"):
        mmr1_order([1.0], prompts_per_batch=0, n_batches=1)


@pytest.mark.parametrize("module", ["pipelines.rewards", "pipelines.training_order", "pipelines.policy.ptst",
                                    "pipelines.policy.dynamic_sampling", "pipelines.policy.grpo", "pipelines.stages.sft"])
def test_doctests(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
