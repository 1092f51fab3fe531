"""sft: cold-start supervised fine-tuning (TRL's SFTTrainer) on verified chains of thought; record the policy.

An optional step before `grpo` (Vision-R1's cold start, WeThink's SFT on refined CoT): it trains the
bound `policy` on the chains of kind `cot_kind` (`refined` from distill_cot, or `bridged`, the
modality-bridged chains from bridge_cot) whose verdicts all passed, each as (image, question) →
`<think>…</think><answer>…</answer>`. It writes one `policies` row of kind "sft" whose id derives
from the trained weights; the policy lives under the dataset root (`policies/<name>-sft-<hash>/`),
and a later `grpo` step with `start_from: sft` trains on from it. Every chain is counted: other
kinds are `sft.other_kind`, chains with no verdict `sft.unverified`, failed ones
`sft.failed_verification`, chains whose question or image is gone `sft.no_question` /
`sft.missing_image`, and those past `max_items` `sft.over_max_items`.
"""

import json
import re
import shutil

import pyarrow as pa

from pipelines.answers import has_think_answer_format
from pipelines.policy.prompt import trl_prompt
from pipelines.stage import StageContext, StageResult, stage
from pipelines.stages.rollouts import policy_id_of
from pipelines.visuals import Visuals

TRAINABLE_KINDS = ("refined", "bridged")


@stage(reads={"cots": ["cot_id", "question_id", "kind", "text", "final_answer"],
              "verdicts": ["subject_id", "passed"],
              "questions": ["question_id", "question", "answer_type", "choices", "asset_ids"],
              "assets": ["asset_id", "kind", "media_uri", "parent_asset_id", "frame_ts"]},
       writes="policies", version=1, unit="cot", engines=("policy",), sharded=False)
def sft(cots: pa.Table, verdicts: pa.Table, questions: pa.Table, assets: pa.Table, ctx: StageContext, *,
        cot_kind: str = "refined", max_steps: int = 20, batch_size: int = 8, learning_rate: float = 1e-4,
        max_length: int | None = None, max_items: int | None = None, lora_rank: int | None = None,
        lora_alpha: int = 16, lora_dropout: float = 0.0,
        lora_target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]) -> StageResult:
    """`cot_kind`: refined (WeThink) or bridged (Vision-R1); `max_steps`: optimizer steps; `batch_size`: examples per step;
    `max_length`: token cap per example (None: no truncation, which could cut image tokens); `lora_rank`: None trains every weight."""
    if cot_kind not in TRAINABLE_KINDS:
        raise ValueError(f"sft: cot_kind={cot_kind!r} is not a chain that ends in an answer; use one of "
                         f"{', '.join(TRAINABLE_KINDS)}")
    passed: dict[str, list[bool]] = {}
    for verdict in verdicts.to_pylist():
        passed.setdefault(verdict["subject_id"], []).append(bool(verdict["passed"]))
    by_question = {q["question_id"]: q for q in questions.to_pylist()}
    visuals = Visuals.of(assets.to_pylist())
    asset_by_id = {a["asset_id"]: a for a in visuals.items}
    chosen, rejects = [], []
    for cot in cots.to_pylist():
        reason = _refusal(cot, cot_kind, passed, by_question, asset_by_id)
        if reason:
            rejects.append(ctx.reject(cot["cot_id"], *reason))
        else:
            chosen.append(cot)
    if max_items is not None:
        rejects += [ctx.reject(c["cot_id"], "sft.over_max_items", f"only the first {max_items} verified chains train")
                    for c in chosen[max_items:]]
        chosen = chosen[:max_items]
    if not chosen:
        return StageResult(ctx.empty("policies"), ctx.rejects(rejects), kept=[])

    from pipelines.policy.grpo import LoraSettings
    from pipelines.policy.tiny_llava import weights_hash
    from pipelines.policy.trl_sft import train_sft

    rows = []
    for cot in chosen:
        q = by_question[cot["question_id"]]
        rows.append({"prompt": trl_prompt(q["question"], q["answer_type"], q["choices"] or ()),
                     "completion": [{"role": "assistant", "content": [{"type": "text", "text": sft_target(cot["text"], cot["final_answer"])}]}],
                     "images": [visuals.policy_image(asset_by_id[q["asset_ids"][0]], ctx.media_path)]})
    policy = ctx.engine("policy")
    lora = None if lora_rank is None else LoraSettings(lora_rank, lora_alpha, lora_dropout, tuple(lora_target_modules))
    work = ctx.root / "policies" / f".sft-{ctx.run_id}"
    shutil.rmtree(work, ignore_errors=True)
    metrics = train_sft(policy.model, rows, work, max_steps=max_steps, batch_size=batch_size, learning_rate=learning_rate,
                        max_length=max_length, seed=ctx.seed, lora=lora)
    revision = weights_hash(work)
    final = ctx.root / "policies" / f"{policy_id_of(policy).split('@')[0]}-sft-{revision[:12]}"
    if final.exists():
        shutil.rmtree(work)
    else:
        work.rename(final)
    ctx.progress(len(chosen))
    config = {"cot_kind": cot_kind, "max_steps": max_steps, "batch_size": batch_size, "learning_rate": learning_rate,
              "max_length": max_length, "lora_rank": lora_rank, "seed": ctx.seed}
    trained = type("Trained", (), {"model": str(final), "revision": revision})
    architecture = (json.loads((final / "config.json").read_text()).get("architectures") or ["unknown"])[0]
    row = {"policy_id": policy_id_of(trained), "base_policy_id": policy_id_of(policy), "kind": "sft", "path": str(final),
           "architecture": architecture, "data_version": ctx.data_version, "n_train_items": len(chosen),
           "steps": int(metrics["steps"]), "train_reward": None,
           "config": json.dumps(config, sort_keys=True), "metrics": json.dumps(metrics, sort_keys=True, default=str)}
    return StageResult(ctx.rows("policies", [row]), ctx.rejects(rejects), kept=[c["cot_id"] for c in chosen])


def _refusal(cot: dict, cot_kind: str, passed: dict, by_question: dict, asset_by_id: dict) -> tuple[str, str] | None:
    """(reason, detail) when a chain does not train, else None."""
    if cot["kind"] != cot_kind:
        return "sft.other_kind", f"a {cot['kind']} chain; this step trains on {cot_kind} chains"
    if cot["cot_id"] not in passed:
        return "sft.unverified", "no verdict for this chain: run `verify` with cot_kind matching before `sft`"
    if not all(passed[cot["cot_id"]]):
        return "sft.failed_verification", f"a verifier failed its final answer {cot['final_answer']!r}"
    question = by_question.get(cot["question_id"])
    if question is None:
        return "sft.no_question", f"its question {cot['question_id']} is not among this step's questions (rejected earlier?)"
    if question["asset_ids"][0] not in asset_by_id:
        return "sft.missing_image", f"its image {question['asset_ids'][0]} is not in the dataset"
    return None


def sft_target(text: str, final_answer: str | None) -> str:
    """The assistant turn to learn: the chain itself when it is `<think>…</think><answer>…</answer>`,
    else its reasoning wrapped in `<think>` and its final answer in `<answer>`.

    >>> sft_target("<think>3 + 4</think><answer>7</answer>", "7")
    '<think>3 + 4</think><answer>7</answer>'
    >>> sft_target("Three plus four. Wait, yes: 7.\\nThe answer is \\\\boxed{7}.", "7")
    '<think>Three plus four. Wait, yes: 7.\\nThe answer is \\\\boxed{7}.</think><answer>7</answer>'
    >>> sft_target("<think>count them</think> so <answer>5</answer> done", "5")
    '<think>count them so</think><answer>5</answer>'
    """
    if has_think_answer_format(text):
        return text.strip()
    reasoning = re.sub(r"<answer>.*?</answer>.*", "", text, flags=re.DOTALL)
    reasoning = re.sub(r"[ \t]+", " ", re.sub(r"</?think>", " ", reasoning))
    reasoning = re.sub(r" ?\n ?", "\n", reasoning).strip()
    return f"<think>{reasoning}</think><answer>{final_answer}</answer>"
