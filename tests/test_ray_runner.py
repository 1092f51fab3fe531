"""`flow run --runner ray`: the shard tasks run in Ray worker processes and the dataset comes out
exactly as with the thread runner: same ids and same row hashes in every table, same accounting per
stage. Two clusters: the local Ray instance a run starts for itself (two CPUs), and a Ray head the
test starts apart from the run (`ray start --head`, two CPUs) that the run joins with --ray-address.
Everything listens on 127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: Ray's single-machine mode).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path

import pytest
import yaml

from flows.recipe_flow import run
from schemas import RUN_TABLES, TABLES
from schemas.errors import RecipeError
from stores.lake import Lake, dataset_root
from tests.lake_checks import contents

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def small_recipe(folder: Path) -> Path:
    path = folder / "scale-out.yaml"
    path.write_text(yaml.safe_dump({
        "dataset": "scale-out",
        "models": {"captioner": "scripted", "reasoner": "scripted", "judge": "scripted"},
        "source": {"synthetic": {"scenes": 12, "seed": 5}},
        "shard_size": 4,  # three shards per stage, for two workers to share
        "steps": [{"ingest": {}}, {"dedup": {}}, {"caption": {"styles": ["coarse", "fine"]}},
                  {"synthesize_qa": {"questions_per_image": 2}}, {"distill_cot": {}}, {"verify": {}}],
    }))
    return path


def start(recipe: Path, home: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "THINKMILL_HOME": str(home), "PREFECT_HOME": str(home / "prefect"),
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180", **(env or {})}
    command = [str(Path(sys.executable).parent / "flow"), "run", str(recipe), "--no-progress", "--format", "json", *extra]
    return subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> dict:
    stdout, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr[-3000:]
    return json.loads(stdout[stdout.index("{"):])


def rows_by_hash(home: Path) -> dict[str, list[tuple]]:
    """(id, row_hash) of every row of every content table."""
    with Lake.open(dataset_root(home, "scale-out"), read_only=True) as lake:
        out = {}
        for table in lake.tables():
            if table in TABLES and table not in RUN_TABLES:
                columns = f"{TABLES[table].id_column}, row_hash"
                out[table] = sorted(lake._con.execute(f"SELECT {columns} FROM lake.{table}").fetchall())
        return out, contents(lake)["accounting"]


@pytest.fixture(scope="module")
def on_threads(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("threads")
    process = start(small_recipe(folder), folder / "home")
    summary = finish(process)
    assert [w.rsplit(":", 1)[1] for w in summary["workers"]] == [str(process.pid)]  # all in the flow's process
    rows, accounting = rows_by_hash(folder / "home")
    assert {table for table, r in rows.items() if r} >= {"assets", "captions", "questions", "cots", "verdicts"}
    return {"summary": summary, "rows": rows, "accounting": accounting}


def assert_same_dataset_from_two_workers(process: subprocess.Popen, summary: dict, home: Path, on_threads: dict) -> None:
    ray_workers = {w.rsplit(":", 1)[1] for w in summary["workers"]}
    assert len(ray_workers) == 2 and str(process.pid) not in ray_workers  # two Ray worker processes shared the shards
    assert [s["n_shards"] for s in summary["steps"]] == [s["n_shards"] for s in on_threads["summary"]["steps"]]
    assert summary["steps"][0]["n_shards"] == 3
    rows, accounting = rows_by_hash(home)
    assert rows == on_threads["rows"]
    assert accounting == on_threads["accounting"]
    assert summary["version"] == on_threads["summary"]["version"] == 1


def test_a_local_ray_instance_makes_the_same_dataset_as_the_thread_runner(on_threads, tmp_path):
    process = start(small_recipe(tmp_path), tmp_path / "home", "--runner", "ray", "--workers", "2")
    assert_same_dataset_from_two_workers(process, finish(process), tmp_path / "home", on_threads)


@pytest.fixture
def ray_head(tmp_path):
    """A Ray head with two CPUs on 127.0.0.1, started apart from any run; stopped by its process group."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    temp_dir = Path(tempfile.mkdtemp(prefix="tm-ray-"))  # short: Ray's unix sockets live under it (107 characters at most)
    log = tmp_path / "ray-head.log"
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}",
                             "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}"],
                            env=env, start_new_session=True, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:  # up when its GCS port accepts connections
            assert head.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        yield f"127.0.0.1:{port}", env
    finally:
        with suppress(ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(head.pid, signal.SIGTERM)
            head.wait(timeout=20)
            time.sleep(2)
        with suppress(ProcessLookupError):  # what SIGTERM left of the group (GCS, raylet, agents)
            os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_a_run_joins_a_ray_cluster_started_apart_from_it(on_threads, ray_head, tmp_path):
    address, env = ray_head
    process = start(small_recipe(tmp_path), tmp_path / "home", "--runner", "ray", "--ray-address", address,
                    env={k: env[k] for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE")})
    assert_same_dataset_from_two_workers(process, finish(process), tmp_path / "home", on_threads)


def test_unknown_runners_and_misplaced_addresses_are_refused_before_anything_starts(tmp_path):
    with pytest.raises(RecipeError, match="unknown runner 'dask'; runners are: threads, ray"):
        run("build-wethink", home=tmp_path, runner="dask")
    with pytest.raises(RecipeError, match="needs the Ray runner: add --runner ray"):
        run("build-wethink", home=tmp_path, ray_address="127.0.0.1:6379")
    assert not (tmp_path / "datasets").exists()
