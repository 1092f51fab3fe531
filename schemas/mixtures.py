"""mixtures: one row per candidate or observed data mixture over domains."""

from pydantic import Field

from schemas.base import Lineage, table


class Mixture(Lineage):
    """Weights over domains, with the surrogate's prediction and/or the observed pilot score."""

    mixture_id: str
    domain_column: str
    domains: list[str]
    weights: list[float] = Field(description="one weight per domain, summing to 1")
    method: str = Field(description="seed, heuristic name, or surrogate")
    predicted: float | None = None
    observed: float | None = None


TABLE = table("mixtures", Mixture, "mixture_id")
