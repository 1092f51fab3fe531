"""grpo: train the policy with GRPO (TRL's GRPOTrainer) on the selected questions; record the new policy.

A thin adapter: it builds TRL's dataset from our tables (the policy chat with an image placeholder,
the image, and `solution` / `answer_type` / `choices` / `question` / `reward_route` / `question_id`
columns for the rewards), takes reward functions from the rewards registry (pipelines/rewards.py),
and calls `pipelines.policy.grpo.train_grpo`, or `pipelines.policy.ptst.train_phases` for a PTST
schedule. It starts from the bound `policy` role, or (`start_from: sft`) from the policy an earlier
`sft` step of this run trained. Options: LoRA (merged into the saved policy), DAPO's dynamic sampling
inside training (`online_filter: dapo`), a training order from a mixture (MoDoMoDo's sampler) or
MMR1's half-weighted batches, checkpoints every `save_steps`. It writes one `policies` row whose id
derives from the trained weights; the policy lives under the dataset root
(`policies/<name>-grpo-<hash>/`, with `checkpoints/` and PTST's intermediate `phases/` inside).
Unselected difficulty rows are rejected (`grpo.not_selected`), as are a question's second selected
row (`grpo.same_question`: a question trains once, whatever methods selected it), those past `max_items`
(`grpo.over_max_items`) and those a mixture never drew (`grpo.not_drawn_by_mixture`).
A question about a video trains on the video's contact sheet (pipelines/visuals.py). On a CUDA
machine the same call trains in bf16 and generates with vLLM when installed (`vllm_mode`).
"""

import json
import shutil
from pathlib import Path

import pyarrow as pa

from pipelines.policy.prompt import trl_prompt
from pipelines.rewards import REWARDS, trl_reward
from pipelines.selectors import one_per_question
from pipelines.stage import StageContext, StageResult, stage
from pipelines.stages.rollouts import policy_id_of
from pipelines.training_order import BATCH_COMPOSITIONS, mixture_order, mmr1_order
from pipelines.visuals import Visuals
from schemas.errors import UnknownEngine

START_FROM = ("policy", "sft")


@stage(reads={"difficulty": ["difficulty_id", "question_id", "policy_id", "method", "selected", "weight", "learnability"],
              "questions": ["question_id", "question", "answer", "answer_type", "choices", "asset_ids", "category", "reward_route"],
              "assets": ["asset_id", "kind", "media_uri", "parent_asset_id", "frame_ts"],
              "run.policies": ["policy_id", "kind", "path"]},
       writes="policies", version=3, unit="selected question", engines=("policy", "judge"), sharded=False)
def grpo(difficulty: pa.Table, questions: pa.Table, assets: pa.Table, run_policies: pa.Table, ctx: StageContext, *,
         max_steps: int = 8, num_generations: int = 4, batch_size: int = 8, max_completion_length: int = 48,
         learning_rate: float = 1e-4, beta: float = 0.0, temperature: float = 1.0,
         rewards: list[str] = ["format", "accuracy"], max_items: int | None = None, start_from: str = "policy",
         ptst: list[tuple[int, int]] | None = None, online_filter: str = "none", max_extra_generation_batches: int = 4,
         mixture: dict[str, float] | None = None, mixture_domain_column: str = "category",
         batch_composition: str = "uniform", lora_rank: int | None = None, lora_alpha: int = 16,
         lora_dropout: float = 0.0, lora_target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"],
         save_steps: int | None = None, no_answer_guard: bool = True, vllm_mode: str = "colocate",
         vllm_server_base_url: str | None = None, gradient_accumulation_steps: int = 1) -> StageResult:
    """`rewards`: names in pipelines.rewards.REWARDS, summed; `max_steps`: optimizer steps (per phase under PTST);
    `batch_size`: completions per micro-batch (prompts = batch_size / num_generations), `gradient_accumulation_steps`
    micro-batches per optimizer step; `ptst`: [[max completion
    length, G], ...] with a constant product (replaces num_generations and max_completion_length); `online_filter`:
    "dapo" resamples groups without reward spread (at most `max_extra_generation_batches` extra batches per step);
    `mixture`: domain → weight over `mixture_domain_column`; `batch_composition`: "mmr1" = half of each batch by
    difficulty weight (learnability when unset), half uniform; `lora_rank`: None trains every weight."""
    phases = _check_params(rewards, start_from, online_filter, batch_composition, vllm_mode, mixture, ptst,
                           batch_size, num_generations)
    chosen, duplicates = one_per_question([r for r in difficulty.to_pylist() if r["selected"]])
    rejects = [ctx.reject(r["difficulty_id"], "grpo.not_selected", f"question {r['question_id']} was not selected")
               for r in difficulty.to_pylist() if not r["selected"]]
    rejects += [ctx.reject(r["difficulty_id"], "grpo.same_question",
                           f"question {r['question_id']} already trains through its {kept['method']} row")
                for r, kept in duplicates]
    if max_items is not None:
        rejects += [ctx.reject(r["difficulty_id"], "grpo.over_max_items", f"only the first {max_items} selected items train")
                    for r in chosen[max_items:]]
        chosen = chosen[:max_items]
    policy, missing_start = _start_policy(ctx, start_from, run_policies)
    if missing_start:
        rejects += [ctx.reject(r["difficulty_id"], "grpo.no_start_policy", missing_start) for r in chosen]
        return StageResult(ctx.empty("policies"), ctx.rejects(rejects), kept=[])
    by_id = {q["question_id"]: q for q in questions.to_pylist()}
    visuals = Visuals.of(assets.to_pylist())
    asset_by_id = {a["asset_id"]: a for a in visuals.items}
    rows = [_row(by_id[item["question_id"]], visuals, asset_by_id, ctx) for item in chosen]
    if not rows:
        return StageResult(ctx.empty("policies"), ctx.rejects(rejects), kept=[])
    prompts_per_step = batch_size // num_generations
    order, shuffle = list(range(len(rows))), True
    if mixture:
        domains = [str(by_id[item["question_id"]][mixture_domain_column]) for item in chosen]
        order, shuffle = mixture_order(domains, mixture, seed=ctx.seed), False
        drawn = set(order)
        rejects += [ctx.reject(item["difficulty_id"], "grpo.not_drawn_by_mixture",
                               f"the mixture sampler stopped (a domain ran out) before drawing question {item['question_id']}")
                    for index, item in enumerate(chosen) if index not in drawn]
        chosen = [item for index, item in enumerate(chosen) if index in drawn]
    elif batch_composition == "mmr1":
        weights = [i["weight"] if i["weight"] is not None else i["learnability"] for i in chosen]
        order, shuffle = mmr1_order(weights, prompts_per_batch=prompts_per_step,
                                    n_batches=max_steps * gradient_accumulation_steps * len(phases or [1]),
                                    seed=ctx.seed), False

    from pipelines.policy.grpo import LoraSettings, train_grpo
    from pipelines.policy.ptst import train_phases
    from pipelines.policy.tiny_llava import weights_hash

    config = {"max_steps": max_steps, "num_generations": num_generations, "batch_size": batch_size,
              "max_completion_length": max_completion_length, "learning_rate": learning_rate, "beta": beta,
              "temperature": temperature, "rewards": rewards, "seed": ctx.seed, "start_from": start_from, "ptst": ptst,
              "online_filter": online_filter, "max_extra_generation_batches": max_extra_generation_batches,
              "mixture": mixture, "batch_composition": batch_composition, "lora_rank": lora_rank, "save_steps": save_steps,
              "no_answer_guard": no_answer_guard, "gradient_accumulation_steps": gradient_accumulation_steps}
    judge = _judge(ctx) if any(REWARDS[name].needs_judge for name in rewards) else None
    reward_funcs = [trl_reward(name, judge=judge, no_answer_guard=no_answer_guard) for name in rewards]
    lora = None if lora_rank is None else LoraSettings(lora_rank, lora_alpha, lora_dropout, tuple(lora_target_modules))
    work = ctx.root / "policies" / f".training-{ctx.run_id}"
    shutil.rmtree(work, ignore_errors=True)  # a crashed attempt of this run: start clean
    settings = dict(max_steps=max_steps, learning_rate=learning_rate, beta=beta, temperature=temperature, seed=ctx.seed,
                    lora=lora, save_steps=save_steps, online_filter=online_filter, shuffle=shuffle,
                    max_extra_generation_batches=max_extra_generation_batches, vllm_mode=vllm_mode,
                    vllm_server_base_url=vllm_server_base_url, gradient_accumulation_steps=gradient_accumulation_steps)
    ordered = [rows[i] for i in order]
    if phases:
        metrics = train_phases(Path(policy.model), ordered, reward_funcs, work / "policy", phases=phases,
                               prompts_per_step=prompts_per_step, phase_dir=work / "phases",
                               checkpoint_dir=work / "checkpoints", log=lambda step: ctx.progress(0), **settings)
    else:
        metrics = train_grpo(Path(policy.model), ordered, reward_funcs, work / "policy", num_generations=num_generations,
                             per_device_train_batch_size=batch_size, max_completion_length=max_completion_length,
                             checkpoint_dir=work / "checkpoints", log=lambda step: ctx.progress(0), **settings)
    revision = weights_hash(work / "policy")
    final = _keep(work, ctx.root / "policies" / f"{policy_id_of(policy).split('@')[0]}-grpo-{revision[:12]}")
    metrics["checkpoints"] = [str(Path(c).relative_to(work / "checkpoints")) for c in metrics["checkpoints"]]
    ctx.progress(len(chosen))
    trained = type("Trained", (), {"model": str(final), "revision": revision})
    row = {"policy_id": policy_id_of(trained), "base_policy_id": policy_id_of(policy), "kind": "grpo", "path": str(final),
           "architecture": _architecture(final), "data_version": ctx.data_version, "n_train_items": len(chosen),
           "steps": int(metrics["steps"]), "train_reward": metrics.get("train_reward"),
           "config": json.dumps(config, sort_keys=True), "metrics": json.dumps(metrics, sort_keys=True, default=str)}
    return StageResult(ctx.rows("policies", [row]), ctx.rejects(rejects), kept=[r["difficulty_id"] for r in chosen])


def _check_params(rewards, start_from, online_filter, batch_composition, vllm_mode, mixture, ptst, batch_size,
                  num_generations) -> list:
    """Every problem with the parameters at once, before any work; the PTST phases when a schedule is given."""
    from pipelines.policy.grpo import ONLINE_FILTERS, VLLM_MODES
    from pipelines.policy.ptst import check_schedule

    problems = [f"unknown reward {name!r} (known: {', '.join(REWARDS)})" for name in rewards if name not in REWARDS]
    for name, value, known in (("start_from", start_from, START_FROM), ("online_filter", online_filter, ONLINE_FILTERS),
                               ("batch_composition", batch_composition, BATCH_COMPOSITIONS), ("vllm_mode", vllm_mode, VLLM_MODES)):
        if value not in known:
            problems.append(f"{name}={value!r}: known values are {', '.join(known)}")
    if mixture and batch_composition != "uniform":
        problems.append(f"a mixture fixes the training order; batch_composition={batch_composition!r} cannot apply too")
    if not rewards:
        problems.append("no rewards: name at least one of " + ", ".join(REWARDS))
    if batch_size % num_generations:
        problems.append(f"batch_size ({batch_size}) must be a multiple of num_generations ({num_generations}): "
                        "a step holds whole groups")
    phases = []
    if ptst:
        try:
            phases = check_schedule(ptst)
        except ValueError as error:
            problems.append(str(error))
    if problems:
        raise ValueError("grpo: " + "; ".join(problems))
    return phases


def _start_policy(ctx: StageContext, start_from: str, run_policies: pa.Table):
    """The engine of the policy to train, and why there is none (None when there is one)."""
    if start_from == "policy":
        return ctx.engine("policy"), None
    trained = [p for p in run_policies.to_pylist() if p["kind"] == "sft"]
    if not trained:
        return None, ("start_from=sft, but no sft step before grpo in this run trained a policy; add an `sft` step "
                      "before `grpo`, or bind models.policy to a trained checkpoint and use start_from=policy")
    return ctx.engines.engine_for_model(trained[-1]["path"]), None


def _row(question: dict, visuals: Visuals, asset_by_id: dict, ctx: StageContext) -> dict:
    return {"prompt": trl_prompt(question["question"], question["answer_type"], question["choices"] or ()),
            "image": visuals.policy_image(asset_by_id[question["asset_ids"][0]], ctx.media_path),
            "solution": question["answer"], "answer_type": question["answer_type"],
            "choices": list(question["choices"] or []), "question": question["question"],
            "reward_route": question["reward_route"], "question_id": question["question_id"]}


def _judge(ctx: StageContext):
    try:
        return ctx.engine("judge")
    except UnknownEngine:
        return None  # descriptive items then get None ("not applicable") from judge-based rewards


def _keep(work: Path, final: Path) -> Path:
    """Move the trained policy (and its checkpoints and PTST phases) to its content-addressed folder."""
    if final.exists():  # the same weights were trained before: keep the first copy
        shutil.rmtree(work)
        return final
    (work / "policy").rename(final)
    for extra in ("checkpoints", "phases"):
        if (work / extra).exists():
            (work / extra).rename(final / extra)
    shutil.rmtree(work)
    return final


def _architecture(policy_dir: Path) -> str:
    config = json.loads((policy_dir / "config.json").read_text())
    return (config.get("architectures") or ["unknown"])[0]
