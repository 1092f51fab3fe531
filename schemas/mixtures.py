"""mixtures: one row per candidate or observed data mixture over domains."""

from pydantic import Field

from schemas.base import Lineage, table


class Mixture(Lineage):
    """Weights over domains, with the surrogate's prediction and/or the observed pilot score."""

    mixture_id: str
    domain_column: str
    domains: list[str]
    weights: list[float] = Field(description="one weight per domain, summing to 1")
    method: str = Field(description="observed (mixture stage); seed, alpha, ridge_vif, leave_one_out, surrogate (MoDoMoDo)")
    predicted: float | None = None
    observed: float | None = None
    detail: str | None = Field(None, description="JSON: how it was made (seed kind, pilot scores, heuristic, surrogate fit)")


TABLE = table("mixtures", Mixture, "mixture_id")
