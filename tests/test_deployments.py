"""prefect.yaml matches the code: every deployment runs an existing recipe with parameters it takes.

Nothing is registered here (tests/test_deployment_server.py does that against a real Prefect server):
these read prefect.yaml and the recipes, the way `flow deploy --check` does, so a renamed recipe, a
parameter the flow lost or a bad cron fails CI before anyone deploys.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.deployments import PREFECT_FILE, check_deployments, load_deployments
from flows.recipes import recipe_names

DEPLOYMENTS = load_deployments()



def recipe_of(deployment: dict) -> str:
    return (deployment.get("parameters") or {}).get("recipe_name")


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: d.get("name"))
def test_every_deployment_names_an_existing_recipe_with_valid_parameters(deployment):
    assert check_deployments([deployment]) == []


def test_every_recipe_has_a_scheduled_deployment_on_a_process_pool():
    deployed = {recipe_of(d) for d in DEPLOYMENTS if d.get("schedules")}
    assert set(recipe_names()) <= deployed, f"recipes without a scheduled deployment: {set(recipe_names()) - deployed}"
    assert {d["work_pool"]["name"] for d in DEPLOYMENTS} == {"thinkmill"}
    nightly = next(d for d in DEPLOYMENTS if d["name"] == "build-wethink-nightly")
    assert any(o.startswith("source.image_folder.path=") for o in nightly["parameters"]["overrides"])  # the watched folder
    assert next(d for d in DEPLOYMENTS if recipe_of(d) == "loop-grpo")["schedules"][0]["cron"].split()[-1] != "*"  # weekly


def test_a_renamed_recipe_and_every_other_mistake_are_reported_at_once():
    broken = [
        {"name": "typo", "entrypoint": "flows/recipe_flow.py:run_recipe", "work_pool": {"name": "thinkmill"},
         "parameters": {"recipe_name": "build-wethnik"}, "schedules": [{"cron": "0 2 * * *"}]},
        {"name": "bad-override", "entrypoint": "flows/recipe_flow.py:run_recipe", "work_pool": {"name": "thinkmill"},
         "parameters": {"recipe_name": "build-wethink", "overrides": ["caption.style=[coarse]"]}},
        {"name": "bad-parameter", "entrypoint": "flows/recipe_flow.py:run_recipe", "work_pool": {"name": "thinkmill"},
         "parameters": {"recipe": "build-wethink", "no_cache": "sometimes"}, "schedules": [{"cron": "0 25 * * *"}]},
        {"name": "no-pool", "entrypoint": "flows/recipe_flow.py:no_such_flow", "parameters": {}},
    ]
    problems = check_deployments(broken)
    text = "\n".join(problems)
    assert "deployment typo: recipe 'build-wethnik' does not exist" in text and "Did you mean 'build-wethink'?" in text
    assert "deployment bad-override: recipe 'build-wethink' with these parameters" in text and "caption.styles" in text
    assert "parameter 'recipe' is not one the flow takes" in text and "Did you mean 'recipe_name'?" in text
    assert "parameter no_cache='sometimes'" in text and "parameter 'recipe_name' is required" in text
    assert "cron='0 25 * * *'" in text
    assert "deployment no-pool: flows/recipe_flow.py has no Prefect flow 'no_such_flow'" in text
    assert "deployment no-pool: no `work_pool" in text
    assert len(problems) == 8


def run_flow_cli(*args, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | env
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=environment,
                          cwd=Path(PREFECT_FILE).parent, timeout=300)


def test_flow_deploy_without_a_server_says_how_to_start_one():
    unset = run_flow_cli("deploy", "smoke-real-servers-daily")
    assert unset.returncode == 1
    assert "PREFECT_API_URL is not set" in unset.stderr and "prefect server start --host 127.0.0.1" in unset.stderr
    closed = run_flow_cli("serve", "smoke-real-servers-daily", PREFECT_API_URL="http://127.0.0.1:9/api")
    assert closed.returncode == 1
    assert "none answers at PREFECT_API_URL=http://127.0.0.1:9/api" in closed.stderr and "export PREFECT_API_URL" in closed.stderr


def test_flow_deploy_check_refuses_an_unknown_deployment_name():
    result = run_flow_cli("deploy", "--check", "build-wethink-nighty")
    assert result.returncode == 1 and "no deployment 'build-wethink-nighty'" in result.stderr
    assert "Did you mean 'build-wethink-nightly'?" in result.stderr
