"""The deployments against a real Prefect server on 127.0.0.1: registered, triggered, run by a worker, queryable.

The module starts `prefect server start` on a free port with its own PREFECT_HOME, registers
prefect.yaml with `flow deploy`, starts a real process worker on the `thinkmill` pool, triggers one
deployment with `prefect deployment run` (the real CLI) on a small parameterisation, and reads the
dataset version the run committed with `flow sql` / `flow versions`. Then the same deployment is
served by `flow serve` instead, and triggered again. Everything it started is stopped at the end.
Select it alone with `-m prefect_server`.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from flows.deployments import REPO, load_deployments
from flows.recipes import recipe_names
from tests.servers.processes import free_port, stop
from tests.servers.processes import start as start_process

pytestmark = pytest.mark.prefect_server

BIN = Path(sys.executable).parent
DEPLOYMENT = "smoke-real-servers-daily"  # the quickest recipe: a few scenes, no training
SMALL = {"overrides": ["source.synthetic.scenes=2"]}


def wait_for(check, what: str, process: subprocess.Popen, log: Path, timeout_s: float = 120.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what}: the process exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        result = check()
        if result:
            return result
        time.sleep(0.5)
    pytest.fail(f"{what}: not after {timeout_s} s\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(base / "prefect"), "PREFECT_API_URL": url,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "INFO",
           "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_RUNNER_POLL_FREQUENCY": "1",
           "THINKMILL_HOME": str(base / "home")}
    log = base / "server.log"
    process = start_process([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, log, cwd=REPO)

    def healthy():
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, "prefect server start", process, log)
        yield {"url": url, "env": env, "base": base}
    finally:
        stop(process)


def cli(server, *args: str, timeout_s: float = 240) -> subprocess.CompletedProcess:
    """A command as a user types it, with the server's environment."""
    return subprocess.run(list(args), env=server["env"], cwd=REPO, capture_output=True, text=True, timeout=timeout_s)


def flow_json(server, *args: str):
    result = cli(server, str(BIN / "flow"), *args, "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def trigger(server, dataset: str) -> subprocess.CompletedProcess:
    parameters = json.dumps({**SMALL, "dataset": dataset})
    return cli(server, str(BIN / "prefect"), "deployment", "run", f"thinkmill-recipe/{DEPLOYMENT}", "--params", parameters,
               "--watch", "--watch-timeout", "200")


def test_deployments_registered_triggered_run_by_a_worker_and_queryable(server):
    declared = {d["name"]: d for d in load_deployments()}
    runnable = [name for name, d in declared.items() if d["parameters"]["recipe_name"] in recipe_names()]
    # All of them once every recipe exists; until then, those whose recipe is on this branch.
    registered = flow_json(server, "deploy", *([] if len(runnable) == len(declared) else runnable))
    assert sorted(r["deployment"] for r in registered) == sorted(f"thinkmill-recipe/{name}" for name in runnable)
    for row in registered:
        spec = declared[row["deployment"].split("/", 1)[1]]
        assert row["work_pool"] == "thinkmill"
        assert row["schedules"] == [s["cron"] for s in spec["schedules"]]
        assert row["parameters"] == spec["parameters"]
    pools = cli(server, str(BIN / "prefect"), "work-pool", "inspect", "thinkmill")
    assert pools.returncode == 0 and "type='process'" in pools.stdout

    log = server["base"] / "worker.log"
    worker = start_process([str(BIN / "prefect"), "worker", "start", "--pool", "thinkmill", "--limit", "1"], server["env"], log, cwd=REPO)
    try:
        wait_for(lambda: "started!" in log.read_text(), "prefect worker start", worker, log)
        run = trigger(server, "deployed")
        assert run.returncode == 0 and "Completed" in run.stdout, run.stdout + run.stderr
        assert "submitting flow run" in log.read_text()  # the worker picked it up
    finally:
        stop(worker)

    versions = flow_json(server, "versions", "deployed")
    assert [(v["version"], v["recipe"]) for v in versions] == [(1, "smoke-real-servers")]
    (assets,) = flow_json(server, "sql", "SELECT count(*) AS n FROM assets", "--dataset", "deployed")
    assert assets["n"] == 2  # the run's parameters reached the recipe: 2 scenes, not the recipe's 4
    stages = {row["stage"]: row for row in flow_json(server, "versions", "deployed", "--stages")}
    assert stages["caption"]["calls_made"] == 2 * stages["caption"]["in"] == 4


def test_flow_serve_runs_the_same_deployment_without_a_worker(server):
    # Serving replaces a deployment of the same name, except its work pool: start from none, as a
    # single machine does (otherwise a worker on the pool could take the served deployment's runs too).
    cli(server, str(BIN / "prefect"), "deployment", "delete", f"thinkmill-recipe/{DEPLOYMENT}")
    log = server["base"] / "serve.log"
    served = start_process([str(BIN / "flow"), "serve", DEPLOYMENT], server["env"], log, cwd=REPO)
    try:
        wait_for(lambda: "Your deployments are being served" in log.read_text(), "flow serve", served, log)
        inspect = cli(server, str(BIN / "prefect"), "deployment", "inspect", f"thinkmill-recipe/{DEPLOYMENT}", "--output", "json")
        assert inspect.returncode == 0, inspect.stdout + inspect.stderr
        deployment = json.loads(inspect.stdout)
        assert deployment["work_pool_name"] is None  # registered by the serving process, which runs it itself
        assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["0 6 * * *"]
        run = trigger(server, "served")
        assert run.returncode == 0 and "Completed" in run.stdout, run.stdout + run.stderr
    finally:
        stop(served)
    (assets,) = flow_json(server, "sql", "SELECT count(*) AS n FROM assets", "--dataset", "served")
    assert assets["n"] == 2
