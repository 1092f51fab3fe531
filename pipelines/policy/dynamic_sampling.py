"""DAPO's dynamic sampling inside TRL's GRPO: train only on groups whose rewards differ.

A group whose G completions all got the same reward has zero advantage everywhere: it costs a
forward and backward pass and teaches nothing. DAPO drops such groups after scoring and generates
more until the batch is full again (ALGORITHMS §7, `dapo`). Here the extra prompts are drawn at
random (seeded) from the training set, so a training order built by a mixture keeps its
proportions in expectation. The search is bounded: after `max_extra_generation_batches` extra
generation batches the step trains on the informative groups it has (or, if none, on the first
batch as it was: all-zero advantages, no policy gradient), and logs that the bound was hit.

TRL 1.16 has no hook for this, so `DynamicSamplingGRPOTrainer` overrides the one method that
generates and scores a batch, `_generate_and_score_completions`, and calls TRL's own for every
generation batch. The row surgery on TRL's batch dict (keep some groups, concatenate batches whose
prompts and completions were padded to different widths) is in free functions below.
Single process only: with several processes the kept batches would differ in size across ranks.
With gradient accumulation the generation batch spans all micro-batches of a step, and so does
the filter; a batch left short by the bound is split into shorter micro-batches.

Logged per step (averaged over the generation batches of the step, as TRL logs everything):
`dynamic_sampling/generation_batches`, `dynamic_sampling/kept_groups`, `dynamic_sampling/bound_hit`.
"""

import logging

import torch
from trl import GRPOTrainer
from trl.trainer.utils import split_pixel_values_by_grid, unsplit_pixel_values_by_grid

logger = logging.getLogger(__name__)

# How each per-row tensor of TRL's batch is padded when batches of different widths are joined.
LEFT_PADDED = {"prompt_ids": "pad", "prompt_mask": 0}
RIGHT_PADDED = {"completion_ids": "pad", "completion_mask": 0, "old_per_token_logps": 0.0, "ref_per_token_logps": 0.0,
                "sampling_per_token_logps": 0.0, "importance_sampling_ratio": 1.0, "tool_mask": 1}
PROMPT_THEN_COMPLETION = {"token_type_ids": 0, "mm_token_type_ids": 0}  # [rows, prompt + completion]


def informative_groups(advantages: torch.Tensor, group_size: int) -> list[bool]:
    """Per group of `group_size` consecutive rows: does any completion have a non-zero advantage?

    A group's advantages are all zero exactly when its rewards have zero spread (GRPO subtracts the
    group mean), so this is DAPO's "reward std > 0" read off what TRL already computed.

    >>> informative_groups(torch.tensor([0.0, 0.0, 0.7, -0.7, 0.0, 0.0]), 2)
    [False, True, False]
    """
    return (advantages.view(-1, group_size) != 0).any(dim=1).tolist()


def take_rows(batch: dict, rows: list[int]) -> dict:
    """The batch restricted to `rows` (a split batch: per-row tensors and per-row lists)."""
    index = torch.tensor(rows, dtype=torch.long)
    taken = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.ndim > 0:
            taken[key] = value[index]
        elif isinstance(value, list):
            taken[key] = [value[i] for i in rows]
        else:
            taken[key] = value
    return taken


def concat_batches(batches: list[dict], pad_token_id: int) -> dict:
    """One split batch from several: rows appended, prompts left-padded and completions right-padded
    to the widest, and `num_items_in_batch` recounted (the loss normalises by it)."""
    joined = {}
    for key, first in batches[0].items():
        values = [batch[key] for batch in batches]
        if key in LEFT_PADDED or key in RIGHT_PADDED:
            pad_value = pad_token_id if (LEFT_PADDED | RIGHT_PADDED)[key] == "pad" else (LEFT_PADDED | RIGHT_PADDED)[key]
            joined[key] = _pad_and_cat(values, pad_value, left=key in LEFT_PADDED)
        elif key in PROMPT_THEN_COMPLETION:
            widths = [batch["prompt_ids"].size(1) for batch in batches]
            prompts = _pad_and_cat([v[:, :w] for v, w in zip(values, widths)], PROMPT_THEN_COMPLETION[key], left=True)
            completions = _pad_and_cat([v[:, w:] for v, w in zip(values, widths)], PROMPT_THEN_COMPLETION[key], left=False)
            joined[key] = torch.cat([prompts, completions], dim=1)
        elif isinstance(first, torch.Tensor) and first.ndim > 0:
            joined[key] = torch.cat(values)
        elif isinstance(first, list):
            joined[key] = [item for value in values for item in value]
        else:
            joined[key] = first
    mask = joined["completion_mask"] if "tool_mask" not in joined else joined["completion_mask"] * joined["tool_mask"]
    joined["num_items_in_batch"] = mask.sum()
    return joined


def _pad_and_cat(tensors: list[torch.Tensor], value, *, left: bool) -> torch.Tensor:
    width = max(t.size(1) for t in tensors)
    padded = []
    for t in tensors:
        missing = width - t.size(1)
        padding = (missing, 0) if left else (0, missing)
        padded.append(torch.nn.functional.pad(t, padding, value=value) if missing else t)
    return torch.cat(padded)


class DynamicSamplingGRPOTrainer(GRPOTrainer):
    """GRPOTrainer that keeps only groups with a reward spread, generating more (bounded) to fill a batch."""

    def __init__(self, *args, max_extra_generation_batches: int = 4, **kwargs):
        if max_extra_generation_batches < 0:
            raise ValueError(f"max_extra_generation_batches must be >= 0, got {max_extra_generation_batches}")
        super().__init__(*args, **kwargs)
        if self.accelerator.num_processes > 1:
            raise ValueError("dynamic sampling (online_filter='dapo') runs in a single process; "
                             f"this run has {self.accelerator.num_processes}. Use online_filter='none' with several GPUs.")
        self.max_extra_generation_batches = max_extra_generation_batches
        self._extra_prompts = torch.Generator().manual_seed(self.args.seed)  # where extra prompts are drawn from

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        group_size = self.num_generations
        wanted = len(inputs) // group_size
        first = split_pixel_values_by_grid(super()._generate_and_score_completions(inputs))
        kept, n_kept, generation_batches = [], 0, 1
        batch = first
        while True:
            informative = informative_groups(batch["advantages"], group_size)
            rows = [g * group_size + k for g, keep in enumerate(informative) if keep for k in range(group_size)]
            take = rows[:(wanted - n_kept) * group_size]
            if take:
                kept.append(take_rows(batch, take))
                n_kept += len(take) // group_size
            if n_kept >= wanted or generation_batches > self.max_extra_generation_batches:
                break
            batch = split_pixel_values_by_grid(super()._generate_and_score_completions(self._draw_prompts(wanted)))
            generation_batches += 1
        bound_hit = n_kept < wanted
        if bound_hit:
            logger.warning("dynamic sampling: %d of %d groups had a reward spread after %d generation batches "
                           "(bound: %d extra); training on what there is", n_kept, wanted, generation_batches,
                           self.max_extra_generation_batches)
        metrics = self._metrics["train"]
        metrics["dynamic_sampling/generation_batches"].append(float(generation_batches))
        metrics["dynamic_sampling/kept_groups"].append(float(n_kept))
        metrics["dynamic_sampling/bound_hit"].append(float(bound_hit))
        chosen = concat_batches(kept, self._tokenizer.pad_token_id) if kept else first
        return unsplit_pixel_values_by_grid(chosen)

    def _draw_prompts(self, n_prompts: int) -> list[dict]:
        """`n_prompts` random training rows, each repeated G times (the layout TRL's sampler gives)."""
        indices = torch.randint(len(self.train_dataset), (n_prompts,), generator=self._extra_prompts).tolist()
        return [self.train_dataset[i] for i in indices for _ in range(self.num_generations)]
