"""The README's commands work: its install commands are what CI runs, its query commands run here."""

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
pytestmark = pytest.mark.slow


def readme_flow_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    # `flow run` builds (the `built` fixture does that); `flow deploy` / `flow serve` need a Prefect server:
    # tests/test_deployment_server.py runs them against a real one.
    needs_more = ("flow run", "flow deploy", "flow serve")
    return [line for line in lines if line.startswith("flow ") and not line.startswith(needs_more)
            and "--dataset loop" not in line  # those run on a loop dataset: tests/loop/test_readme_loop.py
            and "--dataset fidelity" not in line]  # and this on a fidelity dataset: tests/test_fidelity.py


def test_readme_gives_the_two_commands_ci_runs():
    assert "bash .ci/setup && .venv/bin/flow run build-wethink" in README
    assert "bash .ci/run" in README
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "bash .ci/setup" in ci and "pytest" in ci


@pytest.mark.parametrize("command", readme_flow_commands())
def test_readme_query_command_runs(command, built, monkeypatch):
    from stores.lake import Lake

    monkeypatch.setenv("THINKMILL_HOME", str(built["home"]))
    if "<question_id>" in command:
        with Lake.open(built["root"], read_only=True) as lake:
            question_id = lake.sql("SELECT question_id FROM questions LIMIT 1").to_pylist()[0]["question_id"]
        command = command.replace("<question_id>", question_id)
    result = CliRunner().invoke(app, shlex.split(command)[1:])
    assert result.exit_code == 0, f"{command}\n{result.output}\n{result.exception!r}"
    assert result.output.strip()
