"""policies: one row per policy (base, SFT or GRPO-trained) that produced rollouts or difficulty rows."""

from pydantic import Field

from schemas.base import Lineage, table


class Policy(Lineage):
    """A policy checkpoint on disk; `policy_id` is derived from its weights."""

    policy_id: str = Field(description="'<name>-' + sha256 of the saved weights")
    base_policy_id: str | None = None
    kind: str = Field(description="base, sft or grpo")
    path: str = Field(description="checkpoint folder (save_pretrained layout)")
    architecture: str
    data_version: int | None = Field(None, description="dataset version it was trained on; None for base")
    n_train_items: int = 0
    steps: int = 0
    train_reward: float | None = Field(None, description="mean reward over the last training steps")
    config: str = Field("{}", description="JSON: training parameters")
    metrics: str = Field("{}", description="JSON: per-step training log")


TABLE = table("policies", Policy, "policy_id")
