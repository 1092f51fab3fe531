"""MoDoMoDo's domain sampler: the order in which a training run sees items under a mixture.

Each draw picks a domain with probability equal to its weight, then one item of that domain not
drawn before (in a seeded random order); drawing stops the moment a chosen domain has no unseen
item left (ALGORITHMS §5: "stop when any domain runs out"). A domain with weight 0 is never drawn.
Used by the mixture pilot runs and by GRPO training when a mixture is given.
"""

import random
from collections.abc import Sequence


def domain_sample(domains: Sequence[str], weights: dict[str, float], *, seed: int = 0,
                  max_items: int | None = None) -> list[int]:
    """Indices into `domains` (one domain label per item) in the order the sampler draws them.

    `weights`: domain -> non-negative weight (normalised here; domains absent from it weigh 0).
    `max_items`: stop after this many draws even if no domain ran out.

    >>> domain_sample(["a", "a", "b"], {"a": 1.0, "b": 0.0}, seed=0)  # b is never drawn; a runs out after 2
    [1, 0]
    >>> len(domain_sample(["a"] * 5 + ["b"] * 5, {"a": 0.5, "b": 0.5}, seed=1)) <= 10
    True
    """
    unknown = sorted(set(weights) - set(domains))
    if unknown:
        raise ValueError(f"mixture weights name domains with no items: {', '.join(unknown)}; "
                         f"domains present: {', '.join(sorted(set(domains)))}")
    if any(w < 0 for w in weights.values()):
        raise ValueError(f"mixture weights must be non-negative, got {weights}")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"mixture weights sum to {total}; at least one domain needs a positive weight")
    rng = random.Random(seed)
    pools: dict[str, list[int]] = {}
    for index, domain in enumerate(domains):
        pools.setdefault(domain, []).append(index)
    for pool in pools.values():
        rng.shuffle(pool)
    names = sorted(d for d, w in weights.items() if w > 0)
    probabilities = [weights[d] / total for d in names]
    order: list[int] = []
    while max_items is None or len(order) < max_items:
        domain = rng.choices(names, probabilities)[0]
        if not pools[domain]:
            break  # a domain ran out: the mixture can no longer be honoured
        order.append(pools[domain].pop())
    return order
