"""The local policy: a tiny LLaVA built from a config, its cold-start SFT, and GRPO training on TRL.

- `tiny_llava`: tokenizer + random-init model from `TinyLlavaConfig`, the checkpoint layout
  (`save_policy`, atomic) and `weights_hash`, from which a policy id is derived.
- `sft`: teaches a fresh policy the `<think>…</think><answer>…</answer>` format.
- `grpo`: `train_grpo`, the one place that knows TRL's GRPOTrainer.

The `hf` engine (`pipelines.engines.hf`) serves any of these checkpoints for rollouts.
Submodules are imported explicitly: `grpo` pulls in TRL, which takes seconds to import.
"""
