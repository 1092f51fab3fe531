"""Many writers on one dataset through a PostgreSQL catalog (a real server, started on 127.0.0.1).

Each run lands as one whole snapshot, as if the runs had committed one after the other: a commit that
another writer overtook is redone on top of it (never merged), so no id is ever inserted twice.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from threading import Thread

import pyarrow as pa
import pytest
import yaml

from schemas import TABLES
from schemas.errors import CatalogError, UnknownDataset
from stores.lake import Lake, dataset_root
from tests.lake_checks import contents, whole_version_problems
from tests.servers.postgres import postgres  # noqa: F401 (a fixture)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def database(postgres, request):  # noqa: F811
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    postgres.create_database(name)
    return postgres.catalog_spec(name)


def captions(run_id: str, ids: list[str]) -> dict[str, pa.Table]:
    rows = [{"caption_id": i, "asset_id": "asset-1", "style": "fine", "text": i, "run_id": run_id, "stage": "caption",
             "stage_version": 1, "config_hash": "c0", "row_hash": f"h-{i}"} for i in ids]
    return {"captions": pa.Table.from_pylist(rows, schema=TABLES["captions"].schema)}


def accounting(run_id: str, n: int) -> pa.Table:
    row = {"stage_stats_id": f"sc-{run_id}", "run_id": run_id, "step_index": 0, "stage": "caption", "stage_version": 1,
           "unit": "asset", "n_in": n, "n_out": n, "n_rejected": 0, "rejected_by_reason": "{}", "n_shards": 1,
           "n_shards_cached": 0, "n_calls_made": 0, "n_calls_cached": 0, "prompt_tokens": 0, "completion_tokens": 0,
           "wall_s": 0.0}
    return pa.Table.from_pylist([row], schema=TABLES["stage_stats"].schema)


def commit(lake: Lake, run_id: str, ids: list[str], **options):
    return lake.commit(captions(run_id, ids), run_id=run_id, recipe="test", config_hash="c0", config={},
                       stage_stats=accounting(run_id, len(ids)), **options)


def caption_ids(lake: Lake) -> list[str]:
    return [r[0] for r in lake._con.execute("SELECT caption_id FROM lake.captions ORDER BY 1").fetchall()]


def test_a_commit_overtaken_by_another_writer_is_redone_on_top_of_it(database, tmp_path):
    root = tmp_path / "datasets" / "shared"
    first, second = Lake.open(root, create=True, catalog=database), Lake.open(root, catalog=database)

    def second_writer_commits_first():  # inside the first writer's open transaction, before its COMMIT
        if not second.versions():
            assert commit(second, "run-b", ["c2", "c3"]).version == 1

    result = commit(first, "run-a", ["c1", "c2"], before_commit=second_writer_commits_first)
    assert (result.version, result.attempts) == (2, 2)
    assert result.added == {"captions": 1}  # c2 was there by then: re-read, not inserted again
    with Lake.open(root, read_only=True) as reader:
        assert caption_ids(reader) == ["c1", "c2", "c3"]
        assert [(v["version"], v["run_id"]) for v in reader.versions()] == [(1, "run-b"), (2, "run-a")]
        assert [r["caption_id"] for r in reader.table("captions", version=1).to_pylist()] == ["c2", "c3"]
        assert whole_version_problems(reader) == []
    first.close()
    second.close()


def test_writers_committing_at_once_lose_and_duplicate_nothing(database, tmp_path):
    root = tmp_path / "datasets" / "busy"
    Lake.open(root, create=True, catalog=database).close()
    landed: dict[str, list] = {}

    def writer(name: str, offset: int) -> None:
        with Lake.open(root) as lake:  # the catalog comes from the dataset's catalog.json
            # Each commit shares half its ids with the other writer's commit of the same round.
            landed[name] = [commit(lake, f"{name}{k}", [f"c{offset + 10 * k + j:04d}" for j in range(10)]).attempts
                            for k in range(4)]

    threads = [Thread(target=writer, args=(name, offset)) for name, offset in (("a", 0), ("b", 5))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert sorted(landed) == ["a", "b"]
    expected = sorted({f"c{offset + 10 * k + j:04d}" for offset in (0, 5) for k in range(4) for j in range(10)})
    with Lake.open(root, read_only=True) as reader:
        assert caption_ids(reader) == expected  # 45 ids, each once
        assert whole_version_problems(reader) == []
        assert sum(json.loads(v["counts"])["captions"]["added"] for v in reader.versions()) == len(expected)


def test_a_dataset_keeps_its_catalog_and_says_so(database, tmp_path):
    root = tmp_path / "datasets" / "kept"
    with Lake.open(root, create=True, catalog=database) as lake:
        commit(lake, "run-1", ["c1"])
    record = json.loads((root / "catalog.json").read_text())
    assert record["kind"] == "postgres" and record["metadata_schema"] == "thinkmill_kept"
    assert not (root / "catalog.sqlite").exists()
    with Lake.open(root, read_only=True) as reader:  # found without being told
        assert caption_ids(reader) == ["c1"]
    with pytest.raises(CatalogError, match="keeps the catalog it was created with"):
        Lake.open(root, catalog="sqlite")
    with pytest.raises(CatalogError, match="keeps its Parquet files in"):
        Lake.open(root, data_path=str(tmp_path / "elsewhere"))
    with pytest.raises(CatalogError, match="PGPASSWORD"):
        Lake.open(tmp_path / "datasets" / "secret", create=True, catalog=database + " password=hunter2")
    with pytest.raises(CatalogError, match="unknown catalog 'mysql:db=x'.*postgres:<libpq"):
        Lake.open(tmp_path / "datasets" / "other", create=True, catalog="mysql:db=x")
    with pytest.raises(UnknownDataset):
        Lake.open(tmp_path / "datasets" / "other", read_only=True)


# ---- two `flow run` processes on one dataset -------------------------------------------------------

def recipe(tmp_path: Path, name: str, scenes: int, seed: int) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "dataset": "many-writers",
        "models": {"captioner": "scripted", "reasoner": "scripted", "judge": "scripted"},
        "source": {"synthetic": {"scenes": scenes, "seed": seed}},
        "shard_size": 4,
        "steps": [{"ingest": {}}, {"dedup": {}}, {"caption": {"styles": ["coarse", "fine"]}},
                  {"synthesize_qa": {"questions_per_image": 2}}, {"distill_cot": {}}, {"verify": {}}],
    }))
    return path


def start_flow(recipe_path: Path, home: Path, prefect_home: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    (prefect_home / "results").mkdir(parents=True, exist_ok=True)
    # Own Prefect homes: several ephemeral Prefect servers on one SQLite database would wait on each other.
    environment = {**os.environ, "THINKMILL_HOME": str(home), "PREFECT_HOME": str(prefect_home),
                   "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(prefect_home / "results"),
                   "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180", **(env or {})}
    command = [str(Path(sys.executable).parent / "flow"), "run", str(recipe_path), "--no-progress", "--format", "json", *extra]
    return subprocess.Popen(command, env=environment, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> dict:
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    return json.loads(stdout[stdout.index("{"):])


def test_two_flows_writing_one_dataset_at_once_commit_two_whole_versions(postgres, tmp_path):  # noqa: F811
    postgres.create_database("many_writers")
    spec = postgres.catalog_spec("many_writers")
    # Scene i has seed `seed + i // 4` (four families): the small run's last 4 scenes are the large run's first 4.
    small, large = recipe(tmp_path, "small", 8, seed=3), recipe(tmp_path, "large", 12, seed=4)
    pause = tmp_path / "pause"
    shared = tmp_path / "shared-home"
    # What each run produces alone (SQLite catalogs, own homes), while the two writers share one dataset:
    # `small` holds its commit transaction open until `large` has committed, then commits on top of it.
    alone = {name: start_flow(path, tmp_path / f"alone-{name}", tmp_path / f"prefect-alone-{name}")
             for name, path in (("small", small), ("large", large))}
    writer_small = start_flow(small, shared, tmp_path / "prefect-small", "--catalog", spec,
                              env={"THINKMILL_TEST_PAUSE_AT": "commit", "THINKMILL_TEST_PAUSE_DIR": str(pause)})
    deadline = time.monotonic() + 300
    while not (pause / "commit.reached").exists():
        assert writer_small.poll() is None and time.monotonic() < deadline, writer_small.communicate()[1][-3000:]
        time.sleep(0.1)
    writer_large = start_flow(large, shared, tmp_path / "prefect-large", "--catalog", spec)
    summary_large = finish(writer_large)
    (pause / "commit.go").touch()
    summary_small = finish(writer_small)

    assert (summary_large["version"], summary_large["commit_attempts"]) == (1, 1)
    assert (summary_small["version"], summary_small["commit_attempts"]) == (2, 2)  # overtaken once, redone
    alone_contents = {}
    for name, process in alone.items():
        finish(process)
        with Lake.open(dataset_root(tmp_path / f"alone-{name}", "many-writers"), read_only=True) as lake:
            alone_contents[name] = contents(lake)
    with Lake.open(dataset_root(shared, "many-writers"), read_only=True) as lake:
        assert lake.catalog.kind == "postgres"
        assert whole_version_problems(lake) == []  # both snapshots whole: versions row, accounting, row counts
        together = contents(lake)
        versions = lake.versions()
        at_large = {t: sorted(r[TABLES[t].id_column] for r in lake.table(t, version=1).to_pylist())
                    for t in alone_contents["large"]["ids"]}
    assert [v["run_id"] for v in versions] == [summary_large["run_id"], summary_small["run_id"]]
    assert at_large == alone_contents["large"]["ids"]  # version 1 is exactly the large run
    for table, ids in together["ids"].items():  # version 2: the union, each id once
        assert ids == sorted(set(alone_contents["small"]["ids"][table]) | set(alone_contents["large"]["ids"][table])), table
    assert together["accounting"] == alone_contents["small"]["accounting"]  # the latest run's stages, as alone
    overlap = set(alone_contents["small"]["ids"]["assets"]) & set(alone_contents["large"]["ids"]["assets"])
    assert len(overlap) == 4  # the same 4 scenes reached both writers; each asset still appears once
