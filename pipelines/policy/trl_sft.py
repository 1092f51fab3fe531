"""Supervised fine-tuning on TRL's SFTTrainer: the cold start of a vision-language policy before GRPO.

Everything TRL-specific about SFT lives here; the `sft` stage builds the rows from verified chains
of thought and writes the policy row. (`pipelines/policy/sft.py` is the plain torch loop that builds
the tiny local policy itself; this is the trainer a recipe uses.) What TRL 1.16 expects:

- Prompt-completion rows: `prompt` (conversational messages with a `{"type": "image"}`
  placeholder), `completion` (one assistant message) and `images` (a list of PIL images). The
  vision-language collator renders the chat with the processor, expands the image tokens and sets
  the labels of the prompt to -100, so the loss is on the completion only.
- `max_length=None` by default: truncating a multimodal sequence can cut image tokens away from
  their features. Long reasoning chains (Vision-R1's) are kept whole.
- SFTConfig, like GRPOConfig, defaults to bf16 and gradient checkpointing; both are set for the
  device (fp32 and off on CPU).
"""

import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import PrinterCallback

from pipelines.policy.grpo import LoraSettings, peft_config, save_trained


def train_sft(model_dir: Path, rows: list[dict], out_dir: Path, *, max_steps: int = 20, batch_size: int = 8,
              learning_rate: float = 1e-4, max_length: int | None = None, seed: int = 0,
              lora: LoraSettings | None = None) -> dict:
    """Fine-tune the checkpoint in `model_dir` on `rows` (prompt, completion, images); save to `out_dir`.

    Metrics: `steps`, `initial_loss` (first step), `final_loss` (mean of the last quarter of the
    steps), `losses` (per step), `seconds`, `lora`.
    """
    if not rows:
        raise ValueError("train_sft: no rows to train on")
    from trl import SFTConfig, SFTTrainer  # slow import: only when training

    cuda = torch.cuda.is_available()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="thinkmill-sft-") as scratch:
        config = SFTConfig(
            output_dir=scratch, max_steps=max_steps, per_device_train_batch_size=batch_size,
            learning_rate=learning_rate, max_length=max_length, seed=seed, data_seed=seed,
            use_cpu=not cuda, bf16=cuda, gradient_checkpointing=cuda, logging_steps=1, report_to="none",
            save_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
        )
        trainer = SFTTrainer(model=str(model_dir), args=config, train_dataset=Dataset.from_list(rows),
                             peft_config=peft_config(lora))
        trainer.remove_callback(PrinterCallback)
        trainer.train()
        save_trained(trainer, Path(out_dir), lora)
    losses = [round(entry["loss"], 4) for entry in trainer.state.log_history if "loss" in entry]
    tail = losses[-max(1, len(losses) // 4):]
    return {"steps": trainer.state.global_step, "initial_loss": losses[0] if losses else None,
            "final_loss": sum(tail) / len(tail) if tail else None, "losses": losses,
            "seconds": round(time.perf_counter() - started, 2),
            "lora": None if lora is None else {**lora.__dict__, "target_modules": list(lora.target_modules), "saved": "merged"}}
