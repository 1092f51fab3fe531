"""Crash safety: SIGKILL a running `flow run` (a real process) during ingest, mid model calls, inside the
commit and just after it; run it again. The final version equals an uninterrupted run's (same ids, same
counts per table), only the calls not yet answered are paid for again, and a reader polling the catalog
from another process all along never sees a half-committed snapshot.

The recipe captions synthetic scenes through the `openai` engine against the loopback fault server,
so model calls are real HTTP calls that the server can slow down to kill in their midst. The other
points are reached with the pause-point instrument (flows/pause_points.py).
"""

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from stores.call_cache import CallCache
from stores.lake import Lake, dataset_root
from tests.lake_checks import contents
from tests.servers import fault_server as faults

pytestmark = pytest.mark.slow
fault_server_module, fault_server = faults.fault_server_module, faults.fault_server
SCENES = 10  # x 2 caption styles = 20 model calls
REPO = Path(__file__).resolve().parents[1]


def write_recipe(folder: Path, base_url: str) -> Path:
    recipe = folder / "captions-only.yaml"
    recipe.write_text(yaml.safe_dump({
        "dataset": "resume",
        "models": {"captioner": {"engine": "openai", "model": "fault-model",
                                 "options": {"base_url": base_url, "max_concurrency": 1}}},
        "source": {"synthetic": {"scenes": SCENES}},
        "steps": [{"ingest": {}}, {"dedup": {}}, {"caption": {"styles": ["coarse", "fine"]}}],
    }))
    return recipe


def flow_command(recipe: Path) -> list[str]:
    return [str(Path(sys.executable).parent / "flow"), "run", str(recipe), "--no-progress", "--format", "json"]


def flow_env(home: Path, **extra: str) -> dict:
    return {**os.environ, "THINKMILL_HOME": str(home), "PREFECT_LOGGING_LEVEL": "WARNING",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180", **extra}


def run_to_the_end(recipe: Path, home: Path) -> dict:
    result = subprocess.run(flow_command(recipe), env=flow_env(home), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout[result.stdout.index("{"):])


def final_contents(home: Path) -> dict:
    with Lake.open(dataset_root(home, "resume"), read_only=True) as lake:
        return contents(lake)


@pytest.fixture(scope="module")
def uninterrupted(fault_server_module, tmp_path_factory) -> dict:
    """What the recipe gives when nothing goes wrong: ids per table, accounting per stage, one version."""
    fault_server_module.reset()
    folder = tmp_path_factory.mktemp("uninterrupted")
    summary = run_to_the_end(write_recipe(folder, fault_server_module.url), folder / "home")
    assert summary["version"] == 1
    expected = final_contents(folder / "home")
    assert len(expected["ids"]["captions"]) == 2 * SCENES and expected["n_versions"] == 1
    return expected


@contextmanager
def reader(root: Path, folder: Path):
    """A separate process polling the dataset's catalog while the runs write it (tests/lake_checks.py)."""
    stop, out = folder / "reader.stop", folder / "reader.json"
    code = "import sys; from tests.lake_checks import watch; watch(*sys.argv[1:])"
    process = subprocess.Popen([sys.executable, "-c", code, str(root), str(stop), str(out)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: dict = {}
    try:
        yield seen
    finally:
        stop.touch()
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr[-3000:]
        seen.update(json.loads(out.read_text()))


def test_a_killed_run_resumes_paying_only_for_missing_calls(fault_server, uninterrupted, tmp_path):
    fault_server.reset(latency_s=0.3)
    recipe = write_recipe(tmp_path, fault_server.url)
    home = tmp_path / "home"
    root = dataset_root(home, "resume")
    chats = lambda: [r for r in fault_server.requests if r.path.endswith("/chat/completions")]  # noqa: E731

    with reader(root, tmp_path) as seen:
        first = subprocess.Popen(flow_command(recipe), env=flow_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 start_new_session=True)
        deadline = time.monotonic() + 300
        while len(chats()) < 6 and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        paid_first = len(chats())
        assert 6 <= paid_first < 2 * SCENES, "the kill must land in the middle of the model calls"
        stored = len(CallCache(root / "calls.sqlite"))
        assert stored >= paid_first - 1  # at most the call in flight at the kill is lost
        with Lake.open(root, read_only=True) as lake:  # nothing half-committed is visible
            assert lake.versions() == []

        summary = run_to_the_end(recipe, home)
    paid_second = len(chats()) - paid_first
    assert paid_second == 2 * SCENES - stored == summary["model_calls"]["misses"]
    assert summary["version"] == 1 and summary["model_calls"]["hits"] == stored
    assert final_contents(home) == uninterrupted
    assert seen["problems"] == [] and seen["polls"] > 0 and seen["seen"] == [1]


@pytest.mark.parametrize("point, committed_before_kill", [
    ("shard:ingest", False),  # ingest has made a shard's rows and not yet staged them
    ("commit", False),        # inside the commit transaction: every table written, COMMIT not yet sent
    ("committed", True),      # the snapshot is in; the run has not reported yet
])
def test_a_run_killed_at_any_point_resumes_to_the_uninterrupted_version(point, committed_before_kill, fault_server,
                                                                        uninterrupted, tmp_path):
    recipe = write_recipe(tmp_path, fault_server.url)
    home, pause = tmp_path / "home", tmp_path / "pause"
    root = dataset_root(home, "resume")
    with reader(root, tmp_path) as seen:
        first = subprocess.Popen(flow_command(recipe), env=flow_env(home, THINKMILL_TEST_PAUSE_AT=point,
                                                                    THINKMILL_TEST_PAUSE_DIR=str(pause)),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        reached = pause / f"{point.replace(':', '-')}.reached"
        deadline = time.monotonic() + 300
        while not reached.exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-3000:]
            time.sleep(0.05)
        time.sleep(0.3)  # let the reader look at the dataset while the run is held there
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        assert int(reached.read_text()) == first.pid  # the run itself paused there (not a worker elsewhere)
        with Lake.open(root, read_only=True) as lake:
            assert [v["version"] for v in lake.versions()] == ([1] if committed_before_kill else [])
        if point == "shard:ingest":
            assert not list((root / "staging" / "ingest").glob("*/shard.json"))  # killed before the shard landed

        summary = run_to_the_end(recipe, home)  # resume: the same command again
    assert summary["version"] == (None if committed_before_kill else 1)
    assert final_contents(home) == uninterrupted
    assert seen["problems"] == [] and seen["polls"] > 0 and seen["seen"] == [1]
