"""synthesize_qa: WeThink's question synthesis: mine details, write, filter, keep what independent answerers agree on.

Per image, with `method: wethink` (ALGORITHMS §1; the phases live in `pipelines/wethink.py`):
(1) detail mining: the `reasoner`, which never sees the image, asks for what the fine caption leaves
out and the `captioner` VLM answers from the image (`detail_rounds` rounds); (2) the reasoner writes
candidate questions under an ability-combination constraint, typed mc / fib / num / des, as JSON;
(3) rule checks drop candidates of an unrequested type, with unknown or too few abilities, or a
malformed answer; (4) the two-check invalid-question filter: the `judge` rules each question
verifiable or not and ambiguous or not; (5) agreement: the reasoner (from the description) and the
VLM (from the image) answer independently and both must reach the reference; when exactly one does,
a third model bound to the `tiebreaker` role settles it (no such role: the question is dropped).
With `method: mmupt_direct` or `mmupt_in_context` the VLM writes unlabelled questions from the image
and labels them by majority vote (`pipelines/mmupt.py`).
Every dropped candidate is a reject naming the candidate and its image; an image none of whose
candidates survive is rejected with them.

A video is one item like an image: its questions name the video asset, the VLM sees its frames in
time order (pipelines/visuals.py), and `temporal_reasoning` is an ability its questions may claim
(images' may not: `wethink.abilities_for`). Its frame assets are not items (pipelines/stage.py).
"""

from typing import Literal

import pyarrow as pa

from pipelines import mmupt, wethink
from pipelines.stage import StageContext, StageResult, stage
from pipelines.visuals import Visuals
from schemas import make_id
from schemas.questions import ABILITIES


@stage(reads={"assets": ["asset_id", "kind", "media_uri", "sha256", "scene", "parent_asset_id", "frame_ts"],
              "captions": ["asset_id", "style", "text"]},
       writes="questions", version=2, unit="asset", engines=("reasoner", "captioner", "judge", "tiebreaker"))
def synthesize_qa(assets: pa.Table, captions: pa.Table, ctx: StageContext, *,
                  method: Literal["wethink", "mmupt_direct", "mmupt_in_context"] = "wethink", questions_per_image: int = 3,
                  answer_types: list[str] = ["mc", "fib", "num", "des"], min_abilities: int = 2,
                  abilities: list[str] = list(ABILITIES), detail_rounds: int = 1, max_detail_queries: int = 3,
                  tie_break: bool = True, mmupt_votes: int = 10, mmupt_temperature: float = 0.7,
                  mmupt_min_agreement: float = 0.5, max_retries: int = 1) -> StageResult:
    """`min_abilities`: abilities a question must combine; `detail_rounds`: detail-mining rounds (0 = off);
    `tie_break`: ask the `tiebreaker` role when exactly one answerer agrees; `mmupt_*`: majority-vote labelling."""
    fine = {c["asset_id"]: c["text"] for c in captions.to_pylist() if c["style"] == "fine"}
    rejects: list[dict] = []
    sources = []
    visuals = Visuals.of(assets.to_pylist())
    for asset in visuals.items:
        if method == "wethink" and asset["asset_id"] not in fine:
            rejects.append(ctx.reject(asset["asset_id"], "synthesize_qa.no_caption", "no fine caption to write questions from"))
        else:
            sources.append(wethink.Source(asset, fine.get(asset["asset_id"], ""), visuals=visuals))
    run = _wethink if method == "wethink" else _mmupt
    rows = run(sources, ctx, rejects, method=method, n=questions_per_image, answer_types=answer_types, min_abilities=min_abilities,
               abilities=abilities, detail_rounds=detail_rounds, max_detail_queries=max_detail_queries, tie_break=tie_break,
               votes=mmupt_votes, temperature=mmupt_temperature, min_agreement=mmupt_min_agreement, max_retries=max_retries)
    ctx.progress(len(visuals.items))
    return StageResult(ctx.rows("questions", rows), ctx.rejects(rejects))


def _wethink(sources, ctx, rejects, *, n, answer_types, min_abilities, abilities, detail_rounds, max_detail_queries,
             tie_break, max_retries, **_) -> list[dict]:
    reasoner, vlm, judge = ctx.engine("reasoner"), ctx.engine("captioner"), ctx.engine("judge")
    wethink.mine_details(sources, reasoner, vlm, ctx.media_path, rounds=detail_rounds, max_queries=max_detail_queries,
                         max_retries=max_retries)
    candidates = []  # (source, candidate, question_id, call id of the writing call)
    for source, written in zip(sources, wethink.write_candidates(sources, reasoner, n=n, answer_types=answer_types, abilities=abilities,
                                                                  min_abilities=min_abilities, max_retries=max_retries)):
        if not written.ok:
            reason = "synthesize_qa.engine_error" if written.engine_failed else "synthesize_qa.malformed_output"
            rejects.append(ctx.reject(source.asset_id, reason, written.error, raw=written.raw))
            continue
        seen = set()
        for candidate in written.value:
            question_id = make_id("question", [source.asset_id], candidate.question)
            problem = wethink.rule_problem(candidate, answer_types, wethink.abilities_for(source.medium, abilities), min_abilities)
            if question_id in seen:
                problem = ("duplicate_question", "the same question twice in one batch")
            seen.add(question_id)
            if problem:
                rejects.append(ctx.reject(question_id, f"synthesize_qa.{problem[0]}", problem[1], input_id=source.asset_id,
                                          raw=candidate.model_dump_json()))
            else:
                candidates.append((source, candidate, question_id, written.call_id))

    verdicts = wethink.check_validity([(s, c) for s, c, _, _ in candidates], judge, max_retries=max_retries)
    valid = []
    for item, verdict in zip(candidates, verdicts):
        if verdict:
            rejects.append(ctx.reject(item[2], f"synthesize_qa.{verdict[0]}", verdict[1], input_id=item[0].asset_id, raw=verdict[2]))
        else:
            valid.append(item)

    pairs = [(s, c) for s, c, _, _ in valid]
    by_text = wethink.answer_independently(pairs, reasoner, ctx.media_path, with_image=False, max_retries=max_retries)
    by_image = wethink.answer_independently(pairs, vlm, ctx.media_path, with_image=True, max_retries=max_retries)
    outcomes = [wethink.agreement(c, t, i, judge, s.asset["scene"]) for (s, c), t, i in zip(pairs, by_text, by_image)]
    tiebreaker = ctx.engine("tiebreaker") if tie_break and ctx.engines.has("tiebreaker") else None
    split = [k for k, outcome in enumerate(outcomes) if outcome and outcome[0] == "answers_disagree"]
    if tiebreaker and split:
        thirds = wethink.answer_independently([pairs[k] for k in split], tiebreaker, ctx.media_path, with_image=True,
                                              max_retries=max_retries)
        for k, third in zip(split, thirds):
            source, candidate = pairs[k]
            settled = third.ok and wethink.matches(third.value, candidate, judge, source.asset["scene"]) is True
            outcomes[k] = None if settled else ("answers_disagree", f"{outcomes[k][1]}; tie-break by {tiebreaker.model}: "
                                                                    f"{third.value if third.ok else third.error!r} (does not settle it)")
    rows = []
    for (source, candidate, question_id, call_id), outcome, text_answer, image_answer in zip(valid, outcomes, by_text, by_image):
        if outcome:
            rejects.append(ctx.reject(question_id, f"synthesize_qa.{outcome[0]}", outcome[1], input_id=source.asset_id,
                                      raw=f"from caption: {text_answer.raw}\nfrom image: {image_answer.raw}"))
            continue
        rows.append(_row(question_id, source, candidate.question, candidate.answer, candidate.answer_type, candidate.choices,
                         candidate.category, candidate.abilities, reasoner, wethink.PROMPT_VERSION, call_id))
    return rows


def _mmupt(sources, ctx, rejects, *, method, n, answer_types, votes, temperature, min_agreement, max_retries, **_) -> list[dict]:
    vlm = ctx.engine("captioner")
    items = []
    for source, written in zip(sources, mmupt.write_unlabelled(sources, vlm, ctx.media_path, n=n, answer_types=answer_types,
                                                               in_context=method == "mmupt_in_context", max_retries=max_retries)):
        if not written.ok:
            reason = "synthesize_qa.engine_error" if written.engine_failed else "synthesize_qa.malformed_output"
            rejects.append(ctx.reject(source.asset_id, reason, written.error, raw=written.raw))
            continue
        for question in written.value:
            question_id = make_id("question", [source.asset_id], question.question)
            if question.answer_type not in answer_types:
                rejects.append(ctx.reject(question_id, "synthesize_qa.type_not_requested", f"answer type {question.answer_type!r}",
                                          input_id=source.asset_id))
            elif question_id not in {i[2] for i in items}:
                items.append((source, question, question_id, written.call_id))
    labels = mmupt.majority_labels([(s, q) for s, q, _, _ in items], vlm, ctx.media_path, votes=votes, temperature=temperature,
                                   min_agreement=min_agreement)
    rows = []
    for (source, question, question_id, call_id), (label, why) in zip(items, labels):
        if label is None:
            rejects.append(ctx.reject(question_id, "synthesize_qa.no_majority", why, input_id=source.asset_id))
            continue
        rows.append(_row(question_id, source, question.question, label, question.answer_type, question.choices,
                         question.category, question.abilities, vlm, mmupt.PROMPT_VERSION, call_id,
                         generator=f"{vlm.model} ({method}, majority of {votes})"))
    return rows


def _row(question_id, source, question, answer, answer_type, choices, category, abilities, engine, prompt_version, call_id,
         generator=None) -> dict:
    return {"question_id": question_id, "asset_ids": [source.asset_id], "question": question, "answer": answer,
            "answer_type": answer_type, "choices": list(choices), "category": category, "abilities": list(abilities),
            "reward_route": "model" if answer_type == "des" else "rule", "generator": generator or engine.model,
            "model": engine.model, "model_revision": engine.revision, "prompt_version": prompt_version, "call_id": call_id}
