"""PTST, Vision-R1's progressive thinking suppression training: GRPO in phases of growing length.

A schedule is a list of (max completion length, G) phases whose product is constant (Vision-R1:
4K × 16 → 8K × 8, with 16K × 4 defined): early phases keep reasoning short and sample wide
groups, later ones let it grow while the generation budget per prompt stays the same. Each phase
is one `train_grpo` run starting from the previous phase's weights; the prompts per step stay
fixed, so a phase's batch is `prompts_per_step × G` completions. Two phases: `check_schedule`
(validate, before any training) and `train_phases` (run them in order, metrics per phase).
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipelines.policy.grpo import mean_reward_last, train_grpo


@dataclass(frozen=True)
class Phase:
    max_completion_length: int  # tokens
    num_generations: int        # G


def check_schedule(schedule: list[tuple[int, int]] | list[list[int]]) -> list[Phase]:
    """The schedule as phases; ValueError naming every stage and its product when it is not one.

    >>> check_schedule([(32, 8), (64, 4)])
    [Phase(max_completion_length=32, num_generations=8), Phase(max_completion_length=64, num_generations=4)]
    >>> check_schedule([(32, 8), (64, 2)])
    Traceback (most recent call last):
    ...
    ValueError: PTST stages must keep max_completion_length × G constant: stage 1: 32 × 8 = 256, stage 2: 64 × 2 = 128. Change the lengths or G so every product is equal (Vision-R1: [[4096, 16], [8192, 8]]).
    """
    problems = []
    phases = []
    for index, stage in enumerate(schedule, 1):
        if len(stage) != 2 or not all(isinstance(v, int) and v > 0 for v in stage):
            problems.append(f"stage {index}: expected [max_completion_length, G] as two positive integers, got {list(stage)}")
            continue
        phases.append(Phase(*stage))
    if not schedule:
        problems.append("the schedule is empty; give at least one [max_completion_length, G] stage")
    problems += [f"stage {i}: G = {p.num_generations}; GRPO needs at least 2 completions per prompt"
                 for i, p in enumerate(phases, 1) if p.num_generations < 2]
    if problems:
        raise ValueError("PTST schedule: " + "; ".join(problems))
    products = [p.max_completion_length * p.num_generations for p in phases]
    if len(set(products)) > 1:
        listed = ", ".join(f"stage {i}: {p.max_completion_length} × {p.num_generations} = {product}"
                           for i, (p, product) in enumerate(zip(phases, products), 1))
        raise ValueError(f"PTST stages must keep max_completion_length × G constant: {listed}. Change the lengths or "
                         "G so every product is equal (Vision-R1: [[4096, 16], [8192, 8]]).")
    return phases


def train_phases(model_dir: Path, rows: list[dict], reward_funcs: list[Callable], out_dir: Path, *,
                 phases: list[Phase], prompts_per_step: int, phase_dir: Path, checkpoint_dir: Path | None = None,
                 log: Callable[[dict], None] | None = None, **grpo_settings) -> dict:
    """Run the phases in order, each from the previous one's weights; the last one saves to `out_dir`.

    Intermediate policies go to `phase_dir/phase-<n>/`; checkpoints (with `save_steps`) to
    `checkpoint_dir/phase-<n>/`. `grpo_settings`: every other `train_grpo` keyword (max_steps is per
    phase). Metrics: `steps` (all phases), `train_reward` (the last phase's), `log` (every step, with
    its `phase` and a global `step`), `phases` (one dict per phase: the checkpoint it started from, its
    length, G, batch size, steps, train_reward, log, seconds), `seconds`, `checkpoints`.
    """
    start, results, log_all = Path(model_dir), [], []
    for number, phase in enumerate(phases, 1):
        last = number == len(phases)
        target = Path(out_dir) if last else Path(phase_dir) / f"phase-{number}"
        offset = sum(r["steps"] for r in results)

        def log_phase(entry, number=number, offset=offset):
            if log:
                log({**entry, "phase": number, "step": offset + entry["step"]})

        metrics = train_grpo(start, rows, reward_funcs, target, num_generations=phase.num_generations,
                             max_completion_length=phase.max_completion_length,
                             per_device_train_batch_size=prompts_per_step * phase.num_generations,
                             checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir) / f"phase-{number}",
                             log=log_phase, **grpo_settings)
        results.append({"phase": number, "started_from": str(start), "max_completion_length": phase.max_completion_length,
                        "num_generations": phase.num_generations,
                        "batch_size": prompts_per_step * phase.num_generations, **metrics})
        log_all += [{**step, "phase": number, "step": offset + step["step"]} for step in metrics["log"]]
        start = target
    return {"steps": sum(r["steps"] for r in results), "train_reward": mean_reward_last(results[-1]["log"]),
            "log": log_all, "phases": results, "seconds": round(sum(r["seconds"] for r in results), 2),
            "checkpoints": [c for r in results for c in r["checkpoints"]], "device": results[-1]["device"],
            "lora": results[-1]["lora"]}
