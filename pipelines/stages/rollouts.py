"""rollouts: G sampled answers of the policy per question, with the image and without it.

Each (question, with_image) is one request with n = `group_size` (one call per group where the
engine supports it). Every response is scored: answer extracted, checked against the reference
(rule verifiers; the `judge` for descriptive answers), format checked, and rewarded with the
recipe's reward preset (WeThink's 0.7·accuracy + 0.3·format by default). The text-only group is
what RAP's causal discrepancy compares against. A question whose group could not be generated is
rejected (`rollouts.engine_error`, or `rollouts.missing_image` when its image is not in the dataset). Rows name the policy: difficulty is always *for a policy*.
The policy takes one image per prompt: a question about a video shows it the video's contact sheet
(its frames in a grid, in time order; pipelines/visuals.py), stored in the media store as PNG.
"""

import re
from pathlib import Path

import pyarrow as pa

from pipelines.answers import extract_answer, has_think_answer_format
from pipelines.engines.base import Request
from pipelines.policy.prompt import policy_messages
from pipelines.rewards import HFRRF, WEIGHTS, score
from pipelines.stage import StageContext, StageResult, stage
from pipelines.verification import check_answer
from pipelines.visuals import Visuals
from schemas import make_id

PROMPT_VERSION = "policy-v1"


def policy_id_of(engine) -> str:
    """Content-addressed policy id: `<model name>@<first 12 hex of the weights hash>`.

    A trailing build hash in the folder name is dropped, so a policy reads `tiny-llava@849d97cb4fa8`.
    """
    name = re.sub(r"-[0-9a-f]{12}$", "", Path(str(engine.model)).name)
    return f"{name}@{str(engine.revision)[:12]}"


@stage(reads={"questions": ["question_id", "question", "answer", "answer_type", "choices", "asset_ids"],
              "assets": ["asset_id", "kind", "media_uri", "sha256", "scene", "parent_asset_id", "frame_ts"]},
       writes="rollouts", version=1, unit="question", engines=("policy", "judge"))
def rollouts(questions: pa.Table, assets: pa.Table, ctx: StageContext, *, group_size: int = 8,
             with_image: list[bool] = [True, False], temperature: float = 1.0, top_p: float = 1.0,
             max_tokens: int = 48, reward: str = "wethink") -> StageResult:
    """`group_size`: G samples per question and mode; `with_image`: which modes (False = image removed)."""
    out, rejects = sample_and_score(ctx.engine("policy"), questions, assets, ctx, group_size=group_size, with_image=with_image,
                                    temperature=temperature, top_p=top_p, max_tokens=max_tokens, reward=reward)
    return StageResult(ctx.rows("rollouts", out), ctx.rejects(rejects))


def sample_and_score(policy, questions: pa.Table, assets: pa.Table, ctx: StageContext, *, group_size: int,
                     with_image: list[bool], temperature: float, top_p: float, max_tokens: int, reward: str) -> tuple[list, list]:
    """Rollout rows and reject rows for every question (shared with `rescore`)."""
    if reward not in WEIGHTS and reward != HFRRF:
        raise ValueError(f"unknown reward preset {reward!r}; presets: {', '.join([*WEIGHTS, HFRRF])}")
    policy_id = policy_id_of(policy)
    visuals = Visuals.of(assets.to_pylist())
    asset_by_id = {a["asset_id"]: a for a in visuals.items}
    rows, rejects = [], []
    params = [group_size, temperature, top_p, max_tokens, PROMPT_VERSION]
    jobs = []  # (question, image part) for questions whose image exists
    for q in questions.to_pylist():
        asset = asset_by_id.get(q["asset_ids"][0])
        if asset is None:
            rejects.append(ctx.reject(q["question_id"], "rollouts.missing_image", f"its image {q['asset_ids'][0]} is not in the dataset"))
        else:
            jobs.append((q, visuals.policy_part(asset, ctx.root)))
    # One call for the whole shard: the engine batches across questions (much faster than per question).
    requests = [Request(messages=policy_messages(q["question"], q["answer_type"], q["choices"] or (), image=image if mode else None),
                        n=group_size, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                        seed=_seed(ctx.seed, q["question_id"], mode), prompt_version=PROMPT_VERSION, task="rollout")
                for q, image in jobs for mode in with_image]
    responses = policy.generate(requests) if requests else []
    for index, (q, _) in enumerate(jobs):
        mine = responses[index * len(with_image):(index + 1) * len(with_image)]
        failed = [r.error for r in mine if r.error]
        if failed:
            rejects.append(ctx.reject(q["question_id"], "rollouts.engine_error", failed[0]))
            continue
        scored = [_score_group(q, response, mode, policy, policy_id, make_id("group", q["question_id"], policy_id, mode, params),
                               reward, ctx) for mode, response in zip(with_image, mine)]
        if any(group is None for group in scored):
            rejects.append(ctx.reject(q["question_id"], "rollouts.judge_failed", "the judge could not grade a descriptive answer"))
        else:
            rows += [row for group in scored for row in group]
    ctx.progress(questions.num_rows)
    return rows, rejects


def _score_group(q: dict, response, with_image: bool, policy, policy_id: str, group_id: str, reward: str,
                 ctx: StageContext) -> list[dict] | None:
    """Rollout rows of one group, each extracted, checked and rewarded; None if the judge failed."""
    rows = []
    for index, text in enumerate(response.texts):
        extracted = extract_answer(text)
        judged = _judge_score(extracted, q, ctx) if q["answer_type"] == "des" else None
        if q["answer_type"] == "des" and judged is None:
            return None
        scores = score(text, q["answer"], answer_type=q["answer_type"], choices=tuple(q["choices"] or ()),
                       weights=reward, judge_score=judged)
        rows.append({"rollout_id": make_id("rollout", group_id, index, text), "question_id": q["question_id"],
                     "policy_id": policy_id, "group_id": group_id, "sample_index": index, "with_image": with_image,
                     "response": text, "extracted": extracted, "correct": _is_correct(extracted, q, judged),
                     "format_ok": has_think_answer_format(text), "reward": float(scores["overall"]),
                     "model": str(policy.model), "model_revision": policy.revision, "prompt_version": PROMPT_VERSION,
                     "call_id": response.call_id})
    return rows


def _is_correct(extracted: str | None, question: dict, judged: float | None) -> bool:
    if extracted is None:
        return False
    if judged is not None:
        return judged >= 0.5
    check = check_answer(extracted, question["answer"], question["answer_type"], choices=tuple(question["choices"] or ()))
    return bool(check and check.passed)


def _judge_score(extracted: str | None, question: dict, ctx: StageContext) -> float | None:
    """Descriptive answers: the judge's tiered score (degenerate answers score 0 without a call); None if it failed."""
    from pipelines.stages.verify import judge_score

    return judge_score(ctx.engine("judge"), question["question"], question["answer"], extracted, scene=None).score


def _seed(seed: int, question_id: str, with_image: bool) -> int:
    from schemas.base import sha256_text

    return int(sha256_text(f"{seed}/{question_id}/{with_image}")[:8], 16)
