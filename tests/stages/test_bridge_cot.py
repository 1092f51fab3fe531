"""bridge_cot: pseudo-CoT → bridging description → the reasoner's long chain, one cots row per link."""

import pytest

from pipelines.stage import account
from pipelines.stages.bridge_cot import bridge_cot
from pipelines.world import qa_items, scene_from_json
from schemas import make_id
from tests.stages.fixtures import Counting, Roles, context, failing, ingest_scenes, teacher


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("dataset")


@pytest.fixture(scope="module")
def assets(root):
    return ingest_scenes(root, scenes=4)


def questions(ctx, assets, per_image=2):
    rows = []
    for asset in assets.to_pylist():
        for item in [i for i in qa_items(scene_from_json(asset["scene"])) if i.answer_type != "des"][:per_image]:
            rows.append({"question_id": make_id("question", [asset["asset_id"]], item.question), "asset_ids": [asset["asset_id"]],
                         "question": item.question, "answer": item.answer, "answer_type": item.answer_type,
                         "choices": list(item.choices), "category": item.category, "abilities": list(item.abilities),
                         "reward_route": "rule", "generator": "test"})
    return ctx.rows("questions", rows)


def test_each_question_gets_three_linked_cots_and_the_chain_reaches_the_answer(root, assets):
    mllm, reasoner = Counting(teacher()), Counting(teacher())
    ctx = context("bridge_cot", root, Roles(captioner=mllm, reasoner=reasoner))
    subject = questions(ctx, assets)
    result = bridge_cot(subject, assets, ctx)
    counts = account(bridge_cot, subject, result)
    assert counts.n_out == subject.num_rows and counts.n_rejected == 0
    kinds = {}
    for row in result.out.to_pylist():
        kinds.setdefault(row["question_id"], {})[row["kind"]] = row
    answers = dict(zip(subject["question_id"].to_pylist(), subject["answer"].to_pylist()))
    for question_id, by_kind in kinds.items():
        assert set(by_kind) == {"pseudo", "bridge", "bridged"}
        assert by_kind["bridged"]["final_answer"] == answers[question_id]
        assert by_kind["bridged"]["reflections"] >= 1 and by_kind["pseudo"]["final_answer"] is None
    # the MLLM sees the image for both of its links; the reasoner never does, and reads the description
    assert {r.task for r in mllm.requests} == {"bridge_cot.pseudo", "bridge_cot.describe"}
    assert all(r.messages[0]["content"][0]["type"] == "image" for r in mllm.requests)
    assert all(all(p["type"] == "text" for p in r.messages[0]["content"]) for r in reasoner.requests)
    described = {r.hints["question"]: r for r in mllm.requests if r.task == "bridge_cot.describe"}
    assert all("A first look at the image:" in r.messages[0]["content"][1]["text"] for r in described.values())


def test_a_broken_link_rejects_the_question_with_its_reason(root, assets):
    ctx = context("bridge_cot", root, Roles(captioner=teacher(), reasoner=failing("reasoner down")))
    subject = questions(ctx, assets, per_image=1)
    result = bridge_cot(subject, assets, ctx)
    counts = account(bridge_cot, subject, result)
    assert counts.n_rejected == subject.num_rows and counts.by_reason == {"bridge_cot.engine_error": subject.num_rows}
    assert {r["kind"] for r in result.out.to_pylist()} == {"pseudo", "bridge"}  # the links that worked are kept
