"""The order a GRPO run sees its items in, when it is not TRL's shuffle: a mixture, or MMR1's batches.

Both return indices into the training items (repeats allowed); the GRPO stage lays the rows out in
that order and turns TRL's shuffling off, so the trainer draws exactly this sequence.

- `mixture_order`: MoDoMoDo's domain sampler (pipelines/domain_sampler.py) over the items' domain
  labels: each draw picks a domain by weight, then an unseen item of it, until a domain runs out.
- `mmr1_order`: MMR1's batch composition (ALGORITHMS §7): half of every batch drawn with
  probability proportional to a weight (p(1−p) over the policy's rollouts: learnability), half
  drawn uniformly, so easy and unsolved items still appear.
"""

import random
from collections.abc import Sequence

from pipelines.domain_sampler import domain_sample

BATCH_COMPOSITIONS = ("uniform", "mmr1")  # uniform: TRL's own shuffle (or the mixture's order)


def mixture_order(domains: Sequence[str], weights: dict[str, float], *, seed: int = 0) -> list[int]:
    """Indices in the order MoDoMoDo's sampler draws them (stops when a chosen domain runs out).

    >>> mixture_order(["a", "b", "a", "b"], {"a": 1.0}, seed=0)  # b has no weight: never drawn
    [2, 0]
    """
    return domain_sample(domains, weights, seed=seed)


def mmr1_order(weights: Sequence[float | None], *, prompts_per_batch: int, n_batches: int, seed: int = 0) -> list[int]:
    """`n_batches` batches of `prompts_per_batch` indices: the first half of each drawn by weight, the rest uniformly.

    Missing weights count as 0. With no positive weight at all, every draw is uniform. An odd batch
    gives the extra slot to the uniform half.

    >>> order = mmr1_order([0.0, 0.25, 0.0, 0.0], prompts_per_batch=4, n_batches=3, seed=0)
    >>> [order[i] for i in (0, 1, 4, 5, 8, 9)]  # the weighted halves: only item 1 has weight
    [1, 1, 1, 1, 1, 1]
    >>> len(order)
    12
    """
    if prompts_per_batch < 1 or n_batches < 1:
        raise ValueError(f"prompts_per_batch and n_batches must be >= 1, got {prompts_per_batch} and {n_batches}")
    rng = random.Random(seed)
    items = range(len(weights))
    cleaned = [max(float(w or 0.0), 0.0) for w in weights]
    weighted_share = prompts_per_batch // 2
    order = []
    for _ in range(n_batches):
        if sum(cleaned) > 0:
            order += rng.choices(items, weights=cleaned, k=weighted_share)
        else:
            order += rng.choices(items, k=weighted_share)
        order += rng.choices(items, k=prompts_per_batch - weighted_share)
    return order
