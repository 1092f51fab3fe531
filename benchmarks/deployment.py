"""What a scheduled deployment costs over `flow run`: one recipe run through a Prefect server and a worker.

Baseline: `flow run smoke-real-servers` in a fresh process (Prefect's ephemeral API in-process).
Measured: the same recipe and parameters as a deployment run, `prefect deployment run --watch`, from
the trigger until the worker's flow-run subprocess reports Completed (server and worker already up,
as they are in production). Both start a new Python process and load the same code; each run gets
its own dataset (so its own call cache: every model call is made). Best of `--rounds` each, interleaved.
The server, the work pool and the worker are started here on 127.0.0.1 and stopped at the end.

    python benchmarks/deployment.py [--scenes 4] [--rounds 2]
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEPLOYMENT = "smoke-real-servers-daily"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(command, env=env, cwd=REPO, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def wait_until(check, what: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not ready after {timeout_s} s")
        time.sleep(0.5)


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def timed(command: list[str], env: dict) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - started
    if done.returncode != 0 or ("deployment" in command and "Completed" not in done.stdout):
        raise SystemExit(f"{' '.join(command[:4])} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="thinkmill-bench-deploy-") as tmp:
        base, port = Path(tmp), free_port()
        url = f"http://127.0.0.1:{port}/api"
        server_env = {**os.environ, "PREFECT_HOME": str(base / "server"), "PREFECT_API_URL": url,
                      "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
                      "PREFECT_WORKER_QUERY_SECONDS": "1", "THINKMILL_HOME": str(base / "home")}
        # The baseline uses no server: its own PREFECT_HOME, and no PREFECT_API_URL.
        local_env = {k: v for k, v in server_env.items() if k != "PREFECT_API_URL"} | {"PREFECT_HOME": str(base / "local")}
        server = start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], server_env, base / "server.log")
        worker = None
        try:
            wait_until(lambda: healthy(url), "prefect server")
            subprocess.run([str(BIN / "flow"), "deploy", DEPLOYMENT], env=server_env, cwd=REPO, check=True, capture_output=True)
            worker_log = base / "worker.log"
            worker = start([str(BIN / "prefect"), "worker", "start", "--pool", "thinkmill"], server_env, worker_log)
            wait_until(lambda: "started!" in worker_log.read_text(), "prefect worker")
            overrides = [f"source.synthetic.scenes={args.scenes}"]
            in_process, deployed = [], []
            for round_index in range(args.rounds):
                in_process.append(timed([str(BIN / "flow"), "run", "smoke-real-servers", *sum([["--set", o] for o in overrides], []),
                                         "--dataset", f"local-{round_index}", "--no-progress", "--format", "json"], local_env))
                parameters = json.dumps({"overrides": overrides, "dataset": f"deployed-{round_index}"})
                deployed.append(timed([str(BIN / "prefect"), "deployment", "run", f"thinkmill-recipe/{DEPLOYMENT}",
                                       "--params", parameters, "--watch", "--watch-timeout", "600"], server_env))
                print(f"round {round_index + 1}: flow run {in_process[-1]:.1f} s, deployment run {deployed[-1]:.1f} s", flush=True)
        finally:
            if worker is not None:
                stop(worker)
            stop(server)
        best_local, best_deployed = min(in_process), min(deployed)
        print(f"smoke-real-servers on {args.scenes} scenes, best of {args.rounds}: flow run {best_local:.1f} s, "
              f"deployment run (server + worker) {best_deployed:.1f} s")
        print(f"deployment run vs flow run: {best_deployed / best_local:.2f}×")


if __name__ == "__main__":
    main()
