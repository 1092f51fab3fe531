"""grpo: train the policy with GRPO (TRL's GRPOTrainer) on the selected questions; record the new policy.

A thin adapter: it builds TRL's dataset from our tables (the policy chat with an image placeholder,
the image, and `solution` / `answer_type` / `choices` columns for the rewards), takes reward
functions from the rewards registry, calls `pipelines.policy.grpo.train_grpo`, and writes one
`policies` row whose id is derived from the trained weights. The checkpoint lives under the dataset
root (`policies/<policy id>/`). A question about a video trains on the video's contact sheet (its
frames in a grid, in time order: pipelines/visuals.py), the one image the policy sees in rollouts too.
On a CUDA machine the same call trains in bf16 (and generates with
vLLM when it is installed); here it runs on the CPU with the tiny policy.
"""

import json
import shutil
from pathlib import Path

import pyarrow as pa

from pipelines.policy.prompt import trl_prompt
from pipelines.rewards import trl_reward
from pipelines.stage import StageContext, StageResult, stage
from pipelines.stages.rollouts import policy_id_of
from pipelines.visuals import Visuals


@stage(reads={"difficulty": ["difficulty_id", "question_id", "policy_id", "selected"],
              "questions": ["question_id", "question", "answer", "answer_type", "choices", "asset_ids"],
              "assets": ["asset_id", "kind", "media_uri", "parent_asset_id", "frame_ts"]},
       writes="policies", version=1, unit="selected question", engines=("policy",), sharded=False)
def grpo(difficulty: pa.Table, questions: pa.Table, assets: pa.Table, ctx: StageContext, *, max_steps: int = 8,
         num_generations: int = 4, batch_size: int = 8, max_completion_length: int = 48, learning_rate: float = 1e-4,
         beta: float = 0.0, temperature: float = 1.0, rewards: list[str] = ["format", "accuracy"],
         max_items: int | None = None) -> StageResult:
    """`rewards`: reward functions from the registry (format, accuracy, hybrid_wethink, hfrrf); `max_steps`: optimizer steps."""
    policy = ctx.engine("policy")
    chosen = [r for r in difficulty.to_pylist() if r["selected"]]
    rejects = [ctx.reject(r["difficulty_id"], "grpo.not_selected", f"question {r['question_id']} was not selected")
               for r in difficulty.to_pylist() if not r["selected"]]
    if max_items is not None:
        rejects += [ctx.reject(r["difficulty_id"], "grpo.over_max_items", f"only the first {max_items} selected items train")
                    for r in chosen[max_items:]]
        chosen = chosen[:max_items]
    by_id = {q["question_id"]: q for q in questions.to_pylist()}
    visuals = Visuals.of(assets.to_pylist())
    asset_by_id = {a["asset_id"]: a for a in visuals.items}
    rows = []
    for item in chosen:
        q = by_id[item["question_id"]]
        rows.append({"prompt": trl_prompt(q["question"], q["answer_type"], q["choices"] or ()),
                     "image": visuals.policy_image(asset_by_id[q["asset_ids"][0]], ctx.media_path),
                     "solution": q["answer"], "answer_type": q["answer_type"], "choices": list(q["choices"] or [])})
    if not rows:
        return StageResult(ctx.empty("policies"), ctx.rejects(rejects), kept=[])

    from pipelines.policy.grpo import train_grpo
    from pipelines.policy.tiny_llava import weights_hash

    config = {"max_steps": max_steps, "num_generations": num_generations, "batch_size": batch_size,
              "max_completion_length": max_completion_length, "learning_rate": learning_rate, "beta": beta,
              "temperature": temperature, "rewards": rewards, "seed": ctx.seed}
    work = ctx.root / "policies" / f".training-{ctx.run_id}"
    metrics = train_grpo(Path(policy.model), rows, [trl_reward(kind) for kind in rewards], work, max_steps=max_steps,
                         num_generations=num_generations, per_device_train_batch_size=batch_size,
                         max_completion_length=max_completion_length, learning_rate=learning_rate, beta=beta,
                         temperature=temperature, seed=ctx.seed, log=lambda step: ctx.progress(0))
    revision = weights_hash(work)
    base_name = policy_id_of(policy).split("@")[0]
    final = ctx.root / "policies" / f"{base_name}-grpo-{revision[:12]}"
    if final.exists():
        shutil.rmtree(work)
    else:
        work.rename(final)
    trained = type("Trained", (), {"model": str(final), "revision": revision})
    ctx.progress(len(rows))
    row = {"policy_id": policy_id_of(trained), "base_policy_id": policy_id_of(policy), "kind": "grpo", "path": str(final),
           "architecture": "LlavaForConditionalGeneration", "data_version": ctx.data_version, "n_train_items": len(rows),
           "steps": int(metrics.get("steps", max_steps)), "train_reward": metrics.get("train_reward"),
           "config": json.dumps(config, sort_keys=True), "metrics": json.dumps(metrics, sort_keys=True, default=str)}
    return StageResult(ctx.rows("policies", [row]), ctx.rejects(rejects), kept=[r["difficulty_id"] for r in chosen])
