"""Kill a `flow run` mid model calls (SIGKILL), run it again: only the calls not yet answered are paid for."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from stores.call_cache import CallCache
from stores.lake import Lake, dataset_root
from tests.servers import fault_server as faults

pytestmark = pytest.mark.slow
fault_server_module, fault_server = faults.fault_server_module, faults.fault_server
SCENES = 10  # x 2 caption styles = 20 model calls


def flow_command(recipe: Path) -> list[str]:
    return [str(Path(sys.executable).parent / "flow"), "run", str(recipe), "--no-progress", "--format", "json"]


def test_a_killed_run_resumes_paying_only_for_missing_calls(fault_server, tmp_path):
    fault_server.reset(latency_s=0.3)
    recipe = tmp_path / "captions-only.yaml"
    recipe.write_text(yaml.safe_dump({
        "dataset": "resume",
        "models": {"captioner": {"engine": "openai", "model": "fault-model",
                                 "options": {"base_url": fault_server.url, "max_concurrency": 1}}},
        "source": {"synthetic": {"scenes": SCENES}},
        "steps": [{"ingest": {}}, {"dedup": {}}, {"caption": {"styles": ["coarse", "fine"]}}],
    }))
    env = {**os.environ, "THINKMILL_HOME": str(tmp_path / "home"), "PREFECT_LOGGING_LEVEL": "WARNING"}
    chats = lambda: [r for r in fault_server.requests if r.path.endswith("/chat/completions")]  # noqa: E731

    first = subprocess.Popen(flow_command(recipe), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while len(chats()) < 6 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    paid_first = len(chats())
    assert 6 <= paid_first < 2 * SCENES, "the kill must land in the middle of the model calls"
    root = dataset_root(tmp_path / "home", "resume")
    stored = len(CallCache(root / "calls.sqlite"))
    assert stored >= paid_first - 1  # at most the call in flight at the kill is lost
    with Lake.open(root, read_only=True) as lake:  # nothing half-committed is visible
        assert lake.versions() == []

    second = subprocess.run(flow_command(recipe), env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads(second.stdout[second.stdout.index("{"):])
    paid_second = len(chats()) - paid_first
    assert paid_second == 2 * SCENES - stored == summary["model_calls"]["misses"]
    assert summary["version"] == 1 and summary["model_calls"]["hits"] == stored
    with Lake.open(root, read_only=True) as lake:
        assert lake.table("captions").num_rows == 2 * SCENES
