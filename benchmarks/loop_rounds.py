"""Benchmark: what the closed loop does to the tiny policy, `flow run loop-grpo` at its default size.

One run of the recipe in a fresh THINKMILL_HOME, as a `flow` process a user would start, then
`flow report loop --format json` on the version it made. Printed: the per-round table (train reward,
held-out reward, mean pass rate, questions that became easy or hard) and the wall time of the build
steps and of each round. The figure, last: the held-out reward of the last round's policy as a
ratio of the starting policy's, both measured in this run on the same held-out questions (never
trained on). The tests assert no improvement; this is where one shows, or does not.

    python benchmarks/loop_rounds.py [--rounds N] [--scenes N]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def flow(*args, env) -> tuple[float, dict]:
    started = time.perf_counter()
    result = subprocess.run([str(Path(sys.executable).parent / "flow"), *args, "--format", "json", *(["--no-progress"] if args[0] == "run" else [])],
                            env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"flow {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return elapsed, json.loads(result.stdout[result.stdout.index("{"):])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=None, help="override rounds (default: the recipe's)")
    parser.add_argument("--scenes", type=int, default=None, help="override source.synthetic.scenes (default: the recipe's)")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    env = {**os.environ, "THINKMILL_HOME": str(home), "PREFECT_LOGGING_LEVEL": "WARNING"}
    overrides = [item for key, value in (("rounds", args.rounds), ("source.synthetic.scenes", args.scenes)) if value is not None
                 for item in ("--set", f"{key}={value}")]
    try:
        run_s, summary = flow("run", "loop-grpo", *overrides, env=env)
        _, report = flow("report", "loop", "--dataset", summary["dataset"], env=env)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    build_s = sum(s["wall_s"] for s in summary["steps"] if "round" not in s)
    round_s = {}
    for step in summary["steps"]:
        if "round" in step:
            round_s[step["round"]] = round_s.get(step["round"], 0.0) + step["wall_s"]
    start = report["start"]
    print(f"{'round':>5} {'policy':<40} {'trained':>7} {'train reward':>12} {'held-out':>9} {'pass rate':>9} "
          f"{'easier':>6} {'harder':>6} {'seconds':>8}")
    print(f"{0:>5} {start['policy_id']:<40} {'':>7} {'':>12} {start['held_out_reward']:>9.3f} {start['mean_pass_rate']:>9.3f} "
          f"{'':>6} {'':>6} {build_s:>8.1f}")
    for r in report["rounds"]:
        print(f"{r['round']:>5} {r['policy_id'] or '(none)':<40} {r['n_trained']:>7} {r['train_reward'] or 0:>12.3f} "
              f"{r['held_out_reward'] or 0:>9.3f} {r['mean_pass_rate'] or 0:>9.3f} {r['n_became_easy']:>6} {r['n_became_hard']:>6} "
              f"{round_s.get(r['round'], 0):>8.1f}")
    last = report["rounds"][-1]
    print(f"{report['n_held_out']} held-out questions; whole run {run_s:.0f} s (build steps {build_s:.0f} s, "
          f"rounds {sum(round_s.values()):.0f} s)")
    print(f"loop-grpo: held-out reward after round {last['round']} = {last['held_out_reward']:.3f} = "
          f"{last['held_out_reward'] / start['held_out_reward']:.2f}x the starting policy's ({start['held_out_reward']:.3f}), same run")


if __name__ == "__main__":
    main()
