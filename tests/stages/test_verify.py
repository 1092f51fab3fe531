"""verify: each question's CoT answer against its reference, by rule per type and by the judge for prose."""

import pytest

from pipelines.engines.base import Response
from pipelines.stage import account
from pipelines.stages.distill_cot import distill_cot
from pipelines.stages.verify import PROMPT_VERSION, verify
from tests.stages.fixtures import (
    Counting,
    FakeEngine,
    Roles,
    context,
    ingest_scenes,
    reasons_by_subject,
    teacher,
    teachers,
    true_captions,
    true_questions,
)

DES_REFERENCE = "The red circle is to the left of and above the blue square."
QUESTIONS = [
    {"question_id": "q-mc", "question": "Which colour do the most shapes have?", "answer": "B", "answer_type": "mc",
     "choices": ["red", "blue", "green", "yellow"]},
    {"question_id": "q-num", "question": "How many shapes are there?", "answer": "12", "answer_type": "num"},
    {"question_id": "q-fib", "question": "The red circle is to the ___ of the blue square.", "answer": "left", "answer_type": "fib"},
    {"question_id": "q-des", "question": "Where is the red circle relative to the blue square?", "answer": DES_REFERENCE,
     "answer_type": "des"},
]
RIGHT = {"q-mc": "(B)", "q-num": "12.0", "q-fib": "Left", "q-des": DES_REFERENCE}
WRONG = {"q-mc": "C", "q-num": "13", "q-fib": "right", "q-des": "Nothing can be said about the shapes at all."}


def questions_table(ctx, ids=None):
    rows = [{"asset_ids": ["asset-x"], "category": "relations", "abilities": ["counting", "spatial_reasoning"],
             "reward_route": "model" if q["answer_type"] == "des" else "rule", "generator": "hand", **q}
            for q in QUESTIONS if ids is None or q["question_id"] in ids]
    return ctx.rows("questions", rows)


def cots_table(ctx, answers: dict[str, str], kind: str = "refined"):
    rows = [{"cot_id": f"cot-{question_id}-{kind}", "question_id": question_id, "kind": kind,
             "text": f"<think>…</think><answer>{answer}</answer>", "final_answer": answer, "n_tokens": 2, "reflections": 0}
            for question_id, answer in answers.items()]
    return ctx.rows("cots", rows)


def run(tmp_path, answers, engines=None, ids=None, kind="refined", **params):
    ctx = context("verify", tmp_path, engines if engines is not None else teachers(tmp_path))
    questions = questions_table(ctx, ids)
    result = verify(questions, cots_table(ctx, answers, kind), ctx, **params)
    return result, account(verify, questions, result)


def verdicts(result) -> dict[str, dict]:
    return {r["question_id"]: r for r in result.out.to_pylist()}


def test_right_answers_pass_with_the_verifier_of_their_type(tmp_path):
    result, counts = run(tmp_path, RIGHT)
    assert (counts.n_in, counts.n_out, counts.n_rejected) == (4, 4, 0)
    rows = verdicts(result)
    assert {q: r["verifier"] for q, r in rows.items()} == {"q-mc": "choice_letter", "q-num": "numeric",
                                                           "q-fib": "exact_text", "q-des": "judge"}
    assert all(r["passed"] and r["score"] == 1.0 for r in rows.values())
    assert rows["q-num"]["subject_id"] == "cot-q-num-refined"
    # Only the judged verdict names a model.
    assert (rows["q-des"]["model"], rows["q-des"]["model_revision"], rows["q-des"]["prompt_version"]) == \
           ("scripted-teacher", "world-v1", PROMPT_VERSION)
    assert rows["q-num"]["model"] is None


def test_wrong_answers_get_a_failing_verdict_and_a_reject_naming_the_verifier(tmp_path):
    result, counts = run(tmp_path, WRONG)
    assert (counts.n_out, counts.n_rejected, counts.by_reason) == (0, 4, {"verify.wrong_answer": 4})
    rows = verdicts(result)
    assert len(rows) == 4 and not any(r["passed"] for r in rows.values())
    details = dict(zip(result.rejects["subject_id"].to_pylist(), result.rejects["detail"].to_pylist()))
    assert details["q-mc"].startswith("choice_letter: CoT answer 'C' vs reference 'B': ")
    assert details["q-num"].startswith("numeric: CoT answer '13' vs reference '12': ")
    assert details["q-fib"].startswith("exact_text: CoT answer 'right' vs reference 'left': ")
    assert details["q-des"] == (f"judge: CoT answer {WRONG['q-des']!r} vs reference {DES_REFERENCE!r}: "
                                "judge score 0.00 (pass mark 0.5)")
    assert set(result.rejects["input_id"].to_pylist()) == {"q-mc", "q-num", "q-fib", "q-des"}


def test_only_descriptive_answers_are_sent_to_the_judge(tmp_path):
    judge = Counting(teacher())
    result, _ = run(tmp_path, RIGHT, Roles(judge=judge))
    assert judge.tasks() == ["judge"]
    (request,) = judge.requests
    assert request.hints["candidate"] == DES_REFERENCE and request.hints["reference"] == DES_REFERENCE


@pytest.mark.parametrize("degenerate", [":", "", "Where is the red circle relative to the blue square?"])
def test_a_degenerate_descriptive_answer_scores_zero_without_a_judge_call(tmp_path, degenerate):
    judge = Counting(teacher())
    result, counts = run(tmp_path, {"q-des": degenerate}, Roles(judge=judge), ids={"q-des"})
    assert judge.requests == []
    assert verdicts(result)["q-des"]["score"] == 0.0 and counts.by_reason == {"verify.wrong_answer": 1}


def test_rule_questions_need_no_judge_at_all(tmp_path):
    result, counts = run(tmp_path, {k: v for k, v in RIGHT.items() if k != "q-des"}, Roles(), ids={"q-mc", "q-num", "q-fib"})
    assert counts.n_out == 3  # Roles() binds nothing: asking for the judge would have failed the test


def test_the_judges_pass_mark_is_min_judge_score(tmp_path):
    partial = "The red circle is somewhere."  # token F1 0.36 with the reference: the scripted judge gives 0.5
    result, counts = run(tmp_path, {"q-des": partial}, ids={"q-des"})
    assert verdicts(result)["q-des"]["score"] == 0.5 and counts.n_out == 1
    result, counts = run(tmp_path, {"q-des": partial}, ids={"q-des"}, min_judge_score=0.75)
    assert counts.by_reason == {"verify.wrong_answer": 1}
    assert result.rejects["detail"][0].as_py().endswith("judge score 0.50 (pass mark 0.75)")


def test_numeric_tolerance_is_relative(tmp_path):
    result, counts = run(tmp_path, {"q-num": "12.1"}, ids={"q-num"})
    assert counts.by_reason == {"verify.wrong_answer": 1}
    result, counts = run(tmp_path, {"q-num": "12.1"}, ids={"q-num"}, numeric_rel_tol=0.01)
    assert counts.n_out == 1


def test_a_question_without_a_cot_of_the_kind_is_rejected_as_no_cot(tmp_path):
    result, counts = run(tmp_path, {"q-num": "12"}, ids={"q-num", "q-mc"})
    assert reasons_by_subject(result) == {"q-mc": "verify.no_cot"}
    assert result.rejects["detail"].to_pylist() == ["no refined CoT for this question"]
    assert counts.n_out == 1
    result, counts = run(tmp_path, {"q-num": "12"}, ids={"q-num"}, kind="raw")
    assert reasons_by_subject(result) == {"q-num": "verify.no_cot"}
    result, counts = run(tmp_path, {"q-num": "12"}, ids={"q-num"}, kind="raw", cot_kind="raw")
    assert counts.n_out == 1 and verdicts(result)["q-num"]["subject_id"] == "cot-q-num-raw"


def test_verdict_ids_are_stable_across_calls(tmp_path):
    first, _ = run(tmp_path, RIGHT)
    again, _ = run(tmp_path, RIGHT)
    assert first.out["verdict_id"].to_pylist() == again.out["verdict_id"].to_pylist()
    assert len(set(first.out["verdict_id"].to_pylist())) == 4


def test_the_teachers_own_distilled_cots_all_pass(tmp_path):
    assets = ingest_scenes(tmp_path, scenes=4)
    questions = true_questions(context("synthesize_qa", tmp_path), assets, per_asset=5)
    distilled = distill_cot(questions, true_captions(context("caption", tmp_path), assets), assets,
                            context("distill_cot", tmp_path, teachers(tmp_path)))
    assert account(distill_cot, questions, distilled).n_out == 20
    cots = distilled.out
    result = verify(questions, cots, context("verify", tmp_path, teachers(tmp_path)))
    counts = account(verify, questions, result)
    assert (counts.n_in, counts.n_out, counts.n_rejected) == (20, 20, 0)
    assert all(result.out["passed"].to_pylist())


def test_a_judge_that_cannot_answer_is_not_reported_as_a_wrong_answer(tmp_path):
    judge = FakeEngine(lambda r: Response([], "call-x", error="HTTP 503 from the judge"))
    result, counts = run(tmp_path, {"q-des": DES_REFERENCE}, Roles(judge=judge), ids={"q-des"})
    assert counts.by_reason != {"verify.wrong_answer": 1}
    assert "HTTP 503 from the judge" in result.rejects["detail"][0].as_py()


@pytest.mark.parametrize("attack", ["", ":", "Thought process:", "Let me solve this step by step",
                                    "Which shape is to the left of the blue square?"])  # the last: the question echoed
def test_judge_attack_strings_score_zero_through_the_judge_path(attack):
    """A gullible judge that would give anything full marks is never even asked about these."""
    from pipelines.stages.verify import judge_score
    from tests.stages.fixtures import FakeEngine

    gullible = FakeEngine(lambda request: '{"score": 1, "reason": "looks fine"}')
    judged = judge_score(gullible, "Which shape is to the left of the blue square?", DES_REFERENCE, attack, scene=None)
    assert judged.score == 0.0 and judged.error is None
    assert gullible.requests == []
    assert judge_score(gullible, "Which shape is to the left of the blue square?", DES_REFERENCE,
                       "The red circle.", scene=None).score == 1.0  # a real answer does reach the judge
