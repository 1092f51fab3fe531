"""bridge_cot: Vision-R1's modality bridge: image → pseudo-CoT → description → a text reasoner's long CoT.

Per question (ALGORITHMS §2): (1) the `captioner` MLLM, given the image and the question, writes a
pseudo-CoT: a caption plus step-by-step reasoning that surfaces the details the question needs;
(2) given the image, the question and that pseudo-CoT, it writes a detailed textual description
(the bridge); (3) the `reasoner`, a text-only reasoning model, answers from the description with a
long, self-reflective chain. All three are `cots` rows (kinds pseudo, bridge, bridged) carrying
token counts and "Wait"-type reflection counts. Keeping only chains whose answer verifies is the
next step's job (`verify` with `cot_kind: bridged`); the `sft_examples` view then holds the cold-start
data. A question is rejected when any link yields nothing usable (`bridge_cot.engine_error`,
`bridge_cot.empty_output`, `bridge_cot.no_final_answer`).
A question about a video works the same way: the MLLM sees the video's frames in time order
(pipelines/visuals.py) and the prompts say "video".
"""

import pyarrow as pa

from pipelines.answers import count_reflections, extract_answer
from pipelines.engines.base import Request, user
from pipelines.policy.prompt import question_text
from pipelines.stage import StageContext, StageResult, stage
from pipelines.structured import ask
from pipelines.visuals import Visuals, medium, with_article
from schemas import make_id

PROMPT_VERSION = "bridge_cot-v1"


def parse_text(text: str) -> str:
    if len(text.split()) < 3:
        raise ValueError("the reply is (nearly) empty; write it out in full")
    return text.strip()


def parse_chain(text: str) -> str:
    answer = extract_answer(text)
    if answer is None:
        raise ValueError("the reasoning reaches no final answer; end with <answer>…</answer>")
    return answer


@stage(reads={"questions": ["question_id", "asset_ids", "question", "answer_type", "choices"],
              "assets": ["asset_id", "kind", "media_uri", "sha256", "scene", "parent_asset_id", "frame_ts"]},
       writes="cots", version=1, unit="question", engines=("captioner", "reasoner"))
def bridge_cot(questions: pa.Table, assets: pa.Table, ctx: StageContext, *, max_tokens_pseudo: int = 1024,
               max_tokens_description: int = 1024, max_tokens_reasoning: int = 8192, temperature: float = 0.0,
               max_retries: int = 1) -> StageResult:
    """`max_tokens_reasoning`: room for the reasoner's long chain (Vision-R1 used up to 16K)."""
    mllm, reasoner = ctx.engine("captioner"), ctx.engine("reasoner")
    visuals = Visuals.of(assets.to_pylist())
    asset_by_id = {a["asset_id"]: a for a in visuals.items}
    rows, rejects, items = [], [], []
    for q in questions.to_pylist():
        asset = asset_by_id.get(q["asset_ids"][0])
        if asset is None:
            rejects.append(ctx.reject(q["question_id"], "bridge_cot.missing_image", f"its image {q['asset_ids'][0]} is not in the dataset"))
        else:
            items.append((q, asset, question_text(q["question"], q["answer_type"], q["choices"] or ()),
                          visuals.parts(asset, ctx.media_path)))

    def failed(q, link: str, answer) -> None:
        reason = "bridge_cot.engine_error" if answer.engine_failed else ("bridge_cot.no_final_answer" if link == "bridged" else "bridge_cot.empty_output")
        rejects.append(ctx.reject(q["question_id"], reason, f"{link}: {answer.error}", raw=answer.raw or None))

    pseudo = ask(mllm, [Request(messages=[user(*shown, f"Question: {asked}\n\nFirst describe the {medium(a)}, then reason step by step "
                                                      f"about the question, naming every detail of the {medium(a)} the answer depends on.")],
                                max_tokens=max_tokens_pseudo, temperature=temperature, prompt_version=PROMPT_VERSION,
                                task="bridge_cot.pseudo", hints={"scene": a["scene"], "question": q["question"]})
                        for q, a, asked, shown in items], parse_text, max_retries=max_retries)
    stage2 = []
    for item, answer in zip(items, pseudo):
        if not answer.ok:
            failed(item[0], "pseudo-CoT", answer)
        else:
            rows.append(_row(item[0]["question_id"], "pseudo", answer.value, None, mllm, answer.call_id))
            stage2.append((*item, answer.value))
    described = ask(mllm, [Request(messages=[user(*shown, f"Question: {asked}\n\nA first look at the {medium(a)}:\n{first}\n\n"
                                                          f"Now write a detailed textual description of the {medium(a)} that contains every "
                                                          "visual fact needed to answer the question, without answering it.")],
                                   max_tokens=max_tokens_description, temperature=temperature, prompt_version=PROMPT_VERSION,
                                   task="bridge_cot.describe", hints={"scene": a["scene"], "question": q["question"]})
                           for q, a, asked, shown, first in stage2], parse_text, max_retries=max_retries)
    stage3 = []
    for item, answer in zip(stage2, described):
        if not answer.ok:
            failed(item[0], "description", answer)
        else:
            rows.append(_row(item[0]["question_id"], "bridge", answer.value, None, mllm, answer.call_id))
            stage3.append((*item[:3], answer.value))
    chains = ask(reasoner, [Request(messages=[user(f"Description of {with_article(medium(a))}:\n"
                                                   f"{description}\n\nQuestion:\n{asked}\n\n"
                                                   "Think it through carefully, checking yourself as you go, then give the final "
                                                   "answer inside <answer></answer>.")],
                                    max_tokens=max_tokens_reasoning, temperature=temperature, prompt_version=PROMPT_VERSION,
                                    task="bridge_cot.reason", hints={"scene": a["scene"], "question": q["question"]})
                            for q, a, asked, description in stage3], parse_chain, max_retries=max_retries)
    for item, answer in zip(stage3, chains):
        if not answer.ok:
            failed(item[0], "bridged", answer)
        else:
            rows.append(_row(item[0]["question_id"], "bridged", answer.raw, answer.value, reasoner, answer.call_id))
    ctx.progress(questions.num_rows)
    return StageResult(ctx.rows("cots", rows), ctx.rejects(rejects))


def _row(question_id: str, kind: str, text: str, final_answer: str | None, engine, call_id: str) -> dict:
    return {"cot_id": make_id("cot", question_id, kind, engine.model, PROMPT_VERSION), "question_id": question_id, "kind": kind,
            "text": text, "final_answer": final_answer, "n_tokens": len(text.split()), "reflections": count_reflections(text),
            "model": engine.model, "model_revision": engine.revision, "prompt_version": PROMPT_VERSION, "call_id": call_id}
