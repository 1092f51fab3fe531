"""distill_cot: a long reasoning chain from the text reasoner, then a short refined one (the SFT target).

Per question (ALGORITHMS §1 step 5): the `reasoner` reads the fine caption and the question and
reasons at length (raw CoT; its final answer and its "Wait"-type reflections are recorded); then the
`captioner` VLM, given the image, the question and that final answer, rewrites the reasoning into a
short consistent rationale in `<think>…</think><answer>…</answer>` (refined CoT). A question is
rejected when the raw chain reaches no answer (`distill_cot.no_final_answer`), or the rewrite never
comes back in the required format (`distill_cot.malformed_output`). Whether the answer is *right*
is the next stage's business (verify). For a question about a video the reasoner reads its fine
caption (written over time) and the VLM sees its frames in time order (pipelines/visuals.py).
"""

import pyarrow as pa

from pipelines.answers import count_reflections, extract_answer, has_think_answer_format
from pipelines.engines.base import Request, user
from pipelines.policy.prompt import question_text
from pipelines.stage import StageContext, StageResult, stage
from pipelines.structured import ask
from pipelines.visuals import Visuals, medium, with_article
from schemas import make_id

PROMPT_VERSION = "distill_cot-v1"


def parse_raw(text: str) -> str:
    answer = extract_answer(text)
    if answer is None:
        raise ValueError("the reasoning reaches no final answer; end with <answer>…</answer>")
    return answer


def parse_refined(text: str) -> str:
    if not has_think_answer_format(text):
        raise ValueError("write the rationale inside <think></think> and then the answer inside <answer></answer>, nothing else")
    return text.strip()


@stage(reads={"questions": ["question_id", "asset_ids", "question", "answer_type", "choices"],
              "captions": ["asset_id", "style", "text"],
              "assets": ["asset_id", "kind", "media_uri", "sha256", "scene", "parent_asset_id", "frame_ts"]},
       writes="cots", version=1, unit="question", engines=("reasoner", "captioner"))
def distill_cot(questions: pa.Table, captions: pa.Table, assets: pa.Table, ctx: StageContext, *, refine: bool = True,
                max_tokens_raw: int = 4096, max_tokens_refined: int = 1024, max_retries: int = 1) -> StageResult:
    """`refine`: also write the short rationale (the SFT target); off keeps raw chains only."""
    reasoner, vlm = ctx.engine("reasoner"), ctx.engine("captioner")
    fine = {c["asset_id"]: c["text"] for c in captions.to_pylist() if c["style"] == "fine"}
    visuals = Visuals.of(assets.to_pylist())
    asset_by_id = {a["asset_id"]: a for a in visuals.items}
    rows, rejects = [], []
    items = []
    for q in questions.to_pylist():
        asset = asset_by_id.get(q["asset_ids"][0])
        if asset is None or asset["asset_id"] not in fine:
            rejects.append(ctx.reject(q["question_id"], "distill_cot.no_caption", "the question's image has no fine caption"))
        else:
            items.append((q, asset))

    ask_text = {q["question_id"]: question_text(q["question"], q["answer_type"], q["choices"]) for q, _ in items}
    raw_requests = [Request(messages=[user(f"Description of {with_article(medium(a))}:\n{fine[a['asset_id']]}"
                                           f"\n\nQuestion:\n{ask_text[q['question_id']]}\n\n"
                                           "Reason step by step, checking your work, then give the final answer inside <answer></answer>.")],
                            max_tokens=max_tokens_raw, prompt_version=PROMPT_VERSION, task="distill_cot.raw",
                            hints={"scene": a["scene"], "question": q["question"]}) for q, a in items]
    raw_answers = ask(reasoner, raw_requests, parse_raw, max_retries=max_retries)
    to_refine = []
    for (q, asset), raw in zip(items, raw_answers):
        if not raw.ok:
            reason = "distill_cot.engine_error" if raw.engine_failed else "distill_cot.no_final_answer"
            rejects.append(ctx.reject(q["question_id"], reason, raw.error, raw=raw.raw))
            continue
        rows.append(_cot_row(q["question_id"], "raw", raw.raw, raw.value, reasoner, raw.call_id))
        to_refine.append((q, asset, raw.value))

    if refine:
        refine_requests = [Request(messages=[user(*visuals.parts(a, ctx.media_path),
                                                  f"Question:\n{ask_text[q['question_id']]}\nThe final answer is: {final}\n\n"
                                                  "Write a short, consistent rationale that leads to this answer: the rationale "
                                                  "inside <think></think>, then the answer inside <answer></answer>.")],
                                   max_tokens=max_tokens_refined, prompt_version=PROMPT_VERSION, task="distill_cot.refine",
                                   hints={"scene": a["scene"], "question": q["question"], "final_answer": final})
                           for q, a, final in to_refine]
        for (q, asset, final), refined in zip(to_refine, ask(vlm, refine_requests, parse_refined, max_retries=max_retries)):
            if not refined.ok:
                reason = "distill_cot.engine_error" if refined.engine_failed else "distill_cot.malformed_output"
                rejects.append(ctx.reject(q["question_id"], reason, f"refined CoT: {refined.error}", raw=refined.raw))
                continue
            rows.append(_cot_row(q["question_id"], "refined", refined.value, extract_answer(refined.value), vlm, refined.call_id))
    ctx.progress(questions.num_rows)
    return StageResult(ctx.rows("cots", rows), ctx.rejects(rejects))


def _cot_row(question_id: str, kind: str, text: str, final_answer: str | None, engine, call_id: str) -> dict:
    return {"cot_id": make_id("cot", question_id, kind, engine.model, PROMPT_VERSION), "question_id": question_id, "kind": kind,
            "text": text, "final_answer": final_answer, "n_tokens": len(text.split()), "reflections": count_reflections(text),
            "model": engine.model, "model_revision": engine.revision, "prompt_version": PROMPT_VERSION, "call_id": call_id}
