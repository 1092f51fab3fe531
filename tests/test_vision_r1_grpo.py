"""`vision-r1-grpo` end to end through the real flow: sft on verified bridged chains, then grpo from that policy with PTST.

Checks what only a real run shows: the grpo step finds the policy the sft step of the same run
trained (the `run.policies` read), the phases of the PTST schedule really ran, every stage accounts
for its items, and a re-run with nothing changed trains nothing and commits nothing.
"""

import json

import pytest

from flows.recipe_flow import run
from stores.lake import Lake, dataset_root

pytestmark = pytest.mark.slow
OVERRIDES = ["source.synthetic.scenes=8", "synthesize_qa.detail_rounds=0", "rollouts.group_size=4", "sft.max_steps=4",
             "grpo.max_steps=1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    return home, run("vision-r1-grpo", OVERRIDES, home=home), run("vision-r1-grpo", OVERRIDES, home=home)


def test_grpo_trains_on_from_the_sft_policy_of_the_same_run(runs):
    home, first, _ = runs
    assert first["version"] == 1
    with Lake.open(dataset_root(home, "vision-r1"), read_only=True) as lake:
        policies = {p["kind"]: p for p in lake.sql("SELECT * FROM policies").to_pylist()}
    assert set(policies) == {"sft", "grpo"}
    assert policies["grpo"]["base_policy_id"] == policies["sft"]["policy_id"]
    assert policies["sft"]["policy_id"].startswith("tiny-llava-sft@")
    assert policies["grpo"]["policy_id"].startswith("tiny-llava-sft-grpo@")
    metrics = json.loads(policies["grpo"]["metrics"])
    assert [(p["max_completion_length"], p["num_generations"], p["steps"]) for p in metrics["phases"]] == [(32, 8, 1), (64, 4, 1)]
    assert json.loads(policies["grpo"]["config"])["rewards"] == ["hfrrf"]


def test_every_stage_accounts_for_its_items(runs):
    _, first, _ = runs
    steps = {s["stage"]: s for s in first["steps"]}
    for stage, step in steps.items():
        assert step["n_in"] == step["n_out"] + step["n_rejected"], stage
    assert 0 < steps["sft"]["n_out"] <= steps["verify"]["n_out"]  # at most one verified bridged chain per kept question
    assert steps["sft"]["rejected_by_reason"].get("sft.other_kind", 0) > 0  # the pseudo and bridge links do not train


def test_a_rerun_with_nothing_changed_trains_nothing(runs):
    _, first, again = runs
    assert again["version"] is None
    cached = {s["stage"]: s["n_shards_cached"] == s["n_shards"] for s in again["steps"]}
    assert cached["sft"] and cached["grpo"], cached
