"""`flow run --runner ray`: the shard tasks run in Ray worker processes (a local Ray instance with two
CPUs, started and stopped by the run) and the dataset comes out exactly as with the thread runner:
same ids and same row hashes in every table, same accounting per stage.
"""

import json
import os
import subprocess
import sys
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


def start(recipe: Path, home: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "THINKMILL_HOME": str(home), "PREFECT_HOME": str(home / "prefect"),
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
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


def test_the_ray_runner_makes_the_same_dataset_as_the_thread_runner(tmp_path):
    recipe = small_recipe(tmp_path)
    on_threads = start(recipe, tmp_path / "threads")
    on_ray = start(recipe, tmp_path / "ray", "--runner", "ray", "--workers", "2")
    threads_summary, ray_summary = finish(on_threads), finish(on_ray)

    assert [w.rsplit(":", 1)[1] for w in threads_summary["workers"]] == [str(on_threads.pid)]  # all in the flow's process
    ray_workers = {w.rsplit(":", 1)[1] for w in ray_summary["workers"]}
    assert len(ray_workers) == 2 and str(on_ray.pid) not in ray_workers  # two Ray worker processes shared the shards
    assert [s["n_shards"] for s in ray_summary["steps"]] == [s["n_shards"] for s in threads_summary["steps"]]
    assert ray_summary["steps"][0]["n_shards"] == 3

    threads_rows, threads_accounting = rows_by_hash(tmp_path / "threads")
    ray_rows, ray_accounting = rows_by_hash(tmp_path / "ray")
    assert threads_rows == ray_rows
    assert threads_accounting == ray_accounting
    assert {table: len(rows) for table, rows in ray_rows.items() if rows}.keys() >= {"assets", "captions", "questions", "cots", "verdicts"}
    assert ray_summary["version"] == threads_summary["version"] == 1


def test_unknown_runners_and_misplaced_addresses_are_refused_before_anything_starts(tmp_path):
    with pytest.raises(RecipeError, match="unknown runner 'dask'; runners are: threads, ray"):
        run("build-wethink", home=tmp_path, runner="dask")
    with pytest.raises(RecipeError, match="needs the Ray runner: add --runner ray"):
        run("build-wethink", home=tmp_path, ray_address="127.0.0.1:6379")
    assert not (tmp_path / "datasets").exists()
