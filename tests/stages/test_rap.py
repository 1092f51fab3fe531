"""rap: the stage over planted rollout tables; ACE from the real tiny policy's attentions, and skipped on openai.

Rollout tables are planted (the CDE evidence is then exact); the policy that ACE asks is real: the
tiny LLaVA through the hf engine, or a loopback OpenAI-compatible server that has no attentions.
"""

import json
import math

import pyarrow as pa
import pytest

from pipelines.engines import EngineRegistry
from pipelines.engines.base import Request
from pipelines.policy.prompt import policy_messages
from pipelines.rap import ACE_PROMPT_VERSION, attention_confidence
from pipelines.stage import account, kept_ids
from pipelines.stages.rap import rap
from pipelines.stages.rollouts import policy_id_of
from pipelines.visuals import Visuals
from schemas import make_id
from tests.policy import one_thread
from tests.servers import fault_server as faults
from tests.stages.fixtures import FakeEngine, Roles, context, ingest_scenes, registry, true_questions

fault_server_module, fault_server = faults.fault_server_module, faults.fault_server
_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)
TINY = {"engine": "hf", "model": "local:tiny-llava"}


def planted_rollouts(ctx, policy_id: str, counts: dict[str, tuple[int, int]], m: int = 8):
    """question id -> (correct with the image, correct without), of m rollouts each."""
    rows = []
    for question_id, (with_image, text_only) in counts.items():
        for mode, n_correct in ((True, with_image), (False, text_only)):
            for k in range(m):
                correct = k < n_correct
                rows.append({"rollout_id": make_id("rollout", question_id, mode, k), "question_id": question_id,
                             "policy_id": policy_id, "group_id": make_id("group", question_id, mode), "sample_index": k,
                             "with_image": mode, "response": "", "extracted": None, "correct": correct,
                             "format_ok": True, "reward": 1.0 if correct else 0.0})
    return ctx.rows("rollouts", rows)


def questions_table(ctx, ids: list[str]):
    return ctx.rows("questions", [{"question_id": q, "asset_ids": ["asset-none"], "question": f"{q}?", "answer": "1",
                                   "answer_type": "num", "category": "counting", "abilities": ["counting"],
                                   "reward_route": "rule", "generator": "g"} for q in ids])


FAKE_POLICY = FakeEngine(lambda request: "<think>x</think><answer>1</answer>", model="/models/tiny-llava-0123456789ab",
                         revision="f" * 64)


def test_every_question_is_kept_or_rejected_with_its_reason(tmp_path):
    ctx = context("rap", tmp_path, Roles(policy=FAKE_POLICY))
    policy_id = policy_id_of(FAKE_POLICY)
    counts = {"prior": (7, 7), "needs_image": (6, 0), "trivial": (8, 0), "hard_prior": (2, 1)}
    rollouts = planted_rollouts(ctx, policy_id, counts)
    short = planted_rollouts(ctx, policy_id, {"few": (2, 0)}, m=3)
    other_policy = planted_rollouts(ctx, "someone-else@000000000000", {"unrolled": (8, 0)})
    questions = questions_table(ctx, [*counts, "few", "unrolled"])
    result = rap(questions, pa.concat_tables([rollouts, short, other_policy]), ctx.empty("assets"), ctx)

    counts_by_stage = account(rap, questions, result)
    assert (counts_by_stage.n_in, counts_by_stage.n_out, counts_by_stage.n_rejected) == (6, 2, 4)
    assert counts_by_stage.by_reason == {"rap.language_prior": 1, "rap.replaced_by_harder": 1, "rap.too_few_rollouts": 2}
    assert kept_ids(rap, questions, result) == ["needs_image", "hard_prior"]  # hard_prior replaced the trivial one
    rows = {r["question_id"]: r for r in result.out.to_pylist()}
    assert set(rows) == set(counts)  # a row for every scored question, selected or not: the gap histogram is whole
    assert all(r["method"] == "rap" and r["policy_id"] == policy_id for r in rows.values())
    assert rows["needs_image"]["cde_gap"] == 0.75 and rows["needs_image"]["pass_rate_text_only"] == 0.0
    assert rows["needs_image"]["n_correct"] == 6 and rows["needs_image"]["n_rollouts_text_only"] == 8
    assert [rows[q]["selected"] for q in counts] == [False, True, False, True]
    assert rows["trivial"]["reason"].startswith("rap.paper: all 8 rollouts with the image correct")
    detail = json.loads(rows["needs_image"]["detail"])
    assert detail["mode"] == "paper" and detail["ace_skipped"] == "no prompt: its image is not in the dataset"
    assert FAKE_POLICY.requests == []
    details = {r["subject_id"]: r["detail"] for r in result.rejects.to_pylist()}
    assert "someone-else" not in details["unrolled"] and "0 rollouts with the image and 0 without" in details["unrolled"]
    assert "3 rollouts with the image and 3 without" in details["few"]


def test_code_mode_through_the_stage(tmp_path):
    ctx = context("rap", tmp_path, Roles(policy=FAKE_POLICY))
    counts = {"trivial": (8, 0), "modest_gap": (5, 2), "filler": (4, 1), "filler_2": (3, 0)}
    questions = questions_table(ctx, list(counts))
    result = rap(questions, planted_rollouts(ctx, policy_id_of(FAKE_POLICY), counts), ctx.empty("assets"), ctx, mode="code")
    rows = {r["question_id"]: r for r in result.out.to_pylist()}
    assert rows["modest_gap"]["selected"] and not rows["trivial"]["selected"]
    assert json.loads(rows["modest_gap"]["detail"])["similarity"] == pytest.approx(1.0)
    assert dict(zip(result.rejects["subject_id"].to_pylist(), result.rejects["reason"].to_pylist()))["trivial"] == "rap.all_correct"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Two questions on rendered scenes, and the tiny policy (built once per machine) bound as `policy`."""
    root = tmp_path_factory.mktemp("rap-tiny")
    assets = ingest_scenes(root, scenes=2)
    engines = registry(root, policy=TINY)
    ctx = context("rap", root, engines)
    questions = true_questions(ctx, assets, types=("num",), per_asset=1)
    assert questions.num_rows == 2
    policy = engines.engine("policy")
    rollouts = planted_rollouts(ctx, policy_id_of(policy), {q: (6, 0) for q in questions.column("question_id").to_pylist()})
    return {"root": root, "assets": assets, "ctx": ctx, "questions": questions, "policy": policy, "rollouts": rollouts}


def test_ace_is_computed_from_the_real_attentions_of_the_tiny_policy(tiny):
    result = rap(tiny["questions"], tiny["rollouts"], tiny["assets"], tiny["ctx"], min_ace=1e-40)
    rows = result.out.to_pylist()
    assert len(rows) == 2 and all(r["selected"] for r in rows)
    visuals = Visuals.of(tiny["assets"].to_pylist())
    assets = {a["asset_id"]: a for a in visuals.items}
    for row, q in zip(rows, tiny["questions"].to_pylist()):
        assert isinstance(row["ace"], float) and math.isfinite(row["ace"])
        assert "ace_skipped" not in json.loads(row["detail"])
        # The same greedy request again, read independently: the stage's ace is this completion's confidence.
        messages = policy_messages(q["question"], q["answer_type"], q["choices"] or (),
                                   image=visuals.policy_part(assets[q["asset_ids"][0]], tiny["root"]))
        (response,) = tiny["policy"].generate([Request(messages=messages, n=1, temperature=0.0, max_tokens=48, seed=0,
                                                       prompt_version=ACE_PROMPT_VERSION, task="rap.ace",
                                                       return_attentions=True)])
        (attention,) = response.attentions
        assert len(attention) > 1 and all(0 < sum(line) <= 1 + 1e-5 for line in attention)  # the prompt takes the rest
        assert row["ace"] == pytest.approx(attention_confidence(attention, sigma=2.0, length_normalised=True))
        assert row["ace"] != pytest.approx(attention_confidence(attention, sigma=2.0, length_normalised=False))


def test_the_threshold_is_compared_in_log_space_on_real_scores(tiny):
    scores = [r["ace"] for r in rap(tiny["questions"], tiny["rollouts"], tiny["assets"], tiny["ctx"], min_ace=1e-40).out.to_pylist()]
    above_all = math.exp(max(scores)) * 1.01
    strict = rap(tiny["questions"], tiny["rollouts"], tiny["assets"], tiny["ctx"], min_ace=above_all)
    assert set(strict.rejects["reason"].to_pylist()) == {"rap.attention_biased"} and strict.rejects.num_rows == 2
    assert all("< log(" in d for d in strict.rejects["detail"].to_pylist())
    assert max(scores) > min(scores)  # two different completions, two different confidences
    between = math.exp((max(scores) + min(scores)) / 2)
    mixed = rap(tiny["questions"], tiny["rollouts"], tiny["assets"], tiny["ctx"], min_ace=between)
    assert mixed.rejects.num_rows == 1 and mixed.out.filter(mixed.out["selected"])["ace"].to_pylist() == [max(scores)]
    below_all = math.exp(min(scores)) * 0.99
    assert rap(tiny["questions"], tiny["rollouts"], tiny["assets"], tiny["ctx"], min_ace=below_all).rejects.num_rows == 0


def test_ace_is_skipped_cleanly_on_the_openai_engine(fault_server, tmp_path):
    assets = ingest_scenes(tmp_path, scenes=2)
    profile = {"engine": "openai", "model": "fault-model", "options": {"base_url": fault_server.url, "max_retries": 0}}
    engines = EngineRegistry({"policy": profile}, home=tmp_path)
    ctx = context("rap", tmp_path, engines)
    questions = true_questions(ctx, assets, types=("num",), per_asset=1)
    policy = engines.engine("policy")
    ids = questions.column("question_id").to_pylist()
    rollouts = planted_rollouts(ctx, policy_id_of(policy), {ids[0]: (6, 0), ids[1]: (5, 1)})

    result = rap(questions, rollouts, assets, ctx)

    chats = [r for r in fault_server.requests if r.path.endswith("/chat/completions")]
    assert len(chats) == 1  # one probe; the answer had no attentions, so nothing more was sent
    rows = result.out.to_pylist()
    assert [r["selected"] for r in rows] == [True, True] and result.rejects.num_rows == 0
    for row in rows:
        assert row["ace"] is None
        skipped = json.loads(row["detail"])["ace_skipped"]
        assert skipped.startswith("engine 'openai' (fault-model) returns no attentions")
