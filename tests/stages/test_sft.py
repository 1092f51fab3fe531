"""sft: cold-start SFT (TRL's SFTTrainer) on verified chains, on the real tiny policy; grpo then trains on from it.

Chains are written from the synthetic world's exact reasoning steps; verdicts are set by hand so
that each way a chain can be refused occurs once. The stage must train on the verified chains of
the wanted kind only, lower its loss, change the weights, and write a `policies` row of kind sft
that a following `grpo` step (`start_from: sft`) picks up.
"""

import json
import re

import pytest

from pipelines.policy.tiny_llava import weights_hash
from pipelines.stage import account
from pipelines.stages.grpo import grpo
from pipelines.stages.rollouts import policy_id_of
from pipelines.stages.sft import sft, sft_target
from pipelines.world import knowledge_of
from schemas import make_id
from tests.policy import one_thread
from tests.stages.fixtures import context, ingest_scenes, reasons_by_subject, registry, scene_of, scripted, true_questions

TINY = {"engine": "hf", "model": "local:tiny-llava"}
_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset")
    assets = ingest_scenes(root, scenes=4, families=["counting", "arithmetic"])
    questions = true_questions(context("synthesize_qa", root), assets, types=("mc", "num", "fib"), per_asset=2)
    return root, assets, questions, registry(root, policy=TINY, judge=scripted())


def chains(ctx, questions, assets):
    """A refined chain per question from the world's steps, one raw and one bridged chain, and verdicts:
    the first 6 refined chains pass, the 7th fails, the 8th has none."""
    scenes = {a["asset_id"]: scene_of(a) for a in assets.to_pylist() if a["scene"]}
    cots, verdicts = [], []
    for index, q in enumerate(questions.to_pylist()):
        scene = scenes[q["asset_ids"][0]]
        item = next(i for i in knowledge_of(scene).qa_items(scene) if i.question == q["question"])
        cot_id = make_id("cot", q["question_id"], "refined")
        cots.append({"cot_id": cot_id, "question_id": q["question_id"], "kind": "refined", "final_answer": q["answer"],
                     "text": f"<think>{' '.join(item.steps)}</think><answer>{q['answer']}</answer>", "n_tokens": 9, "reflections": 0})
        if index < 7:
            verdicts.append({"verdict_id": make_id("verdict", cot_id), "subject_id": cot_id, "question_id": q["question_id"],
                             "verifier": "numeric", "passed": index < 6, "score": float(index < 6)})
    first = questions["question_id"][0].as_py()
    for kind in ("raw", "bridged"):
        cot_id = make_id("cot", first, kind)
        cots.append({"cot_id": cot_id, "question_id": first, "kind": kind, "final_answer": "1",
                     "text": "Wait, let me count. The answer is 1.", "n_tokens": 8, "reflections": 1})
        verdicts.append({"verdict_id": make_id("verdict", cot_id), "subject_id": cot_id, "question_id": first,
                         "verifier": "numeric", "passed": True, "score": 1.0})
    return ctx.rows("cots", cots), ctx.rows("verdicts", verdicts)


@pytest.fixture(scope="module")
def trained(world):
    root, assets, questions, engines = world
    ctx = context("sft", root, engines, data_version=2)
    cots, verdicts = chains(ctx, questions, assets)
    result = sft(cots, verdicts, questions, assets, ctx, max_steps=8, batch_size=4, learning_rate=2e-3)
    return result, account(sft, cots, result)


def test_only_verified_chains_of_the_wanted_kind_train(trained):
    result, counts = trained
    assert (counts.n_in, counts.n_out, counts.n_rejected) == (10, 6, 4)
    assert counts.by_reason == {"sft.other_kind": 2, "sft.failed_verification": 1, "sft.unverified": 1}
    assert "run `verify` with cot_kind matching" in [r["detail"] for r in result.rejects.to_pylist() if r["reason"] == "sft.unverified"][0]


def test_sft_lowers_the_loss_changes_the_weights_and_writes_its_policy_row(world, trained):
    root, _, _, engines = world
    (row,) = trained[0].out.to_pylist()
    base = engines.engine("policy")
    metrics = json.loads(row["metrics"])
    assert len(metrics["losses"]) == 8 and metrics["final_loss"] < metrics["initial_loss"]
    assert re.fullmatch(r"tiny-llava-sft@[0-9a-f]{12}", row["policy_id"])
    assert (row["kind"], row["base_policy_id"], row["data_version"], row["n_train_items"], row["steps"]) == (
        "sft", policy_id_of(base), 2, 6, 8)
    assert row["path"].startswith(str(root / "policies" / "tiny-llava-sft-"))
    assert weights_hash(row["path"]) != base.revision
    assert json.loads(row["config"])["cot_kind"] == "refined"


def test_grpo_starting_from_sft_trains_on_from_the_sft_policy(world, trained):
    root, assets, questions, engines = world
    (sft_row,) = trained[0].out.to_pylist()
    ctx = context("grpo", root, engines)
    difficulty = ctx.rows("difficulty", [{"difficulty_id": f"d-{q}", "question_id": q, "policy_id": "p", "method": "group_stats",
                                          "selected": True} for q in questions["question_id"].to_pylist()[:4]])
    result = grpo(difficulty, questions, assets, trained[0].out, ctx, start_from="sft", max_steps=1, max_completion_length=16)
    (row,) = result.out.to_pylist()
    assert row["base_policy_id"] == sft_row["policy_id"]
    assert re.fullmatch(r"tiny-llava-sft-grpo@[0-9a-f]{12}", row["policy_id"])
    assert json.loads(row["config"])["start_from"] == "sft"


def test_bridged_chains_train_when_asked_and_an_unknown_kind_is_an_error(world):
    root, assets, questions, engines = world
    ctx = context("sft", root, engines)
    cots, verdicts = chains(ctx, questions, assets)
    result = sft(cots, verdicts, questions, assets, ctx, cot_kind="bridged", max_steps=1, batch_size=1)
    assert result.kept == [c for c, k in zip(cots["cot_id"].to_pylist(), cots["kind"].to_pylist()) if k == "bridged"]
    assert set(reasons_by_subject(result).values()) == {"sft.other_kind"}
    with pytest.raises(ValueError, match="cot_kind='raw' is not a chain that ends in an answer; use one of refined, bridged"):
        sft(cots, verdicts, questions, assets, ctx, cot_kind="raw")


def test_the_target_is_the_think_answer_format_whatever_the_chain_looked_like():
    assert sft_target("<think>2 + 2</think><answer>4</answer>", "4") == "<think>2 + 2</think><answer>4</answer>"
    long_chain = "<think>Two and two. Wait, yes.</think>\n\nSo the total is \\boxed{4}."
    assert sft_target(long_chain, "4") == "<think>Two and two. Wait, yes.\n\nSo the total is \\boxed{4}.</think><answer>4</answer>"
    assert sft_target("Count: 4 <answer>4</answer> trailing", "4") == "<think>Count: 4</think><answer>4</answer>"


def test_a_lora_cold_start_saves_the_merged_policy_and_its_adapter(world):
    root, assets, questions, engines = world
    ctx = context("sft", root, engines)
    cots, verdicts = chains(ctx, questions, assets)
    result = sft(cots, verdicts, questions, assets, ctx, max_steps=2, batch_size=4, learning_rate=1e-2, lora_rank=4)
    (row,) = result.out.to_pylist()
    assert (root / "policies" / row["path"].split("/")[-1] / "lora-adapter" / "adapter_model.safetensors").exists()
    assert json.loads(row["metrics"])["lora"]["saved"] == "merged"
    assert weights_hash(row["path"]) != engines.engine("policy").revision
