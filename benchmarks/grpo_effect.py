"""Benchmark: does GRPO on a rollout-selected subset beat GRPO on a random subset of the same size?

On the synthetic world, with the tiny local policy on CPU:
(1) world: a pool of training questions and a disjoint held-out set (short answers: mc, num, fib);
(2) rollouts: the base policy samples G answers per pool question, each scored with WeThink's
    hybrid reward (0.7 accuracy + 0.3 format);
(3) subsets: "selected" = the questions whose group rewards differ (DAPO's rule), the most
    learnable first (p(1-p) on accuracy), cut to at most `--subset`; "random" = as many questions drawn
    uniformly from the pool with the run's seed;
(4) train: GRPO (the grpo stage's defaults: lr 1e-4, G 4, 8 completions per step, 48 tokens, beta 0)
    for the same number of steps on each subset, for each seed;
(5) evaluate: the held-out reward (mean over questions and `--eval-samples` samples each, same
    sampling as training) of the base policy and of every trained policy.
The table shows each arm per seed; the last line is the figure: the selected arm's mean gain in
held-out reward over the base, as a ratio of the random arm's (and the plain reward ratio), plus
the wall time per GRPO step. Nothing here is tuned for one arm: both share every setting.

    python benchmarks/grpo_effect.py [--steps 24] [--pool 96] [--held-out 64] [--subset 24] [--seeds 0 1 2]
"""

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pipelines.answers import extract_answer
from pipelines.engines.base import Request, image_part
from pipelines.engines.hf import HFEngine
from pipelines.policy.grpo import train_grpo
from pipelines.policy.local import ensure_local_model
from pipelines.policy.prompt import policy_messages, trl_prompt
from pipelines.rewards import score, trl_reward
from pipelines.verification import check_answer
from pipelines.world import knowledge_of
from pipelines.world.render import render
from pipelines.world.scenes import FAMILIES, make_scene

G_ROLLOUT, MAX_TOKENS, HELD_OUT_SEED = 8, 48, 70_000  # held-out scenes start far from the pool's seeds (0..)


def build_world(n_pool: int, n_held_out: int, folder: Path) -> tuple[list[dict], list[dict]]:
    """Questions with their rendered images on disk: the training pool and the held-out set (disjoint scenes)."""
    def questions(n: int, first_seed: int) -> list[dict]:
        items, index = [], 0
        while len(items) < n:
            scene = make_scene(FAMILIES[index % len(FAMILIES)], first_seed + index)
            path = folder / f"scene-{first_seed + index}.png"
            image = render(scene)
            image.save(path)
            short = [i for i in knowledge_of(scene).qa_items(scene) if i.answer_type in ("mc", "num", "fib")][:2]
            items += [{"question_id": f"{first_seed + index}-{k}", "question": item.question, "answer": item.answer,
                       "answer_type": item.answer_type, "choices": list(item.choices), "image": image, "path": str(path)}
                      for k, item in enumerate(short)]
            index += 1
        return items[:n]

    return questions(n_pool, 0), questions(n_held_out, HELD_OUT_SEED)


def sample_rewards(model_dir: Path, questions: list[dict], n: int, seed: int) -> list[list[tuple[float, bool]]]:
    """Per question, `n` sampled answers of the policy as (hybrid reward, correct)."""
    engine = HFEngine(str(model_dir), batch_size=64)
    requests = [Request(messages=policy_messages(q["question"], q["answer_type"], q["choices"],
                                                 image=image_part(q["path"], q["question_id"])),
                        n=n, temperature=1.0, max_tokens=MAX_TOKENS, seed=seed * 100_003 + i) for i, q in enumerate(questions)]
    groups = []
    for q, response in zip(questions, engine.generate(requests)):
        if response.error:
            raise RuntimeError(f"sampling failed for {q['question_id']}: {response.error}")
        groups.append([(score(text, q["answer"], answer_type=q["answer_type"], choices=q["choices"])["overall"],
                        bool((check := check_answer(extract_answer(text), q["answer"], q["answer_type"], choices=q["choices"]))
                             and check.passed)) for text in response.texts])
    return groups


def select_subsets(pool: list[dict], groups: list[list[tuple[float, bool]]], size: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(selected, random) of equal size: DAPO-kept questions by learnability, and a seeded uniform draw."""
    stats = []
    for q, group in zip(pool, groups):
        rewards = [r for r, _ in group]
        pass_rate = sum(c for _, c in group) / len(group)
        stats.append((q, statistics.pstdev(rewards), pass_rate * (1 - pass_rate)))
    kept = [s for s in stats if s[1] > 0]
    random.Random(1234).shuffle(kept)  # ties in learnability broken at random, the same for every seed
    kept.sort(key=lambda s: -s[2])
    selected = [q for q, _, _ in kept[:size]]
    return selected, random.Random(seed).sample(pool, len(selected))


def train(model_dir: Path, subset: list[dict], out_dir: Path, steps: int, seed: int) -> dict:
    rows = [{"prompt": trl_prompt(q["question"], q["answer_type"], q["choices"]), "image": q["image"], "solution": q["answer"],
             "answer_type": q["answer_type"], "choices": q["choices"], "reward_route": "rule", "question": q["question"],
             "question_id": q["question_id"]} for q in subset]
    return train_grpo(model_dir, rows, [trl_reward("hybrid_wethink")], out_dir, max_steps=steps, num_generations=4,
                      per_device_train_batch_size=8, max_completion_length=MAX_TOKENS, learning_rate=1e-4, beta=0.0, seed=seed)


def held_out_reward(model_dir: Path, held_out: list[dict], n: int, seed: int) -> tuple[float, float]:
    groups = sample_rewards(model_dir, held_out, n, seed)
    flat = [sample for group in groups for sample in group]
    return sum(r for r, _ in flat) / len(flat), sum(c for _, c in flat) / len(flat)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--pool", type=int, default=96)
    parser.add_argument("--held-out", type=int, default=64)
    parser.add_argument("--subset", type=int, default=24)
    parser.add_argument("--eval-samples", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)  # one thread is never slower for this model on a shared 2-core machine
    work = Path(tempfile.mkdtemp(prefix="bench-grpo-"))
    base = ensure_local_model("tiny-llava", work)
    pool, held_out = build_world(args.pool, args.held_out, work)
    started = time.perf_counter()
    groups = sample_rewards(base, pool, G_ROLLOUT, seed=99)
    rollout_s = time.perf_counter() - started
    n_spread = sum(statistics.pstdev([r for r, _ in g]) > 0 for g in groups)
    print(f"pool {len(pool)} questions, held-out {len(held_out)}; base rollouts G={G_ROLLOUT} in {rollout_s:.0f} s; "
          f"{n_spread} groups with a reward spread (DAPO keeps them)")

    results = {"base": [], "random": [], "selected": []}
    step_seconds, step_times = [], []
    for seed in args.seeds:
        results["base"].append((*held_out_reward(base, held_out, args.eval_samples, seed), None))
        selected, random_subset = select_subsets(pool, groups, args.subset, seed)
        for arm, subset in (("random", random_subset), ("selected", selected)):
            metrics = train(base, subset, work / f"{arm}-{seed}", args.steps, seed)
            step_seconds.append(metrics["seconds"] / max(metrics["steps"], 1))
            step_times += [s["step_time"] for s in metrics["log"] if "step_time" in s]
            results[arm].append((*held_out_reward(work / f"{arm}-{seed}", held_out, args.eval_samples, seed), metrics["train_reward"]))
    print(f"subset size {len(selected)}, {args.steps} GRPO steps x 8 completions (G=4), seeds {args.seeds}")
    print(f"{'arm':<10} {'seed':>4} {'held-out reward':>16} {'held-out acc':>13} {'train reward':>13}")
    for arm, rows in results.items():
        for seed, (reward, accuracy, train_reward) in zip(args.seeds, rows):
            shown = "" if train_reward is None else f"{train_reward:.3f}"
            print(f"{arm:<10} {seed:>4} {reward:>16.3f} {accuracy:>13.3f} {shown:>13}")
    mean = {arm: statistics.mean(r for r, _, _ in rows) for arm, rows in results.items()}
    spread = {arm: statistics.pstdev([r for r, _, _ in rows]) for arm, rows in results.items()}
    for arm in results:
        print(f"{arm:<10} mean {mean[arm]:.3f} ± {spread[arm]:.3f} (over seeds)")
    gain = {arm: mean[arm] - mean["base"] for arm in ("random", "selected")}
    gain_ratio = gain["selected"] / gain["random"] if gain["random"] else float("nan")
    print(f"wall time per GRPO step on CPU: {statistics.mean(step_seconds):.2f} s including setup and saving, "
          f"{statistics.mean(step_times):.2f} s in TRL's training step ({torch.get_num_threads()} thread)")
    print(f"grpo_effect: selected/random held-out reward = {mean['selected'] / mean['random']:.3f} "
          f"(selected {mean['selected']:.3f}, random {mean['random']:.3f}, base {mean['base']:.3f}); "
          f"gain over base selected/random = {gain_ratio:.2f} ({gain['selected']:+.3f} vs {gain['random']:+.3f})")


if __name__ == "__main__":
    main()
