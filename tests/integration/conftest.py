"""Session-scoped real servers on 127.0.0.1: vLLM (text roles) and `transformers serve` (vision roles).

`launched` builds (or reuses) what they serve, then starts both once per test run without waiting
for either, so their start-ups overlap (vLLM about 25-45 s, `transformers serve` about 5 s);
`vllm_server` and `vision_server` wait for the one a test needs. Both are stopped when the session
ends. Logs go to files under the session's temporary folder; when a test fails, the tail of every
server's log is added to its report, and the timings are printed at the end of the session.

The vLLM venv is made by `.ci/vllm-venv` (CI runs it before pytest; here it is reused, or made on
first use, about 2 min). When it cannot be made on this machine (no PyPI), the vLLM tests are
skipped with that reason, except under CI (`CI` set), where they fail: CI must run them.
"""

import os
from pathlib import Path

import pytest

from tests.integration import servers

SMOLLM2 = servers.SMOLLM2_NAME
VLLM_START_TIMEOUT_S = 600      # measured 25-45 s on 2 cores; a busy machine is several times slower
VISION_START_TIMEOUT_S = 180    # measured 5 s

TIMINGS, timed = servers.TIMINGS, servers.timed  # printed at the end of the session
_STARTED: list[servers.Server] = []


def pytest_configure(config):
    config.addinivalue_line("markers", "real_servers: starts vLLM and `transformers serve` on 127.0.0.1 (about 1 min, "
                                       "plus about 2 min once to make the vLLM venv)")


@pytest.fixture(scope="session")
def server_logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="session")
def launched(server_logs, tmp_path_factory):
    """{"vllm": Server or the reason it cannot run, "vision": Server, "smollm2_dir", "llava_dir"}; stopped at the end."""
    from pipelines.policy.local import ensure_local_model

    found: dict = {}
    try:
        # First, alone: its torch training loop and vLLM's start-up on the same 2 cores slow each other
        # down badly (a 35 s build took 343 s next to a starting vLLM and other work).
        # Usually reused: tests/conftest.py points THINKMILL_MODELS at one folder for the whole session.
        with timed("tiny-llava (build or reuse)"):
            found["llava_dir"] = ensure_local_model("tiny-llava", tmp_path_factory.mktemp("llava-home"))
        try:
            with timed("vLLM venv (make or reuse)"):
                python = servers.vllm_python(server_logs / "vllm-venv.log")
            with timed("SmolLM2 safetensors (convert or reuse)"):
                found["smollm2_dir"] = servers.smollm2_model(python, server_logs / "smollm2-convert.log")
            found["vllm"] = servers.start_vllm(python, found["smollm2_dir"], served_name=SMOLLM2, log=server_logs / "vllm.log")
            _STARTED.append(found["vllm"])
        except servers.Unavailable as reason:
            found["vllm"] = reason
        found["vision"] = servers.start_transformers_serve(found["llava_dir"], log=server_logs / "transformers-serve.log",
                                                          hf_home=tmp_path_factory.mktemp("hf-home"))
        _STARTED.append(found["vision"])
        yield found
    finally:
        for server in _STARTED:
            server.stop()
        _STARTED.clear()


def _ready(server: servers.Server, timeout_s: float, label: str) -> servers.Server:
    try:
        server.wait_ready(timeout_s)
    except RuntimeError as error:
        pytest.fail(str(error), pytrace=False)
    TIMINGS[label] = server.startup_s
    return server


@pytest.fixture(scope="session")
def vllm_server(launched) -> servers.Server:
    """vLLM serving SmolLM2-135M-Instruct as `smollm2-135m-instruct` (text only)."""
    server = launched["vllm"]
    if isinstance(server, servers.Unavailable):
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the vLLM tests, but {server}", pytrace=False)
        pytest.skip(f"vLLM cannot run here: {server}")
    return _ready(server, VLLM_START_TIMEOUT_S, "vLLM start-up, until GET /v1/models answers")


@pytest.fixture(scope="session")
def vision_server(launched) -> servers.Server:
    """`transformers serve` pinned to the tiny LLaVA (its model id is the model's path)."""
    return _ready(launched["vision"], VISION_START_TIMEOUT_S, "transformers serve start-up, until GET /v1/models answers")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for server in _STARTED:
            report.sections.append((f"{server.name} log (tail of {server.log})", servers.tail(server.log, 40)))


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.section("real servers: timings (s)")
        for what, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{seconds:8.1f}  {what}")
