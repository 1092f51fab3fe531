"""`flow report fidelity`: do the published selectors help *this* policy on *this* data?

Reads one version (by default the newest) and, for the policy its recipe bound (`models.policy`):
1. **Arms** (pipelines/fidelity.py): the held-out reward after the same short GRPO run on the
   MCTS-selected questions, on a random subset of the same size, on the self-consistency selection,
   and on every training question, next to the untrained policy. Held-out questions are the
   `holdout` step's (`splits`), or, without one, a seeded 20 % by the same hash.
2. **RAP**: the share of questions the `rap` step selected, its reasons, and the histogram of the
   causal-discrepancy gap (pass rate with the image minus without) over the `group_stats` rows.
3. **Mixture**: the surrogate's best mixture against the uniform one from the `modomodo` step's rows:
   the uniform pilot's observed score, the surrogate's prediction, and (unless `observe_mixture` is
   off) an observed score for the surrogate mixture from one more pilot run with the step's settings.
Everything trains copies of the policy in a scratch folder and deletes them; nothing is committed.
Print whatever comes out: the report does not tune anything towards a method.
"""

import json
import tempfile
from collections import Counter
from pathlib import Path

from pipelines.engines import EngineRegistry
from pipelines.fidelity import choose_arms, histogram, run_arms
from pipelines.modomodo import PilotItem, pilot_run, split_items
from pipelines.stages.holdout import is_held_out
from pipelines.stages.rollouts import policy_id_of
from pipelines.visuals import Visuals
from schemas.errors import LakeError
from stores.lake import Lake

DEFAULT_HELD_OUT_SHARE = 0.2


def fidelity_report(lake: Lake, home: Path, *, version: int | None = None, steps: int = 8, seed: int = 0,
                    learning_rate: float = 1e-3, observe_mixture: bool = True, progress=lambda message: None) -> dict:
    """The report as a dict (what `flow report fidelity --format json` prints)."""
    version = lake.current_version() if version is None else version
    if version is None:
        raise LakeError(f"dataset {lake.root.name!r} has no version yet; build one with `flow run fidelity`")
    lake._check_version(version)  # UnknownVersion lists the versions there are
    run = next(v for v in lake.versions() if v["version"] == version)
    config = json.loads(next(v["config"] for v in lake.table("versions").to_pylist() if v["version"] == version))
    tables = {name: lake.table(name, version=version).to_pylist()
              for name in ("questions", "assets", "difficulty", "splits", "mixtures")}
    policy = EngineRegistry(config["models"], home).engine("policy")
    policy_id = policy_id_of(policy)
    rows = [r for r in tables["difficulty"] if r["policy_id"] == policy_id]
    if not rows:
        scored = sorted({r["policy_id"] for r in tables["difficulty"]}) or ["none"]
        raise LakeError(f"version {version} of {lake.root.name!r} has no difficulty rows for {policy_id} (the recipe's "
                        f"policy); policies with rows: {', '.join(scored)}. Run `rollouts` and `difficulty` (and `mcts`) first")

    held_out_ids, held_out_from = _held_out(tables, config)
    items = _pilot_items(tables, lake.root)
    scored_ids = {r["question_id"] for r in rows}
    pool = sorted(q for q in items if q not in held_out_ids and q in scored_ids)
    held_out = [items[q] for q in sorted(held_out_ids) if q in items]
    arms = choose_arms(rows, pool, policy_id=policy_id, seed=seed)
    with tempfile.TemporaryDirectory(prefix="thinkmill-fidelity-") as scratch:
        results = run_arms(Path(policy.model), arms, items, held_out, Path(scratch), steps=steps, seed=seed,
                           learning_rate=learning_rate, progress=progress)
        mixture = _mixture(tables["mixtures"], config, items, Path(policy.model), Path(scratch), seed=seed,
                           observe=observe_mixture, progress=progress)
    return {"dataset": lake.root.name, "version": version, "recipe": run["recipe"], "policy_id": policy_id,
            "held_out": {"n": len(held_out), "from": held_out_from}, "n_training_pool": len(pool),
            "grpo": {"steps": steps, "learning_rate": learning_rate, "seed": seed, "score": "wethink (0.7 accuracy + 0.3 format), greedy"},
            "arms": [vars(r) for r in results], "rap": _rap(rows), "mixture": mixture}


def _held_out(tables: dict, config: dict) -> tuple[set[str], str]:
    split_rows = tables["splits"]
    if split_rows:
        return {r["question_id"] for r in split_rows if r["split"] == "held_out"}, "the holdout step's splits"
    seed = int(config.get("seed", 0))
    ids = {q["question_id"] for q in tables["questions"] if is_held_out(q["question_id"], share=DEFAULT_HELD_OUT_SHARE, seed=seed)}
    return ids, f"no holdout step: a seeded {DEFAULT_HELD_OUT_SHARE:.0%} of questions (seed {seed})"


def _pilot_items(tables: dict, root: Path, domain_column: str = "category") -> dict[str, PilotItem]:
    """Rule-graded questions with their image, as GRPO trains on them (descriptive ones need a judge: left out)."""
    visuals = Visuals.of(tables["assets"])
    asset_by_id = {a["asset_id"]: a for a in visuals.items}
    items = {}
    for q in tables["questions"]:
        asset = asset_by_id.get(q["asset_ids"][0])
        if q["reward_route"] == "rule" and asset is not None:
            part = visuals.policy_part(asset, root)
            items[q["question_id"]] = PilotItem(q["question_id"], str(q.get(domain_column)), q["question"], q["answer"],
                                                q["answer_type"], tuple(q["choices"] or ()), part["path"], part["sha256"])
    return items


def _rap(rows: list[dict]) -> dict:
    rap_rows = [r for r in rows if r["method"] == "rap"]
    gaps = [r["cde_gap"] for r in rows if r["method"] == "group_stats" and r["cde_gap"] is not None]
    selected = sum(bool(r["selected"]) for r in rap_rows)
    return {"n_scored": len(rap_rows), "n_selected": selected,
            "selected_fraction": selected / len(rap_rows) if rap_rows else None,
            "reasons": dict(Counter(_reason(r["reason"]) for r in rap_rows if not r["selected"])),
            "cde_gap_histogram": histogram(gaps), "n_with_gap": len(gaps),
            "note": None if rap_rows else "no rap rows for this policy: add a `rap` step after `rollouts`"}


def _reason(reason: str | None) -> str:
    """'rap.paper: cde_gap 0.000 < 0.5 (...): answerable from language priors' -> 'rap.paper (answerable from language priors)'."""
    parts = (reason or "").split(": ")
    return parts[0] if len(parts) < 3 else f"{parts[0]} ({parts[-1]})"


def _mixture(mixture_rows: list[dict], config: dict, items: dict[str, PilotItem], model_dir: Path, scratch: Path, *,
             seed: int, observe: bool, progress) -> dict:
    uniform = next((m for m in mixture_rows if m["method"] == "seed" and json.loads(m["detail"] or "{}").get("kind") == "uniform"), None)
    surrogates = sorted((m for m in mixture_rows if m["method"] == "surrogate"),
                        key=lambda m: json.loads(m["detail"] or "{}").get("rank", 0))
    if uniform is None or not surrogates:
        return {"note": "no modomodo rows in this version: add a `modomodo` step (see mix-modomodo)"}
    best = surrogates[0]
    summary = {"domains": best["domains"],
               "uniform": {"weights": uniform["weights"], "observed": uniform["observed"], "predicted": uniform["predicted"]},
               "surrogate": {"weights": best["weights"], "predicted": best["predicted"], "observed": None}}
    params = next((step["modomodo"] for step in config.get("steps", []) if "modomodo" in step), None)
    if observe and params:
        progress("mixture: one pilot run on the surrogate's best mixture")
        if params["domain_column"] != "category":  # the items carry their category as the domain
            summary["note"] = f"observing a mixture over {params['domain_column']!r} is not supported here; predicted only"
            return summary
        splits = split_items(list(items.values()), out_of_domain=params["out_of_domain"], held_out_share=params["held_out_share"],
                             min_train_items=params["batch_size"] // params["num_generations"])
        weights = {d: w for d, w in zip(best["domains"], best["weights"]) if d in {i.domain for i in splits.train}}
        result = pilot_run(model_dir, splits.train, weights, splits.held_out, splits.out_of_domain, scratch / "mixture",
                           steps=params["pilot_steps"], num_generations=params["num_generations"],
                           batch_size=params["batch_size"], max_completion_length=params["max_completion_length"],
                           learning_rate=params["learning_rate"], rewards=tuple(params["rewards"]),
                           score_reward=params["score_reward"], score_max_tokens=params["score_max_tokens"], seed=seed)
        summary["surrogate"]["observed"] = result.out_of_domain
    return summary


def table_rows(report: dict) -> list[dict]:
    """The arms as rows for people: held-out reward and its change over the untrained policy."""
    base = report["arms"][0]["held_out_reward"]
    rows = []
    for arm in report["arms"]:
        reward = arm["held_out_reward"]
        rows.append({"arm": arm["name"], "questions": arm["n_train"], "steps": arm["steps"] or None,
                     "held-out reward": None if reward is None else round(reward, 3),
                     "vs base": None if reward is None or arm["name"] == "base" else round(reward - base, 3),
                     "chosen by": arm["chosen_by"]})
    return rows


def text_sections(report: dict) -> str:
    """RAP and the mixture, as lines for people (the arms are the table above them)."""
    rap, mixture = report["rap"], report["mixture"]
    lines = [f"{report['recipe']} version {report['version']}, policy {report['policy_id']}: {report['n_training_pool']} "
             f"training questions, {report['held_out']['n']} held out ({report['held_out']['from']}). GRPO: "
             f"{report['grpo']['steps']} steps, lr {report['grpo']['learning_rate']}, seed {report['grpo']['seed']}; "
             f"score: {report['grpo']['score']}.", "", "RAP:"]
    if rap["note"]:
        lines.append(f"  {rap['note']}")
    else:
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(rap["reasons"].items(), key=lambda x: -x[1])) or "none"
        lines.append(f"  selected {rap['n_selected']} of {rap['n_scored']} ({rap['selected_fraction']:.1%}); dropped: {reasons}")
    lines.append(f"  CDE gap (pass rate with image - without) over {rap['n_with_gap']} questions:")
    peak = max((count for _, _, count in rap["cde_gap_histogram"]), default=0) or 1
    lines += [f"    [{lo:+.2f}, {hi:+.2f}{']' if hi == 1 else ')'} {count:4d} {'#' * round(30 * count / peak)}"
              for lo, hi, count in rap["cde_gap_histogram"]]
    lines += ["", "Mixture (MoDoMoDo):"]
    if "uniform" not in mixture:
        lines.append(f"  {mixture['note']}")
    else:
        def weights(w):
            return ", ".join(f"{d} {x:.2f}" for d, x in zip(mixture["domains"], w))

        def number(x):
            return "-" if x is None else f"{x:.3f}"

        u, s = mixture["uniform"], mixture["surrogate"]
        lines.append(f"  uniform   ({weights(u['weights'])}): observed {number(u['observed'])}, predicted {number(u['predicted'])}")
        lines.append(f"  surrogate ({weights(s['weights'])}): observed {number(s['observed'])}, predicted {number(s['predicted'])}")
        if mixture.get("note"):
            lines.append(f"  {mixture['note']}")
        lines.append("  (out-of-domain pilot scores, the modomodo step's reward)")
    return "\n".join(lines)
