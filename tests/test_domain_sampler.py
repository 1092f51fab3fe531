"""The MoDoMoDo domain sampler: draws follow the weights, never repeat, and stop when a domain runs out."""

from collections import Counter

import pytest

from pipelines.domain_sampler import domain_sample


def test_draws_follow_the_weights_and_never_repeat():
    domains = ["a"] * 3000 + ["b"] * 3000
    order = domain_sample(domains, {"a": 0.8, "b": 0.2}, seed=3, max_items=2000)
    assert len(order) == len(set(order)) == 2000
    share_a = Counter(domains[i] for i in order)["a"] / len(order)
    assert 0.76 < share_a < 0.84


def test_stops_the_first_time_a_drawn_domain_is_exhausted():
    domains = ["a"] * 5 + ["b"] * 100
    order = domain_sample(domains, {"a": 0.5, "b": 0.5}, seed=0)
    drawn = Counter(domains[i] for i in order)
    assert drawn["a"] == 5 and drawn["b"] < 100  # a ran out first; b still had items


def test_zero_weight_domains_are_never_drawn_and_the_seed_fixes_the_order():
    domains = ["a", "b", "c"] * 10
    order = domain_sample(domains, {"a": 1.0, "b": 0.0, "c": 1.0}, seed=7)
    assert {domains[i] for i in order} <= {"a", "c"}
    assert order == domain_sample(domains, {"a": 1.0, "b": 0.0, "c": 1.0}, seed=7)


@pytest.mark.parametrize("weights, message", [({"z": 1.0}, "no items: z"), ({"a": -1.0}, "non-negative"),
                                              ({"a": 0.0}, "positive weight")])
def test_bad_weights_say_what_is_wrong(weights, message):
    with pytest.raises(ValueError, match=message):
        domain_sample(["a", "b"], weights)
