"""verify: does a question's chain of thought reach its reference answer? Rules first, a judge for prose.

Per question, the final answer of its CoT (`cot_kind`, default the refined one) is checked against
the reference: mc by normalised letter, num by numeric tolerance (math-verify as fallback), fib by
normalised text, then number, then math-verify. Descriptive answers (reward route "model") go to the
`judge` role, after a guard that scores degenerate answers (empty, ":", the question echoed) 0
without asking. Every checked question gets a verdict row; a failed one is also a reject
(`verify.wrong_answer`); a question without such a CoT is rejected as `verify.no_cot`, and one the
judge could not grade (an engine error, an unusable verdict) as `verify.judge_failed`.
"""


from dataclasses import dataclass

import pyarrow as pa

from pipelines.answers import parse_json_object
from pipelines.engines.base import Request, user
from pipelines.stage import StageContext, StageResult, stage
from pipelines.structured import ask
from pipelines.verification import Check, check_answer, is_degenerate_answer
from schemas import make_id

PROMPT_VERSION = "verify-judge-v1"
JUDGE_SCHEMA = {"type": "object", "properties": {"score": {"type": "number", "enum": [0, 0.5, 1]}, "reason": {"type": "string"}},
                "required": ["score", "reason"]}  # guided decoding where the engine has it


@stage(reads={"questions": ["question_id", "question", "answer", "answer_type", "choices", "asset_ids"],
              "cots": ["cot_id", "question_id", "kind", "final_answer"]},
       writes="verdicts", version=1, unit="question", engines=("judge",))
def verify(questions: pa.Table, cots: pa.Table, ctx: StageContext, *, cot_kind: str = "refined",
           numeric_rel_tol: float = 1e-6, min_judge_score: float = 0.5) -> StageResult:
    """`numeric_rel_tol`: relative tolerance for numbers; `min_judge_score`: pass mark for descriptive answers."""
    judge = None
    cot_by_question = {c["question_id"]: c for c in cots.to_pylist() if c["kind"] == cot_kind}
    rows, rejects = [], []
    for q in questions.to_pylist():
        cot = cot_by_question.get(q["question_id"])
        if cot is None:
            rejects.append(ctx.reject(q["question_id"], "verify.no_cot", f"no {cot_kind} CoT for this question"))
            continue
        check = check_answer(cot["final_answer"], q["answer"], q["answer_type"], choices=tuple(q["choices"] or ()),
                             numeric_rel_tol=numeric_rel_tol)
        model_lineage = {}
        if check is None:  # descriptive: the judge decides
            judge = judge or ctx.engine("judge")
            judged = judge_score(judge, q["question"], q["answer"], cot["final_answer"], scene=None)
            if judged.score is None:
                rejects.append(ctx.reject(q["question_id"], "verify.judge_failed", judged.error))
                continue
            check = Check(judged.score >= min_judge_score, judged.score, "judge",
                          f"judge score {judged.score:.2f} (pass mark {min_judge_score})")
            model_lineage = {"model": judge.model, "model_revision": judge.revision, "prompt_version": PROMPT_VERSION}
        rows.append({"verdict_id": make_id("verdict", cot["cot_id"], check.verifier), "subject_id": cot["cot_id"],
                     "question_id": q["question_id"], "verifier": check.verifier, "passed": check.passed,
                     "score": float(check.score), "detail": check.detail, **model_lineage})
        if not check.passed:
            rejects.append(ctx.reject(q["question_id"], "verify.wrong_answer",
                                      f"{check.verifier}: CoT answer {cot['final_answer']!r} vs reference {q['answer']!r}: {check.detail}"))
    ctx.progress(questions.num_rows)
    return StageResult(ctx.rows("verdicts", rows), ctx.rejects(rejects))


@dataclass(frozen=True)
class Judged:
    """A judge's tiered score in [0, 1], or why there is none (the judge could not answer usably)."""

    score: float | None
    error: str | None = None


def judge_score(judge, question: str, reference: str, candidate: str | None, *, scene: str | None) -> Judged:
    """Ask the judge to grade `candidate` against `reference`; degenerate answers score 0 without a call."""
    if candidate is None or is_degenerate_answer(candidate, question):
        return Judged(0.0)
    prompt = (f"Question: {question}\nReference answer: {reference}\nCandidate answer: {candidate}\n\n"
              "Grade the candidate against the reference: 1 if it says the same thing, 0.5 if it is partly right, 0 otherwise. "
              'Reply with JSON only: {"score": 0 or 0.5 or 1, "reason": "..."}')
    request = Request(messages=[user(prompt)], max_tokens=256, prompt_version=PROMPT_VERSION, task="judge", response_schema=JUDGE_SCHEMA,
                      hints={"scene": scene, "candidate": candidate, "reference": reference})

    def parse(text: str) -> float:
        score = parse_json_object(text).get("score")
        if not isinstance(score, (int, float)) or not 0 <= score <= 1:
            raise ValueError('expected "score" as a number between 0 and 1')
        return float(score)

    (answer,) = ask(judge, [request], parse)
    return Judged(answer.value) if answer.ok else Judged(None, f"the judge gave no usable score: {answer.error}")
