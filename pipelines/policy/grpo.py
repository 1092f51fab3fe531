"""GRPO training on TRL: our rows and reward functions in, a trained checkpoint and its log out.

Everything TRL- and transformers-specific about GRPO lives here; the GRPO stage builds `rows` and
`reward_funcs` from our tables and writes the policy row. What TRL 1.16 expects, and what surprised:

- Dataset: a `prompt` column of conversational messages whose user content holds a bare
  `{"type": "image"}` placeholder, and an `image` column of PIL images. TRL inserts the image into
  the placeholder, renders the chat with the processor's template and lets the processor expand
  `<|image_pad|>` into the vision tokens. Every other column (`solution`, `answer_type`, `choices`,
  and `image` itself) reaches each reward function as a keyword list, one entry per completion.
- Reward functions receive conversational completions (`[{"role": "assistant", "content": text}]`);
  `_plain_text_reward` hands them plain strings instead, so rewards stay free of TRL's formats. They
  are also passed `prompts`, `completion_ids`, `trainer_state`, `log_extra` and `log_metric`, so
  they must accept `**kwargs`. `None` means "not applicable" (TRL turns it into NaN and skips it).
- Rows with and without an image cannot share a batch (`grpo_dataset` refuses the mix): TRL hands
  the processor a None image. All-image and all-text runs both work.
- Passing the model as a path lets TRL load the processor itself with `padding_side="left"`
  (generation needs left padding); a processor we load and pass would keep the saved side.
- GRPOConfig defaults differ from TrainingArguments: `bf16=True` and `gradient_checkpointing=True`,
  which on CPU fail or only slow a tiny model down, so `device_settings` sets both per machine.
- Checkpoints (`save_steps`) are TRL's own, minus the pickles (`training_args.bin` becomes JSON);
  LoRA goes through TRL's `peft_config`, and the saved policy is the merged model.
- Options that need more than a GRPOConfig field live beside this module: DAPO's dynamic sampling
  (`dynamic_sampling.py`, a GRPOTrainer subclass) and PTST's phases (`ptst.py`, one run per phase).
- `per_device_train_batch_size` counts completions, not prompts: 8 with `num_generations=4` is two
  prompts per step, each sampled four times. It must be a multiple of `num_generations`.
- Generation uses the model's `generate` with `do_sample=True` and suppresses the image token
  (a sampled placeholder would have no image features behind it).
"""

import functools
import importlib.util
import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset
from transformers import PrinterCallback, TrainerCallback

from pipelines.policy.tiny_llava import save_policy, write_dir_atomically

VLLM_MODES = ("colocate", "server", "off")
ONLINE_FILTERS = ("none", "dapo")


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapters instead of full fine-tuning (peft). The saved policy is the base with the adapter
    merged in (a plain checkpoint every engine loads, whose id derives from the merged weights); the
    adapter alone is kept beside it in `lora-adapter/`."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    # Attention projections of the language model (Qwen2, Llama, ...); LLaVA's CLIP tower has
    # q/k/v_proj too, so those adapt as well.
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


def train_grpo(model_dir: Path, rows: list[dict], reward_funcs: list[Callable], out_dir: Path, *,
               max_steps: int = 8, num_generations: int = 4, per_device_train_batch_size: int = 8,
               max_completion_length: int = 32, learning_rate: float = 1e-4, beta: float = 0.0,
               temperature: float = 1.0, seed: int = 0, log: Callable[[dict], None] | None = None,
               lora: LoraSettings | None = None, save_steps: int | None = None, checkpoint_dir: Path | None = None,
               online_filter: str = "none", max_extra_generation_batches: int = 4, shuffle: bool = True,
               vllm_mode: str = "colocate", vllm_server_base_url: str | None = None,
               gradient_accumulation_steps: int = 1) -> dict:
    """Train the checkpoint in `model_dir` with GRPO on `rows`; save it to `out_dir`; return metrics.

    `rows`: dicts with `prompt` (messages with a {"type": "image"} placeholder), `image` (PIL; absent
    or None in an all-text run) and any columns the rewards read. `reward_funcs`: `f(completions: list[str], **columns) -> list[float | None]`,
    summed with equal weights. `beta`: KL weight to the starting policy (0 skips the reference model,
    as in DAPO and Dr. GRPO). `log(entry)` is called with each step's log dict.
    `lora`: train LoRA adapters (merged into the saved policy) instead of every weight.
    `save_steps`: also save a checkpoint every that many steps into `checkpoint_dir/checkpoint-<step>/`
    (weights, processor, trainer_state.json, training_args.json: no optimizer state, no pickles).
    `online_filter`: "dapo" drops groups with no reward spread and generates more, at most
    `max_extra_generation_batches` extra batches per step (pipelines/policy/dynamic_sampling.py).
    `shuffle`: False keeps the rows' order (a mixture sampler's order) instead of TRL's shuffling.
    `vllm_mode` / `vllm_server_base_url`: generation on a CUDA machine with vLLM (`device_settings`).
    `gradient_accumulation_steps`: micro-batches of `per_device_train_batch_size` completions per
    optimizer step (TRL then generates for all of them at once).

    Metrics (keys as in the `policies` table where one exists): `steps` (optimizer steps run),
    `train_reward` (mean reward over the last quarter of the steps, at least one), `log` (one dict per
    step: step, reward, reward_std, frac_reward_zero_std, loss, grad_norm, entropy, rewards/<name>/mean,
    completions/mean_length, ...), `seconds`, `device`, `checkpoints` (folders saved), `lora`.
    """
    if per_device_train_batch_size % num_generations:
        raise ValueError(
            f"per_device_train_batch_size ({per_device_train_batch_size}) must be a multiple of "
            f"num_generations ({num_generations}): TRL fills each batch with whole groups"
        )
    if online_filter not in ONLINE_FILTERS:
        raise ValueError(f"unknown online_filter {online_filter!r}; known: {', '.join(ONLINE_FILTERS)}")
    if save_steps is not None and checkpoint_dir is None:
        raise ValueError("save_steps needs a checkpoint_dir to save into")
    dataset = grpo_dataset(rows)
    from trl import GRPOConfig  # slow import (about 3 s): only when training

    device = device_settings(cuda=torch.cuda.is_available(), vllm_installed=importlib.util.find_spec("vllm") is not None,
                             vllm_mode=vllm_mode, vllm_server_base_url=vllm_server_base_url)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="thinkmill-grpo-") as scratch:
        saving = ({"save_strategy": "steps", "save_steps": save_steps, "save_only_model": True}
                  if save_steps else {"save_strategy": "no"})
        config = GRPOConfig(
            output_dir=str(checkpoint_dir) if save_steps else scratch,  # nothing lands in scratch
            max_steps=max_steps, num_generations=num_generations,
            per_device_train_batch_size=per_device_train_batch_size,
            max_completion_length=max_completion_length, learning_rate=learning_rate, beta=beta,
            temperature=temperature, seed=seed, data_seed=seed, shuffle_dataset=shuffle, **device, **saving,
            gradient_accumulation_steps=gradient_accumulation_steps, logging_steps=1, report_to="none",
            disable_tqdm=True, dataloader_num_workers=0,
        )
        callbacks = [_LogEachStep(log)] if log else []
        callbacks += [_CheckpointsWithoutPickles()] if save_steps else []
        trainer = _trainer(online_filter, max_extra_generation_batches)(
            model=str(model_dir), reward_funcs=[_plain_text_reward(f) for f in reward_funcs], args=config,
            train_dataset=dataset, callbacks=callbacks or None, peft_config=peft_config(lora),
        )
        trainer.remove_callback(PrinterCallback)  # disable_tqdm swaps the bar for a print of every log
        trainer.train()
        save_trained(trainer, Path(out_dir), lora)
        log_per_step = step_metrics(trainer.state.log_history)
    saved = Path(checkpoint_dir).glob("checkpoint-*") if save_steps else []
    checkpoints = [str(p) for p in sorted(saved, key=lambda p: int(p.name.rsplit("-", 1)[1]))]  # checkpoint-10 after -9
    return {"steps": trainer.state.global_step, "train_reward": mean_reward_last(log_per_step), "log": log_per_step,
            "seconds": round(time.perf_counter() - started, 2), "checkpoints": checkpoints,
            "device": {k: v for k, v in device.items() if k in ("use_cpu", "bf16", "use_vllm", "vllm_mode")},
            "gradient_accumulation_steps": gradient_accumulation_steps,
            "lora": None if lora is None else {**lora.__dict__, "target_modules": list(lora.target_modules), "saved": "merged"}}


def device_settings(*, cuda: bool, vllm_installed: bool, vllm_mode: str = "colocate",
                    vllm_server_base_url: str | None = None, vllm_gpu_memory_utilization: float = 0.3) -> dict:
    """GRPOConfig fields for the machine: CPU → fp32 and transformers' `generate`; CUDA → bf16, and
    vLLM generation when vLLM is installed and `vllm_mode` is not "off".

    "colocate" runs vLLM inside the training process, sharing the GPU (`vllm_gpu_memory_utilization`
    of its memory); "server" talks to `trl vllm-serve` on another GPU (`vllm_server_base_url`, e.g.
    http://127.0.0.1:8000). TRL syncs weights to vLLM over NCCL, so neither works without CUDA.

    Gradient checkpointing is on with CUDA (a 7B policy's activations need it) and off on CPU (it
    only slows a tiny model down).

    >>> device_settings(cuda=False, vllm_installed=True)
    {'use_cpu': True, 'bf16': False, 'gradient_checkpointing': False, 'use_vllm': False}
    >>> device_settings(cuda=True, vllm_installed=True, vllm_mode="server", vllm_server_base_url="http://gpu1:8000")["vllm_mode"]
    'server'
    """
    if vllm_mode not in VLLM_MODES:
        raise ValueError(f"unknown vllm_mode {vllm_mode!r}; known: {', '.join(VLLM_MODES)}")
    if not cuda:
        return {"use_cpu": True, "bf16": False, "gradient_checkpointing": False, "use_vllm": False}
    settings = {"use_cpu": False, "bf16": True, "gradient_checkpointing": True, "use_vllm": vllm_installed and vllm_mode != "off"}
    if not settings["use_vllm"]:
        return settings
    if vllm_mode == "colocate":
        return {**settings, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": vllm_gpu_memory_utilization}
    if not vllm_server_base_url:
        raise ValueError("vllm_mode='server' needs vllm_server_base_url (where `trl vllm-serve --model <policy>` "
                         "listens, e.g. http://127.0.0.1:8000)")
    return {**settings, "vllm_mode": "server", "vllm_server_base_url": vllm_server_base_url}


def _trainer(online_filter: str, max_extra_generation_batches: int):
    from trl import GRPOTrainer

    if online_filter == "dapo":
        from pipelines.policy.dynamic_sampling import DynamicSamplingGRPOTrainer

        return functools.partial(DynamicSamplingGRPOTrainer, max_extra_generation_batches=max_extra_generation_batches)
    return GRPOTrainer


def peft_config(lora: LoraSettings | None):
    if lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=list(lora.target_modules), task_type="CAUSAL_LM")


def save_trained(trainer, out_dir: Path, lora: LoraSettings | None) -> None:
    """The trained policy as a plain checkpoint; under LoRA, merged, with the adapter kept beside it."""
    if lora is None:
        save_policy(trainer.model, trainer.processing_class, out_dir)
        return

    def write(tmp: Path) -> None:
        trainer.model.save_pretrained(tmp / "lora-adapter")
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(tmp)
        trainer.processing_class.save_pretrained(tmp)

    write_dir_atomically(out_dir, write)


def grpo_dataset(rows: list[dict]) -> Dataset:
    """The rows as the Dataset TRL reads; ValueError naming every problem first.

    TRL 1.16 cannot batch rows with and without an image together (the processor gets a None
    image and raises), so a run is all-image or all-text; an all-text run drops the `image` key.
    """
    problems = []
    if not rows:
        problems.append("no rows")
    missing_prompt = [i for i, row in enumerate(rows) if not row.get("prompt")]
    if missing_prompt:
        problems.append(f"rows without a 'prompt' (first 5 indices: {missing_prompt[:5]})")
    n_with_image = sum(row.get("image") is not None for row in rows)
    if 0 < n_with_image < len(rows):
        problems.append(
            f"{n_with_image} rows have an image and {len(rows) - n_with_image} do not; TRL cannot batch the two "
            "together, so train them in separate runs"
        )
    if problems:
        raise ValueError("train_grpo: " + "; ".join(problems))
    if n_with_image == 0:
        rows = [{k: v for k, v in row.items() if k != "image"} for row in rows]
    return Dataset.from_list(rows)


def _plain_text_reward(reward_func: Callable) -> Callable:
    """TRL passes conversational completions; our rewards take the assistant text."""

    @functools.wraps(reward_func)  # keeps __name__: TRL logs rewards/<name>/mean
    def reward(completions, **kwargs):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return reward_func(completions=texts, **kwargs)

    return reward


def step_metrics(log_history: list[dict]) -> list[dict]:
    """One dict per training step from TRL's log history (the final summary entry dropped)."""
    keep = ("reward", "reward_std", "frac_reward_zero_std", "loss", "grad_norm", "entropy", "learning_rate",
            "completions/mean_length", "completions/clipped_ratio", "step_time")
    steps = []
    for entry in log_history:
        if "reward" not in entry:  # the train-summary entry (train_runtime, ...) has no reward
            continue
        step = {"step": entry.get("step")}
        step.update({k: entry[k] for k in keep if k in entry})
        step.update({k: v for k, v in entry.items() if k.startswith("rewards/") and k.endswith("/mean")})
        step.update({k: v for k, v in entry.items() if k.startswith(("dynamic_sampling/", "completions/"))})
        steps.append(step)
    return steps


def mean_reward_last(steps: list[dict], share: float = 0.25) -> float | None:
    """Mean `reward` over the last `share` of the steps (at least one step).

    >>> mean_reward_last([{"reward": 0.0}, {"reward": 0.5}, {"reward": 1.0}, {"reward": 1.0}])
    1.0
    """
    rewards = [s["reward"] for s in steps if s.get("reward") is not None]
    if not rewards:
        return None
    tail = rewards[-max(1, math.ceil(len(rewards) * share)):]
    return sum(tail) / len(tail)


class _LogEachStep(TrainerCallback):
    def __init__(self, log: Callable[[dict], None]):
        self.log = log

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "reward" in logs:
            self.log({"step": state.global_step, **logs})


class _CheckpointsWithoutPickles(TrainerCallback):
    """Trainer checkpoints hold `training_args.bin` (a pickle); the house stores no pickles, so it
    becomes `training_args.json`. With `save_only_model` there is no optimizer or RNG state to drop."""

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        for pickled in [folder / "training_args.bin", *folder.glob("rng_state*.pth")]:
            pickled.unlink(missing_ok=True)
        if folder.exists():
            (folder / "training_args.json").write_text(json.dumps(json.loads(args.to_json_string()), indent=1))
