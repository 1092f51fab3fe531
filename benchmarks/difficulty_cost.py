"""Benchmark what difficulty costs on the tiny policy: rollouts with n = G in one request vs G requests, and MCTS.

    python benchmarks/difficulty_cost.py [--items 8] [--group-size 8] [--mcts-items 6] [--max-iterations 8] [--repeats 3]

Items are real synthetic questions (scenes rendered and ingested into a temporary dataset). The
policy is the tiny local LLaVA on the `hf` engine (built once per machine, $THINKMILL_MODELS), one
torch thread; the judge is the scripted teacher. No call cache: every call is made.
1. Rollouts, G samples per item, best of `repeats`, the three ways interleaved:
   a. one request per item with n = G, all items in one generate call (what the `rollouts` stage does);
   b. G requests of n = 1 per item, in one generate call: G model calls per item for a server, while
      the hf engine batches the rows exactly as in (a);
   c. G requests of n = 1 per item, one generate call each (a per-sample loop).
   Model calls (requests) and wall time per item.
2. MCTS per item with the recipe's CPU budget (k = 3, max_steps 4, max_step_tokens 24): policy
   requests, samples, judge calls, repeated states not re-sent, wall time per item; the searches of
   all items advanced in lockstep (one batched call per round, as the `mcts` stage does) vs one
   search at a time.
Prints a table, then, last, one line with the ratios against the baselines of the same run.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from pipelines.engines import EngineRegistry
from pipelines.engines.base import Request
from pipelines.mcts import MCTSConfig, run_searches
from pipelines.policy.prompt import policy_messages
from pipelines.sources.synthetic import synthetic_items
from pipelines.stage import SOURCE_ITEMS, StageContext
from pipelines.stages.ingest import ingest
from pipelines.stages.mcts import problem_of
from pipelines.visuals import Visuals
from pipelines.world import knowledge_of, world_from_json

TINY = {"engine": "hf", "model": "local:tiny-llava"}
JUDGE = {"engine": "scripted", "model": "scripted-teacher", "noise": {"malformed": 0.0, "wrong_answer": 0.0, "invalid_question": 0.0}}


def questions_and_images(root: Path, n: int) -> list[tuple[dict, dict]]:
    """n (question, policy image part) pairs from rendered synthetic scenes, one question per scene."""
    items = pa.Table.from_pylist(synthetic_items(families=["counting", "relations", "arithmetic", "bar_chart"], scenes=n,
                                                 seed=0, size=96), schema=SOURCE_ITEMS)
    ctx = StageContext(run_id="bench", stage="ingest", stage_version=1, config_hash="bench", root=root)
    assets = ingest(items, ctx).out.to_pylist()
    visuals = Visuals.of(assets)
    pairs = []
    for index, asset in enumerate(visuals.items):
        scene = world_from_json(asset["scene"])
        item = [i for i in knowledge_of(scene).qa_items(scene) if i.answer_type in ("num", "mc", "fib")][0]
        question = {"question_id": f"q{index}", "question": item.question, "answer": item.answer,
                    "answer_type": item.answer_type, "choices": list(item.choices), "asset_ids": [asset["asset_id"]]}
        pairs.append((question, visuals.policy_part(asset, root)))
    return pairs[:n]


def rollout_requests(pairs, group_size: int, *, n_per_request: int) -> list[list[Request]]:
    """Per item, the requests of its group: one with n = G, or G with n = 1 (seeds differ per sample)."""
    per_item = []
    for index, (q, image) in enumerate(pairs):
        messages = policy_messages(q["question"], q["answer_type"], q["choices"], image=image)
        count = group_size // n_per_request
        per_item.append([Request(messages=messages, n=n_per_request, temperature=1.0, max_tokens=48, seed=index * 1000 + k,
                                 prompt_version="bench", task="rollout") for k in range(count)])
    return per_item


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--mcts-items", type=int, default=6)
    parser.add_argument("--max-iterations", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        registry = EngineRegistry({"policy": TINY, "judge": JUDGE}, home=root)
        policy, judge = registry.engine("policy"), registry.engine("judge")
        pairs = questions_and_images(root, max(args.items, args.mcts_items))
        G = args.group_size

        # ---- 1. rollouts ---------------------------------------------------------------------------------
        one = rollout_requests(pairs[:args.items], G, n_per_request=G)
        many = rollout_requests(pairs[:args.items], G, n_per_request=1)
        policy.generate([one[0][0]])  # warm-up
        ways = {
            "a. n=G, one request per item, one call": (lambda: policy.generate([r for item in one for r in item]), 1),
            "b. n=1, G requests per item, one call": (lambda: policy.generate([r for item in many for r in item]), G),
            "c. n=1, G requests per item, a call each": (lambda: [policy.generate([r]) for item in many for r in item], G),
        }
        best = {name: float("inf") for name in ways}
        for _ in range(args.repeats):
            for name, (run, _) in ways.items():
                best[name] = min(best[name], timed(run))
        print(f"rollouts: {args.items} items, G = {G}, tiny hf policy, best of {args.repeats}")
        print(f"  {'way':<44} {'calls/item':>10} {'s/item':>8}")
        for name, (_, calls) in ways.items():
            print(f"  {name:<44} {calls:>10} {best[name] / args.items:>8.3f}")

        # ---- 2. MCTS -------------------------------------------------------------------------------------
        config = MCTSConfig(max_steps=4, max_iterations=args.max_iterations, max_step_tokens=24)
        problems = [problem_of(q, image, open_ended=True) for q, image in pairs[:args.mcts_items]]
        lockstep_s, results = float("inf"), None
        sequential_s = float("inf")
        for _ in range(max(1, args.repeats - 1)):
            started = time.perf_counter()
            results = run_searches(problems, policy=policy, judge_engine=judge, config=config)
            lockstep_s = min(lockstep_s, time.perf_counter() - started)
            sequential_s = min(sequential_s, timed(lambda: [run_searches([p], policy=policy, judge_engine=judge, config=config)
                                                            for p in problems]))
        n = len(problems)
        per_item = {key: statistics.mean(r.counts.get(key, 0) for r in results)
                    for key in ("policy_requests", "policy_samples", "judge_requests", "repeated_states")}
        solved = [r.iterations for r in results if r.solved]
        print(f"\nMCTS: {n} items, k = {config.k}, max_steps = {config.max_steps}, max_iterations = {config.max_iterations}, "
              f"max_step_tokens = {config.max_step_tokens}; solved {len(solved)} of {n} (iterations {solved})")
        print(f"  per item: {per_item['policy_requests']:.1f} policy requests ({per_item['policy_samples']:.1f} samples), "
              f"{per_item['judge_requests']:.1f} judge calls, {per_item['repeated_states']:.1f} repeated states not re-sent, "
              f"{statistics.mean(r.iterations_run for r in results):.1f} iterations")
        print(f"  {'searches':<44} {'s/item':>8}")
        print(f"  {'in lockstep, one batched call per round':<44} {lockstep_s / n:>8.3f}")
        print(f"  {'one at a time':<44} {sequential_s / n:>8.3f}")
        rollout_s = best["a. n=G, one request per item, one call"] / args.items

        a, b, c = (best[name] for name in ways)
        print(f"\nratios: rollouts G={G} as 8 requests vs one n={G} request: {G}x the calls, wall x{b / a:.2f} batched, "
              f"x{c / a:.2f} one call each; MCTS per item = {per_item['policy_requests'] + per_item['judge_requests']:.0f} calls "
              f"and x{lockstep_s / n / rollout_s:.1f} the wall of one n={G} rollout group; lockstep vs one at a time x{sequential_s / lockstep_s:.2f}")


if __name__ == "__main__":
    main()
