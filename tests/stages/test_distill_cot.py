"""distill_cot: a long raw chain from the caption, then a short refined one from the image, or a reject saying which failed."""

import pytest

from pipelines.answers import extract_answer
from pipelines.stage import account
from pipelines.stages.distill_cot import PROMPT_VERSION, distill_cot
from schemas import make_id
from tests.stages.fixtures import (
    Counting,
    FakeEngine,
    Roles,
    attempt,
    context,
    failing,
    ingest_scenes,
    scripted,
    teacher,
    teachers,
    true_captions,
    true_questions,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("dataset")


@pytest.fixture(scope="module")
def assets(root):
    return ingest_scenes(root, scenes=4)


@pytest.fixture(scope="module")
def captions(root, assets):
    return true_captions(context("caption", root), assets)


@pytest.fixture(scope="module")
def questions(root, assets):
    return true_questions(context("synthesize_qa", root), assets, per_asset=4)


def run(questions, captions, assets, root, engines, **params):
    result = distill_cot(questions, captions, assets, context("distill_cot", root, engines), **params)
    return result, account(distill_cot, questions, result)


def by_kind(result) -> dict[str, dict[str, dict]]:
    out = {"raw": {}, "refined": {}}
    for row in result.out.to_pylist():
        out[row["kind"]][row["question_id"]] = row
    return out


def reference(question: dict) -> str:
    return extract_answer(f"<answer>{question['answer']}</answer>")  # as any answer is read back


def test_noiseless_teachers_give_a_raw_and_a_refined_cot_reaching_the_true_answer(questions, captions, assets, root):
    engines = teachers(root, reasoner=scripted("reasoner-model"), captioner=scripted("vlm-model"))
    result, counts = run(questions, captions, assets, root, engines)
    assert (counts.n_in, counts.n_out, counts.n_rejected) == (16, 16, 0)
    cots = by_kind(result)
    assert set(cots["raw"]) == set(cots["refined"]) == set(questions["question_id"].to_pylist())
    for q in questions.to_pylist():
        raw, refined = cots["raw"][q["question_id"]], cots["refined"][q["question_id"]]
        assert raw["final_answer"] == refined["final_answer"] == reference(q)
        assert (raw["model"], refined["model"]) == ("reasoner-model", "vlm-model")
        assert raw["prompt_version"] == refined["prompt_version"] == PROMPT_VERSION


def test_the_raw_chain_reflects_and_the_refined_one_is_shorter_and_does_not(questions, captions, assets, root):
    result, _ = run(questions, captions, assets, root, teachers(root))
    cots = by_kind(result)
    for question_id, raw in cots["raw"].items():
        refined = cots["refined"][question_id]
        assert "Wait, let me double-check" in raw["text"]
        assert raw["reflections"] >= 3  # "Wait", "let me double-check", "Hmm", "let me re-check"
        assert refined["reflections"] == 0 and "Wait" not in refined["text"]
        assert refined["n_tokens"] < raw["n_tokens"]
        assert raw["n_tokens"] == len(raw["text"].split())
        assert refined["text"].startswith("<think>") and refined["text"].endswith("</answer>")


def test_cot_ids_are_content_addressed_and_stable_across_calls(questions, captions, assets, root):
    first, _ = run(questions, captions, assets, root, teachers(root))
    again, _ = run(questions, captions, assets, root, teachers(root))
    assert first.out["cot_id"].to_pylist() == again.out["cot_id"].to_pylist()
    assert len(set(first.out["cot_id"].to_pylist())) == 32
    question_id = questions["question_id"][0].as_py()
    assert make_id("cot", question_id, "refined", "scripted-teacher", PROMPT_VERSION) in first.out["cot_id"].to_pylist()


def test_refine_off_writes_raw_chains_only_and_never_calls_the_vlm(questions, captions, assets, root):
    vlm = Counting(teacher())
    result, counts = run(questions, captions, assets, root, Roles(reasoner=teacher(), captioner=vlm), refine=False)
    assert set(result.out["kind"].to_pylist()) == {"raw"} and result.out.num_rows == 16
    assert vlm.requests == [] and counts.n_out == 16


def test_the_refine_request_shows_the_image_and_the_raw_final_answer(questions, captions, assets, root):
    vlm = Counting(teacher())
    run(questions.slice(0, 1), captions, assets, root, Roles(reasoner=teacher(), captioner=vlm))
    (request,) = vlm.requests
    q = questions.to_pylist()[0]
    asset = next(a for a in assets.to_pylist() if a["asset_id"] == q["asset_ids"][0])
    image, text = request.messages[0]["content"]
    assert image["type"] == "image" and image["sha256"] == asset["sha256"]
    assert f"The final answer is: {reference(q)}" in text["text"]
    assert request.hints["final_answer"] == reference(q)


def test_a_refiner_that_never_uses_the_format_is_malformed_output_after_exactly_max_retries(questions, captions, assets, root):
    vlm = Counting(teacher(malformed=1))
    result, counts = run(questions, captions, assets, root, Roles(reasoner=teacher(), captioner=vlm), max_retries=2)
    assert sorted(attempt(r) for r in vlm.requests) == [0] * 16 + [1] * 16 + [2] * 16
    assert (counts.n_out, counts.n_rejected, counts.by_reason) == (0, 16, {"distill_cot.malformed_output": 16})
    for reject in result.rejects.to_pylist():
        assert reject["subject_id"] == reject["input_id"]
        assert reject["detail"].startswith("refined CoT: write the rationale inside <think></think>")
        assert reject["raw"] and "<answer>" not in reject["raw"]  # what the refiner wrote, kept
    # The raw chains were fine and are still written.
    assert set(result.out["kind"].to_pylist()) == {"raw"} and result.out.num_rows == 16


def test_a_chain_without_a_final_answer_is_rejected_with_its_text(questions, captions, assets, root):
    rambling = "Let me look. Wait, the red one is bigger. Hmm, or is it? I would need to measure."
    reasoner = FakeEngine(lambda r: rambling)
    vlm = Counting(teacher())
    result, counts = run(questions.slice(0, 2), captions, assets, root, Roles(reasoner=reasoner, captioner=vlm), max_retries=1)
    assert len(reasoner.requests) == 4 and vlm.requests == []
    assert counts.by_reason == {"distill_cot.no_final_answer": 2} and result.out.num_rows == 0
    assert result.rejects["raw"].to_pylist() == [rambling] * 2
    assert set(result.rejects["detail"].to_pylist()) == {"the reasoning reaches no final answer; end with <answer>…</answer>"}


def test_a_boxed_or_stated_answer_counts_as_a_final_answer(questions, captions, assets, root):
    reasoner = FakeEngine(lambda r: "Counting again, wait, yes.\nThe answer is 3.")
    result, counts = run(questions.slice(0, 1), captions, assets, root, Roles(reasoner=reasoner, captioner=teacher()),
                         refine=False)
    assert result.out["final_answer"].to_pylist() == ["3"] and result.out["reflections"].to_pylist() == [0]
    assert counts.n_out == 1


def test_a_reasoner_that_cannot_answer_is_an_engine_error(questions, captions, assets, root):
    result, counts = run(questions, captions, assets, root, Roles(reasoner=failing("timeout after 60 s"), captioner=teacher()))
    assert counts.by_reason == {"distill_cot.engine_error": 16}
    assert set(result.rejects["detail"].to_pylist()) == {"timeout after 60 s"}


def test_a_question_without_a_fine_caption_or_image_is_rejected_and_the_rest_go_on(questions, captions, assets, root):
    first_asset = questions["asset_ids"][0].as_py()[0]
    coarse_only = captions.filter([not (a == first_asset and s == "fine") for a, s in
                                   zip(captions["asset_id"].to_pylist(), captions["style"].to_pylist())])
    result, counts = run(questions, coarse_only, assets, root, teachers(root))
    orphans = [q["question_id"] for q in questions.to_pylist() if q["asset_ids"] == [first_asset]]
    assert sorted(result.rejects["subject_id"].to_pylist()) == sorted(orphans) and len(orphans) == 4
    assert counts.by_reason == {"distill_cot.no_caption": 4} and counts.n_out == 12
    result, counts = run(questions, captions, assets.slice(1), root, teachers(root))
    assert counts.by_reason == {"distill_cot.no_caption": 4}


def test_a_wrong_raw_answer_is_kept_for_verify_to_judge_and_the_rationale_follows_it(questions, captions, assets, root):
    engines = teachers(root, reasoner=scripted("wrong-reasoner", wrong_answer=1))
    result, counts = run(questions, captions, assets, root, engines)
    assert (counts.n_out, counts.n_rejected) == (16, 0)
    cots = by_kind(result)
    for q in questions.to_pylist():
        raw = cots["raw"][q["question_id"]]["final_answer"]
        assert raw != reference(q)
        assert cots["refined"][q["question_id"]]["final_answer"] == raw
