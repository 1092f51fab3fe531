"""modomodo: MoDoMoDo's mixture search (pipelines/modomodo.py) over the questions' domains; `mixtures` rows.

Domains are the values of `domain_column`: a question column (`category`, the synthetic family, by
default) or an asset column read through the question's image (`source`). The `out_of_domain`
domains never train: they are the out-of-domain split. Every other domain holds out a share of its
questions for the in-domain score and trains on the rest. One short GRPO pilot of the `policy` runs
per seed mixture (one-hot, leave-one-out, uniform); the heuristics and the quadratic surrogate then
propose mixtures. Rows: `seed` (weights and `observed` = the pilot's out-of-domain score; both
scores in `detail`), `alpha` / `ridge_vif` / `leave_one_out` and the surrogate's top k (`predicted`
= the surrogate's out-of-domain score). Seed rows get `predicted` too, so fit and observation sit
side by side. Questions that take part (train, held out, out-of-domain) are kept; model-judged ones
(`modomodo.model_judged`: pilots score with rule rewards only), ones without an image
(`modomodo.missing_image`) and those of a domain too small for one GRPO step
(`modomodo.too_few_items`) are rejected. Unsharded: the splits and pilots need every question.
"""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines.modomodo import (
    PilotItem,
    fit_quadratic,
    gaussian_candidates,
    heuristic_mixtures,
    pilot_run,
    seed_mixtures,
    split_items,
    top_mixtures,
)
from pipelines.stage import StageContext, StageResult, stage
from pipelines.stages.rollouts import policy_id_of
from pipelines.visuals import Visuals
from schemas import make_id


@stage(reads={"questions": ["question_id", "question", "answer", "answer_type", "choices", "asset_ids", "reward_route"],
              "assets": ["asset_id", "kind", "media_uri", "sha256", "source", "parent_asset_id", "frame_ts"]},
       writes="mixtures", version=1, unit="question", engines=("policy",), sharded=False)
def modomodo(questions: pa.Table, assets: pa.Table, ctx: StageContext, *, domain_column: str = "category",
             out_of_domain: list[str] = ["bar_chart"], held_out_share: float = 0.25, pilot_steps: int = 4,
             num_generations: int = 2, batch_size: int = 4, max_completion_length: int = 32, learning_rate: float = 1e-3,
             rewards: list[str] = ["format", "accuracy"], score_reward: str = "modomodo", score_max_tokens: int = 48,
             alphas: list[float] = [0.5], ridge: float = 1e-3, surrogate_splits: int = 5, surrogate_test_share: float = 0.2,
             candidates: int = 2000, top_k: int = 3) -> StageResult:
    """`out_of_domain`: domains held out of training entirely; `pilot_steps`: GRPO steps per pilot;
    `batch_size`: completions per step (batch_size / num_generations prompts); `top_k`: surrogate mixtures kept."""
    items, rejects = _pilot_items(questions, assets, ctx, domain_column)
    splits = split_items(items, out_of_domain=out_of_domain, held_out_share=held_out_share,
                         min_train_items=batch_size // num_generations)
    for domain, pool in splits.too_few.items():
        rejects += [ctx.reject(item.question_id, "modomodo.too_few_items",
                               f"domain {domain!r} has {len(pool)} questions; after holding some out, fewer than the "
                               f"{batch_size // num_generations} prompts one GRPO step needs are left") for item in pool]
    domains = sorted({item.domain for item in splits.train})
    _check_splits(domains, splits, items, out_of_domain, domain_column)

    policy = ctx.engine("policy")
    seeds = seed_mixtures(domains)
    results = {}  # distinct weights -> pilot result (with two domains, a leave-one-out mixture is a one-hot one)
    for index, (kind, weights) in enumerate(seeds):
        if tuple(weights) not in results:
            results[tuple(weights)] = pilot_run(
                Path(policy.model), splits.train, dict(zip(domains, weights)), splits.held_out, splits.out_of_domain,
                ctx.root / "policies" / f".pilot-{ctx.run_id}-{index}", steps=pilot_steps, num_generations=num_generations,
                batch_size=batch_size, max_completion_length=max_completion_length, learning_rate=learning_rate,
                rewards=tuple(rewards), score_reward=score_reward, score_max_tokens=score_max_tokens, seed=ctx.seed,
                log=lambda entry: ctx.progress(0))
    observed = np.array([w for _, w in seeds])
    in_scores = np.array([results[tuple(w)].in_domain for _, w in seeds])
    out_scores = np.array([results[tuple(w)].out_of_domain for _, w in seeds])
    surrogate = fit_quadratic(observed, out_scores, splits=surrogate_splits, test_share=surrogate_test_share, seed=ctx.seed)
    # A spread of 0 (every pilot scored the same) leaves the surrogate nothing to rank by: say so in every row.
    fit = {"test_r2": surrogate.test_r2, "n_train": surrogate.n_train, "n_test": surrogate.n_test,
           "score_spread": float(out_scores.max() - out_scores.min())}

    def row(method: str, weights: list[float], detail: dict, observed_score: float | None = None, *, name,
            predicted: float | None = None) -> dict:
        # The id names the mixture (what, by which rule), not its scores: a re-run replaces the row.
        return {"mixture_id": make_id("mixture", domain_column, domains, weights, method, name), "domain_column": domain_column,
                "domains": domains, "weights": [float(w) for w in weights], "method": method,
                "predicted": float(surrogate.predict([weights])[0]) if predicted is None else predicted,
                "observed": observed_score,
                "detail": json.dumps(detail, sort_keys=True, default=str)}

    rows = []
    for kind, weights in seeds:
        result = results[tuple(weights)]
        rows.append(row("seed", weights, {"kind": kind, "in_domain": result.in_domain, "out_of_domain": result.out_of_domain,
                                          "trained_items": len(result.trained_ids), "steps": result.steps,
                                          "train_reward": result.train_reward, "out_of_domain_domains": out_of_domain,
                                          "base_policy": policy_id_of(policy)},
                        result.out_of_domain, name=kind))
    for method, parameters, weights in heuristic_mixtures(observed, in_scores, out_scores, alphas=alphas, ridge=ridge):
        rows.append(row(method, weights, {**parameters, "surrogate": fit}, name=parameters))
    candidate_weights = gaussian_candidates(observed, n=candidates, seed=ctx.seed)
    for rank, (weights, predicted) in enumerate(top_mixtures(surrogate, candidate_weights, k=top_k), 1):
        rows.append(row("surrogate", weights, {"rank": rank, "candidates": len(candidate_weights), **fit}, name=rank,
                        predicted=predicted))
    ctx.progress(questions.num_rows)
    used = [item.question_id for item in splits.train + splits.held_out + splits.out_of_domain]
    return StageResult(ctx.rows("mixtures", rows), ctx.rejects(rejects), kept=used)


def _pilot_items(questions: pa.Table, assets: pa.Table, ctx: StageContext, domain_column: str) -> tuple[list[PilotItem], list]:
    """Questions as pilot items with their domain and the image the policy sees; rejects for the unusable."""
    question_columns, asset_columns = questions.schema.names, assets.schema.names
    if domain_column not in question_columns and domain_column not in asset_columns:
        raise ValueError(f"modomodo: domain_column {domain_column!r} is neither a question column "
                         f"({', '.join(question_columns)}) nor an asset column ({', '.join(asset_columns)})")
    visuals = Visuals.of(assets.to_pylist())
    asset_by_id = {a["asset_id"]: a for a in visuals.items}
    items, rejects = [], []
    for q in questions.to_pylist():
        asset = asset_by_id.get(q["asset_ids"][0])
        if q["reward_route"] != "rule":
            rejects.append(ctx.reject(q["question_id"], "modomodo.model_judged", f"a {q['answer_type']} answer is graded "
                                      "by a judge; pilot runs score with rule rewards only"))
        elif asset is None:
            rejects.append(ctx.reject(q["question_id"], "modomodo.missing_image",
                                      f"its image {q['asset_ids'][0]} is not in the dataset"))
        else:
            part = visuals.policy_part(asset, ctx.root)
            domain = q[domain_column] if domain_column in question_columns else asset[domain_column]
            items.append(PilotItem(q["question_id"], str(domain), q["question"], q["answer"], q["answer_type"],
                                   tuple(q["choices"] or ()), part["path"], part["sha256"]))
    return items, rejects


def _check_splits(domains: list[str], splits, items: list[PilotItem], out_of_domain: list[str], domain_column: str) -> None:
    """Two training domains and an out-of-domain split, or an error that says what there is."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item.domain] = counts.get(item.domain, 0) + 1
    present = ", ".join(f"{d} ({n})" for d, n in sorted(counts.items())) or "none"
    problems = []
    if len(domains) < 2:
        problems.append(f"{len(domains)} domain(s) with enough questions to train ({', '.join(domains) or 'none'}); "
                        "a mixture needs two")
    if not splits.out_of_domain:
        problems.append(f"no questions in the out-of-domain domains {out_of_domain}")
    if not splits.held_out:
        problems.append("no held-out in-domain questions")
    if problems:
        raise ValueError(f"modomodo: {'; '.join(problems)}. Questions by {domain_column}: {present}. Build more "
                         "scenes (--set source.synthetic.scenes=...) or change modomodo.out_of_domain.")
