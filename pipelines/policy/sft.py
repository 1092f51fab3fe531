"""Cold-start SFT: teach a fresh policy the answer format before GRPO.

A random model never writes `<think>…</think><answer>…</answer>`, so every GRPO reward would be 0
and every advantage 0: nothing to learn from. A few hundred steps of supervised training on
chat-formatted examples (system?, user: [image, text], assistant: target) fix the format and some
answer priors, so later rollouts get rewards that are non-zero and differ within a group.

A plain torch loop: the loss is cross-entropy on the assistant tokens only (the target and the
end-of-turn token), batches are drawn with a seeded generator, and the checkpoint is written with
`save_policy` (atomic). Same examples, seed and thread count → same weights.
"""

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import PIL.Image
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from pipelines.policy.tiny_llava import save_policy

IGNORE = -100  # label id that cross-entropy skips: prompt and padding positions


@dataclass
class SFTExample:
    image: PIL.Image.Image | None
    prompt: str
    target: str                 # the assistant's whole answer, e.g. "<think>…</think><answer>5</answer>"
    system: str | None = None


@dataclass
class _Encoded:
    input_ids: torch.Tensor     # 1-D: prompt (image tokens expanded) + target + end of turn
    labels: torch.Tensor        # IGNORE on the prompt
    pixel_values: torch.Tensor | None


def sft(model_dir: Path, examples: list[SFTExample], out_dir: Path, *, steps: int = 300, batch_size: int = 8,
        learning_rate: float = 1e-3, seed: int = 0) -> dict:
    """Fine-tune the checkpoint in `model_dir` on `examples`; save to `out_dir`; return metrics.

    `learning_rate` peaks after a 5 % warm-up and decays to 10 % of it (cosine). Metrics:
    initial_loss (first step), final_loss (mean of the last 10 steps), losses (per step), steps,
    seconds, seconds_per_step.
    """
    if not examples:
        raise ValueError("sft needs at least one example")
    torch.manual_seed(seed)
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).train()
    encoded = [encode_example(processor, example) for example in examples]
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(steps))
    pad_id = processor.tokenizer.pad_token_id
    order = random.Random(seed)

    losses, started = [], time.perf_counter()
    for _ in range(steps):
        batch = collate([encoded[i] for i in order.choices(range(len(encoded)), k=batch_size)], pad_id)
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(round(loss.item(), 4))
    seconds = time.perf_counter() - started

    save_policy(model.eval(), processor, Path(out_dir))
    return {
        "initial_loss": losses[0] if losses else None,
        "final_loss": sum(losses[-10:]) / len(losses[-10:]) if losses else None,
        "losses": losses,
        "steps": steps,
        "n_examples": len(examples),
        "seconds": round(seconds, 2),
        "seconds_per_step": round(seconds / max(steps, 1), 4),
    }


def chat_messages(example: SFTExample) -> list[dict]:
    """The prompt part of an example, in the conversational form TRL and the hf engine also use."""
    content = ([{"type": "image"}] if example.image is not None else []) + [{"type": "text", "text": example.prompt}]
    system = [{"role": "system", "content": example.system}] if example.system else []
    return [*system, {"role": "user", "content": content}]


def encode_example(processor, example: SFTExample) -> _Encoded:
    """Prompt through the chat template, then the target tokenized on its own.

    Tokenizing the target separately gives exactly the ids the model must produce when it
    generates after the prompt (a joint tokenization could merge across the boundary).
    """
    prompt = processor.apply_chat_template(chat_messages(example), add_generation_prompt=True, tokenize=False)
    images = [example.image.convert("RGB")] if example.image is not None else None
    prompt_inputs = processor(text=prompt, images=images, return_tensors="pt")
    tokenizer = processor.tokenizer
    target_ids = tokenizer(example.target + tokenizer.eos_token, add_special_tokens=False, return_tensors="pt")
    prompt_ids, target_ids = prompt_inputs["input_ids"][0], target_ids["input_ids"][0]
    return _Encoded(
        input_ids=torch.cat([prompt_ids, target_ids]),
        labels=torch.cat([torch.full_like(prompt_ids, IGNORE), target_ids]),
        pixel_values=prompt_inputs.get("pixel_values"),
    )


def collate(batch: list[_Encoded], pad_id: int) -> dict:
    """Right-padded tensors for a forward pass with loss (labels are shifted inside the model)."""
    width = max(len(e.input_ids) for e in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        input_ids[i, :len(e.input_ids)] = e.input_ids
        labels[i, :len(e.labels)] = e.labels
        attention_mask[i, :len(e.input_ids)] = 1
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    pixels = [e.pixel_values for e in batch if e.pixel_values is not None]
    if pixels:
        inputs["pixel_values"] = torch.cat(pixels)
    return inputs


def _warmup_cosine(steps: int):
    warmup = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
