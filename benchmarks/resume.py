"""Cold run vs immediate re-run vs resume after a kill at ~50 % of the work: wall time and model calls.

The recipe captions synthetic scenes (two styles each) through the `openai` engine against the
loopback fault server (tests/servers/fault_server.py, its own process) with a fixed latency per call.
Why that and not the scripted teacher or the tiny policy: scripted calls are instant, so there would
be no work to lose; the tiny policy's rollouts cost CPU, and on a shared 2-core machine CPU time swings
with the neighbours' load. A fixed server latency makes the model calls dominate the run, the way a
real GPU server does, and makes the figures repeatable.

Three measurements, each a separate `flow run` process as a user starts it, timed twice: the whole
process (what a user waits for, including starting Python, importing, and Prefect's temporary API
server: a fixed 10-20 s here), and the flow's own work (the summary's `wall_s`).
1. cold: a fresh dataset; every call is paid;
2. re-run: the same command again at once: every shard and call is cached, nothing is committed
   (target: ≤ 5 % of the cold wall time, 0 model calls);
3. resume: a fresh dataset, SIGKILL when half the calls are stored in the call cache, then the same
   command again; the resumed run's wall time and calls (target: ≤ 55 % of the cold run's).

    python benchmarks/resume.py [--scenes 240] [--latency-s 1.0] [--concurrency 2]
"""

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def write_recipe(folder: Path, base_url: str, scenes: int, concurrency: int) -> Path:
    path = folder / "captions.yaml"
    path.write_text(yaml.safe_dump({
        "dataset": "resume-bench",
        "models": {"captioner": {"engine": "openai", "model": "fault-model",
                                 "options": {"base_url": base_url, "max_concurrency": concurrency}}},
        "source": {"synthetic": {"scenes": scenes}},
        "steps": [{"ingest": {}}, {"dedup": {}}, {"caption": {"styles": ["coarse", "fine"]}}],
    }))
    return path


def command(recipe: Path) -> list[str]:
    return [str(Path(sys.executable).parent / "flow"), "run", str(recipe), "--no-progress", "--format", "json"]


def environment(home: Path) -> dict:
    return {**os.environ, "THINKMILL_HOME": str(home), "PREFECT_LOGGING_LEVEL": "WARNING",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}


def timed_run(recipe: Path, home: Path) -> tuple[float, dict]:
    started = time.perf_counter()
    result = subprocess.run(command(recipe), env=environment(home), capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"flow run failed:\n{result.stderr[-3000:]}")
    return elapsed, json.loads(result.stdout[result.stdout.index("{"):])


def stored_calls(home: Path) -> int:
    database = home / "datasets" / "resume-bench" / "calls.sqlite"
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as connection:
            return connection.execute("SELECT count(*) FROM calls WHERE error IS NULL").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not there yet
        return 0


def kill_at(recipe: Path, home: Path, n_calls: int) -> tuple[float, int]:
    """Start a run and SIGKILL it once `n_calls` answers are stored; return (seconds it ran, calls stored)."""
    started = time.perf_counter()
    process = subprocess.Popen(command(recipe), env=environment(home), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, start_new_session=True)
    while stored_calls(home) < n_calls:
        if process.poll() is not None:
            sys.exit(f"the run ended before the kill:\n{process.stderr.read().decode()[-3000:]}")
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return time.perf_counter() - started, stored_calls(home)


def start_server(latency_s: float) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen([sys.executable, "-m", "tests.servers.fault_server", "--latency-s", str(latency_s)],
                              cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = server.stdout.readline()
    if not line.startswith("READY "):
        sys.exit(f"the fault server did not start: {line!r}")
    return server, line.split()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=240, help="scenes; two caption calls each")
    parser.add_argument("--latency-s", type=float, default=1.0, help="the server's answer time per call")
    parser.add_argument("--concurrency", type=int, default=2, help="calls in flight (the engine's max_concurrency)")
    args = parser.parse_args()
    server, url = start_server(args.latency_s)
    try:
        with tempfile.TemporaryDirectory(prefix="thinkmill-bench-resume-") as tmp:
            recipe = write_recipe(Path(tmp), url, args.scenes, args.concurrency)
            cold_s, cold = timed_run(recipe, Path(tmp, "cold"))
            rerun_s, rerun = timed_run(recipe, Path(tmp, "cold"))
            total_calls = cold["model_calls"]["misses"]
            killed_after_s, stored = kill_at(recipe, Path(tmp, "killed"), total_calls // 2)
            resume_s, resumed = timed_run(recipe, Path(tmp, "killed"))
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    assert cold["version"] == 1 and rerun["version"] is None and resumed["version"] == 1
    rerun_calls, resume_calls = rerun["model_calls"]["misses"], resumed["model_calls"]["misses"]
    print(f"{args.scenes} scenes, {total_calls} model calls at {args.latency_s} s each, {args.concurrency} in flight")
    print(f"{'':12} {'process':>9} {'flow work':>10} {'calls':>6}")
    print(f"cold run     {cold_s:8.1f}s {cold['wall_s']:9.1f}s {total_calls:6d}  (version {cold['version']})")
    print(f"re-run       {rerun_s:8.1f}s {rerun['wall_s']:9.1f}s {rerun_calls:6d}  (nothing committed)")
    print(f"killed after {killed_after_s:8.1f}s {'':>10} {'':>6}  {stored} of {total_calls} calls stored ({stored / total_calls:.0%})")
    print(f"resume       {resume_s:8.1f}s {resumed['wall_s']:9.1f}s {resume_calls:6d}  "
          f"({resumed['model_calls']['hits']} replayed from the call cache, the rest of the done shards from Prefect's cache)")
    print(f"resume: re-run {rerun_s / cold_s:.1%} of cold process time ({rerun['wall_s'] / cold['wall_s']:.1%} of the flow's work) "
          f"with {rerun_calls} calls (target <= 5 %, 0); after a kill at {stored / total_calls:.0%} of the calls: "
          f"{resume_s / cold_s:.1%} of cold process time ({resumed['wall_s'] / cold['wall_s']:.1%} of the work), "
          f"{resume_calls / total_calls:.1%} of cold calls (target <= 55 %)")


if __name__ == "__main__":
    main()
