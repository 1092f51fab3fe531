"""The README's loop commands (`--dataset loop`) run on the loop dataset, as the user would type them."""

import shlex

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.test_readme import README, readme_flow_commands  # noqa: F401  (README: the text the commands come from)

pytestmark = pytest.mark.slow


def loop_commands() -> list[str]:
    import re

    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("flow ") and "--dataset loop" in line and not line.startswith("flow run")]


def test_the_readme_shows_loop_commands():
    assert len(loop_commands()) >= 3 and all(c not in readme_flow_commands() for c in loop_commands())


@pytest.mark.parametrize("command", loop_commands())
def test_readme_loop_command_runs(command, looped, monkeypatch, tmp_path):
    monkeypatch.setenv("THINKMILL_HOME", str(looped["home"]))
    monkeypatch.chdir(tmp_path)  # an export writes where the user stands
    result = CliRunner().invoke(app, shlex.split(command)[1:])
    assert result.exit_code == 0, f"{command}\n{result.output}\n{result.exception!r}"
    assert result.output.strip()
