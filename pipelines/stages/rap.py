"""rap: RAP's selection (CDE, ACE, DRM; pipelines/rap.py) as `difficulty` rows with method "rap".

Per question, for the policy bound to the `policy` role: its rollouts with and without the image
give the pass rates and the causal discrepancy; CDE (`mode: paper | code`) keeps the questions the
image helps with, ACE drops the attention-biased survivors (hf engine; other engines skip it and
say so in `detail`), and DRM swaps all-correct survivors for the hardest dropped questions the
policy still solves sometimes. Every scored question gets a row (`selected` true or false, `reason`,
`cde_gap`, `ace`, and the numbers behind the decision in `detail`), so the gap histogram covers the
whole pool; every dropped question is also a reject: `rap.language_prior`, `rap.all_correct`,
`rap.similarity_gate` (code mode), `rap.attention_biased`, `rap.replaced_by_harder`, or
`rap.too_few_rollouts` when a question lacks `min_rollouts` answers in either mode (no row).
Unsharded: code mode's pool mean, its right-1 draw and DRM all look at the whole pool.
"""

import json
from typing import Literal

import pyarrow as pa

from pipelines.policy.prompt import policy_messages
from pipelines.rap import Evidence, RapConfig, select_rap
from pipelines.stage import StageContext, StageResult, stage
from pipelines.stages.difficulty import reward_std
from pipelines.stages.rollouts import policy_id_of
from pipelines.visuals import Visuals
from schemas import make_id


@stage(reads={"questions": ["question_id", "question", "answer_type", "choices", "asset_ids"],
              "rollouts": ["question_id", "policy_id", "with_image", "correct", "reward"],
              "assets": ["asset_id", "kind", "media_uri", "sha256", "parent_asset_id", "frame_ts"]},
       writes="difficulty", version=1, unit="question", engines=("policy",), sharded=False)
def rap(questions: pa.Table, rollouts: pa.Table, assets: pa.Table, ctx: StageContext, *,
        mode: Literal["paper", "code"] = "paper", min_rollouts: int = 4,
        min_cde_gap: float = 0.5, code_min_cde_gap: float = 0.2, code_min_similarity: float = 0.6,
        code_similarity_mean: Literal["pool", "text_only"] = "pool", code_right1_share: float = 0.1,
        code_right1_seed: int = 42, ace: bool = True, ace_sigma: float = 2.0, min_ace: float = 0.1,
        ace_length_normalised: bool = True, ace_max_tokens: int = 48, drm: bool = True) -> StageResult:
    """`mode`: paper (drop cde_gap < min_cde_gap) or code (gap, similarity gate, right-1 add-back);
    `min_rollouts`: answers needed with and without the image; `min_ace`: λ_a (compared as log λ_a)."""
    config = RapConfig(mode=mode, min_cde_gap=min_cde_gap, code_min_cde_gap=code_min_cde_gap,
                       code_min_similarity=code_min_similarity, code_similarity_mean=code_similarity_mean,
                       code_right1_share=code_right1_share, code_right1_seed=code_right1_seed, ace=ace, ace_sigma=ace_sigma,
                       min_ace=min_ace, ace_length_normalised=ace_length_normalised, ace_max_tokens=ace_max_tokens, drm=drm)
    policy = ctx.engine("policy")
    policy_id = policy_id_of(policy)
    evidence, rejects, rewards = {}, [], {}
    groups = _groups(rollouts, policy_id)
    for question_id in questions.column("question_id").to_pylist():
        with_image, text_only = groups.get(question_id, ([], []))
        if len(with_image) < min_rollouts or len(text_only) < min_rollouts:
            rejects.append(ctx.reject(question_id, "rap.too_few_rollouts",
                                      f"{len(with_image)} rollouts with the image and {len(text_only)} without for "
                                      f"{policy_id}; RAP needs {min_rollouts} of each (rollouts with_image: [true, false])"))
            continue
        evidence[question_id] = Evidence(question_id, tuple(r["correct"] for r in with_image),
                                         tuple(r["correct"] for r in text_only))
        rewards[question_id] = [r["reward"] for r in with_image]
    decisions = select_rap(evidence, config, engine=policy if ace else None,
                           prompts=_prompts(questions, assets, ctx, [q for q in evidence]) if ace else None, seed=ctx.seed)
    rows = []
    for question_id, decision in decisions.items():
        item = evidence[question_id]
        rows.append({"difficulty_id": make_id("difficulty", question_id, policy_id, "rap"), "question_id": question_id,
                     "policy_id": policy_id, "method": "rap", "n_rollouts": len(item.correct_with_image),
                     "n_correct": item.n_correct, "pass_rate": item.pass_rate, "reward_std": reward_std(rewards[question_id]),
                     "n_rollouts_text_only": len(item.correct_text_only), "pass_rate_text_only": item.pass_rate_text_only,
                     "cde_gap": item.cde_gap, "ace": decision.ace, "selected": decision.kept,
                     "reason": f"rap.{mode}: {decision.why}",
                     "detail": json.dumps({"mode": mode, **decision.facts}, sort_keys=True, default=str)})
        if not decision.kept:
            rejects.append(ctx.reject(question_id, decision.reason, decision.why))
    ctx.progress(questions.num_rows)
    return StageResult(ctx.rows("difficulty", rows), ctx.rejects(rejects))


def _groups(rollouts: pa.Table, policy_id: str) -> dict[str, tuple[list, list]]:
    """question id -> (rollouts with the image, rollouts without), of one policy."""
    groups: dict[str, tuple[list, list]] = {}
    for r in rollouts.to_pylist():
        if r["policy_id"] == policy_id:
            groups.setdefault(r["question_id"], ([], []))[0 if r["with_image"] else 1].append(r)
    return groups


def _prompts(questions: pa.Table, assets: pa.Table, ctx: StageContext, question_ids: list[str]) -> dict[str, list[dict]]:
    """The policy's chat for each question, with the image it sees in rollouts (a video's contact sheet)."""
    wanted = set(question_ids)
    visuals = Visuals.of(assets.to_pylist())
    asset_by_id = {a["asset_id"]: a for a in visuals.items}
    prompts = {}
    for q in questions.to_pylist():
        asset = asset_by_id.get(q["asset_ids"][0])
        if q["question_id"] in wanted and asset is not None:
            prompts[q["question_id"]] = policy_messages(q["question"], q["answer_type"], q["choices"] or (),
                                                        image=visuals.policy_part(asset, ctx.root))
    return prompts
