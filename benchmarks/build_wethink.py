"""Benchmark: wall time of the main job, `flow run build-wethink` at its default size, on this machine.

Three runs in a fresh THINKMILL_HOME, each a separate `flow` process as a user would start it:
(1) cold: builds the tiny policy, then runs every stage; (2) the same recipe again, which must hit
every shard cache and commit nothing (the fixed cost: Prefect start-up, reading, hashing); (3) the
work alone = cold minus the policy build. The figure is the cold wall time as a share of the
10-minute target, and the work's ratio to the cached re-run measured in the same session.

    python benchmarks/build_wethink.py [--scenes N]
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

TARGET_S = 600.0


def flow(*args, env) -> tuple[float, dict]:
    started = time.perf_counter()
    result = subprocess.run([str(Path(sys.executable).parent / "flow"), *args, "--format", "json", "--no-progress"],
                            env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"flow {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return elapsed, json.loads(result.stdout[result.stdout.index("{"):])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", type=int, default=None, help="override source.synthetic.scenes (default: the recipe's)")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-wethink-"))
    env = {**os.environ, "THINKMILL_HOME": str(home), "PREFECT_LOGGING_LEVEL": "WARNING"}
    env.pop("THINKMILL_MODELS", None)
    overrides = ["--set", f"source.synthetic.scenes={args.scenes}"] if args.scenes else []
    try:
        policy_started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "from pathlib import Path; from pipelines.policy.local import ensure_local_model;"
                        f"ensure_local_model('tiny-llava', Path({str(home)!r}))"], env=env, check=True)
        policy_s = time.perf_counter() - policy_started
        work_s, summary = flow("run", "build-wethink", *overrides, env=env)
        cached_s, again = flow("run", "build-wethink", *overrides, env=env)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert again["version"] is None, "the unchanged re-run committed a new version"
    print(f"{'step':<14} {'in':>6} {'kept':>6} {'rejected':>9} {'seconds':>9}")
    for step in summary["steps"]:
        print(f"{step['stage']:<14} {step['n_in']:>6} {step['n_out']:>6} {step['n_rejected']:>9} {step['wall_s']:>9.1f}")
    rows = sum(summary["added"].values())
    cold_s = policy_s + work_s
    print(f"tiny policy build {policy_s:.1f} s; run {work_s:.1f} s ({rows} rows, version {summary['version']}); "
          f"cached re-run {cached_s:.1f} s")
    print(f"build-wethink: cold {cold_s:.0f} s = {cold_s / TARGET_S:.2f} of the 10-minute target; "
          f"run {work_s:.0f} s = {work_s / cached_s:.1f}x the cached re-run ({cached_s:.0f} s)")


if __name__ == "__main__":
    main()
