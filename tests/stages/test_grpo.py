"""grpo: the stage on real synthetic assets and the real tiny policy: the policy row, checkpoints, start policy, mixture.

Training is a couple of steps (about 0.3 s each); what is checked is what the stage adds around
TRL: which items train and which are rejected with which reason, where the policy and its
checkpoints land, and that the `policies` row says everything about how it was trained.
"""

import json
import re

import pytest

from pipelines.policy.tiny_llava import weights_hash
from pipelines.stage import account
from pipelines.stages.grpo import grpo
from pipelines.stages.rollouts import policy_id_of
from schemas import TABLES
from tests.policy import one_thread
from tests.stages.fixtures import context, ingest_scenes, reasons_by_subject, registry, scripted, true_questions

TINY = {"engine": "hf", "model": "local:tiny-llava"}
_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset")
    assets = ingest_scenes(root, scenes=4, families=["counting", "arithmetic"])
    questions = true_questions(context("synthesize_qa", root), assets, types=("mc", "num", "fib"), per_asset=2)
    engines = registry(root, policy=TINY, judge=scripted())  # the policy is built once per machine (THINKMILL_MODELS)
    return root, assets, questions, engines


def difficulty_rows(ctx, questions, unselected: int = 2):
    """One difficulty row per question for the base policy; the last `unselected` ones not selected."""
    ids = questions["question_id"].to_pylist()
    return ctx.rows("difficulty", [{"difficulty_id": f"d-{q}", "question_id": q, "policy_id": "tiny-llava@0123456789ab",
                                    "method": "group_stats", "pass_rate": 0.5, "learnability": 0.25,
                                    "selected": index < len(ids) - unselected} for index, q in enumerate(ids)])


def no_policies():
    return TABLES["policies"].schema.empty_table()


def run(world, **params):
    root, assets, questions, engines = world
    ctx = context("grpo", root, engines, data_version=3)
    table = difficulty_rows(ctx, questions)
    result = grpo(table, questions, assets, params.pop("run_policies", no_policies()), ctx, **params)
    return result, account(grpo, table, result)


@pytest.fixture(scope="module")
def trained(world):
    return run(world, max_steps=2, batch_size=8, num_generations=4, max_completion_length=24, learning_rate=1e-3,
               save_steps=1, rewards=["format", "hybrid_wethink"])


def test_selected_questions_train_and_the_rest_are_rejected(trained):
    result, counts = trained
    assert (counts.n_in, counts.n_out, counts.n_rejected) == (8, 6, 2)
    assert counts.by_reason == {"grpo.not_selected": 2}


def test_the_policy_row_is_complete_and_names_the_trained_weights(world, trained):
    root, _, _, engines = world
    (row,) = trained[0].out.to_pylist()
    base = engines.engine("policy")
    assert re.fullmatch(r"tiny-llava-grpo@[0-9a-f]{12}", row["policy_id"])
    assert row["base_policy_id"] == policy_id_of(base)
    assert row["path"] == str(root / "policies" / f"tiny-llava-grpo-{row['policy_id'].split('@')[1]}")
    assert weights_hash(row["path"]).startswith(row["policy_id"].split("@")[1])
    assert weights_hash(row["path"]) != base.revision  # the weights changed
    assert (row["kind"], row["architecture"], row["data_version"], row["n_train_items"], row["steps"]) == (
        "grpo", "LlavaForConditionalGeneration", 3, 6, 2)
    assert row["train_reward"] is not None and 0 <= row["train_reward"] <= 2
    config = json.loads(row["config"])
    assert config["rewards"] == ["format", "hybrid_wethink"] and config["max_steps"] == 2 and config["save_steps"] == 1
    assert {"start_from", "ptst", "online_filter", "mixture", "batch_composition", "lora_rank", "no_answer_guard"} <= set(config)
    metrics = json.loads(row["metrics"])
    assert [step["step"] for step in metrics["log"]] == [1, 2]
    assert "rewards/hybrid_wethink_reward/mean" in metrics["log"][0]
    assert metrics["device"] == {"use_cpu": True, "bf16": False, "use_vllm": False}


def test_checkpoints_land_inside_the_policy_folder_and_nothing_else_is_left(world, trained):
    root = world[0]
    (row,) = trained[0].out.to_pylist()
    metrics = json.loads(row["metrics"])
    assert metrics["checkpoints"] == ["checkpoint-1", "checkpoint-2"]
    for name in metrics["checkpoints"]:
        assert (root / "policies" / row["path"].split("/")[-1] / "checkpoints" / name / "model.safetensors").exists()
    assert not [p.name for p in (root / "policies").iterdir() if p.name.startswith(".")]  # no training folder left


def test_starting_from_sft_without_an_sft_step_rejects_every_selected_item(world):
    result, counts = run(world, start_from="sft", max_steps=1)
    assert result.out.num_rows == 0
    assert counts.by_reason == {"grpo.not_selected": 2, "grpo.no_start_policy": 6}
    detail = result.rejects.to_pylist()[-1]["detail"]
    assert "add an `sft` step before `grpo`" in detail


def test_a_mixture_trains_in_its_order_and_rejects_what_it_never_drew(world):
    result, counts = run(world, mixture={"counting": 1.0}, max_steps=1, max_completion_length=16)
    _, _, questions, _ = world
    category = dict(zip(questions["question_id"].to_pylist(), questions["category"].to_pylist()))
    reasons = reasons_by_subject(result)
    never_drawn = [s for s, r in reasons.items() if r == "grpo.not_drawn_by_mixture"]
    assert never_drawn and all(category[s.removeprefix("d-")] == "arithmetic" for s in never_drawn)
    (row,) = result.out.to_pylist()
    assert row["n_train_items"] == counts.n_out == 6 - len(never_drawn)
    assert json.loads(row["config"])["mixture"] == {"counting": 1.0}


def test_mmr1_batches_train_every_selected_item_in_a_fixed_order(world):
    result, counts = run(world, batch_composition="mmr1", max_steps=1, max_completion_length=16)
    (row,) = result.out.to_pylist()
    assert counts.n_out == row["n_train_items"] == 6
    assert json.loads(row["config"])["batch_composition"] == "mmr1"


def test_bad_parameters_are_reported_together_before_any_training(world):
    with pytest.raises(ValueError) as error:
        run(world, rewards=["acuracy"], online_filter="dapoo", ptst=[[32, 8], [64, 2]], batch_size=6)
    message = str(error.value)
    assert "unknown reward 'acuracy' (known: format, format_boxed, accuracy" in message
    assert "online_filter='dapoo': known values are none, dapo" in message
    assert "stage 1: 32 × 8 = 256, stage 2: 64 × 2 = 128" in message
    assert "batch_size (6) must be a multiple of num_generations (4)" in message


def test_a_question_selected_by_two_methods_trains_once(world):
    root, assets, questions, engines = world
    ctx = context("grpo", root, engines)
    rows = [{k: v for k, v in r.items() if k not in ("run_id", "stage", "stage_version", "config_hash", "row_hash")}
            for r in difficulty_rows(ctx, questions).to_pylist()]
    rows.append({**rows[0], "difficulty_id": "m-first", "method": "mcts", "pass_rate": None, "mcts_iters": 7})
    table = ctx.rows("difficulty", rows)
    result = grpo(table, questions, assets, no_policies(), ctx, start_from="sft")  # stops before training
    counts = account(grpo, table, result)
    assert counts.by_reason == {"grpo.not_selected": 2, "grpo.same_question": 1, "grpo.no_start_policy": 6}
