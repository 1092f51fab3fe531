"""The recipes as scheduled Prefect deployments: check prefect.yaml, register it, or serve it.

prefect.yaml declares one deployment per recipe: the `run_recipe` flow with its parameters
(`recipe_name`, `overrides`, ...), cron schedules and a process work pool. Three verbs:

- `check_deployments`: every deployment names an existing recipe, parameters the flow takes (of the
  right types, and `overrides` the recipe accepts), valid cron schedules and a work pool. All problems
  come back at once; `flow deploy` and `flow serve` refuse to go on with any.
- `deploy`: creates the process work pools that do not exist yet, then runs Prefect's own
  `prefect deploy` on prefect.yaml from the repo root. A worker (`prefect worker start --pool <pool>`)
  then runs each scheduled or triggered run in a subprocess.
- `serve`: the same deployments served by this process (`prefect.serve`), schedules included: one
  machine, no worker. A served process keeps the code it started with: restart it after changes.

Both need a Prefect server (PREFECT_API_URL): schedules and `prefect deployment run` live there.
"""

import importlib
import inspect
import os
import subprocess
import sys
from pathlib import Path

import yaml
from pydantic import TypeAdapter, ValidationError

from flows.recipes import load_recipe, recipe_names
from schemas.errors import NoPrefectServer, RecipeError, did_you_mean

REPO = Path(__file__).resolve().parent.parent
PREFECT_FILE = REPO / "prefect.yaml"
WORK_POOL_TYPE = "process"


def load_deployments(path: Path = PREFECT_FILE) -> list[dict]:
    """The `deployments:` of a prefect.yaml, YAML anchors resolved."""
    try:
        config = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise RecipeError(str(path), [f"cannot read the deployments: {error}"]) from None
    return list(config.get("deployments") or [])


def check_deployments(deployments: list[dict]) -> list[str]:
    """Every problem of every deployment, as sentences naming the deployment; empty when all is well."""
    problems: list[str] = []
    names = [d.get("name") for d in deployments]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"deployment name {name!r} is used {names.count(name)} times; names must be unique")
    for deployment in deployments:
        where = f"deployment {deployment.get('name') or '(no name)'}"
        if not deployment.get("name"):
            problems.append(f"{where}: no `name:`")
        flow_fn = _entrypoint_flow(deployment.get("entrypoint"), where, problems)
        if flow_fn is not None:
            problems += [f"{where}: {p}" for p in check_parameters(flow_fn, deployment.get("parameters") or {})]
        problems += [f"{where}: {p}" for p in _check_schedules(deployment.get("schedules") or [])]
        if not (deployment.get("work_pool") or {}).get("name"):
            problems.append(f"{where}: no `work_pool: {{name: ...}}`; a worker picks up runs by pool")
    return problems


def check_parameters(flow_fn, parameters: dict) -> list[str]:
    """Problems with one deployment's parameters: unknown or mistyped, or a recipe that does not exist or refuses them."""
    signature = inspect.signature(flow_fn)
    problems = []
    for name, value in parameters.items():
        if name not in signature.parameters:
            problems.append(f"parameter {name!r} is not one the flow takes ({', '.join(signature.parameters)})."
                            f"{did_you_mean(name, signature.parameters)}")
            continue
        annotation = signature.parameters[name].annotation
        try:
            TypeAdapter(annotation).validate_python(value)
        except ValidationError as error:
            problems.append(f"parameter {name}={value!r}: {error.errors()[0]['msg']}")
    missing = [n for n, p in signature.parameters.items() if p.default is inspect.Parameter.empty and n not in parameters]
    problems += [f"parameter {name!r} is required" for name in missing]
    recipe = parameters.get("recipe_name")
    if "recipe_name" in signature.parameters and isinstance(recipe, str):
        if recipe not in recipe_names():
            problems.append(f"recipe {recipe!r} does not exist in configs/recipes/. Recipes: {', '.join(recipe_names())}."
                            f"{did_you_mean(recipe, recipe_names())}")
        elif not problems:
            try:
                load_recipe(recipe, parameters.get("overrides") or [], dataset=parameters.get("dataset"))
            except RecipeError as error:
                problems += [f"recipe {recipe!r} with these parameters: {p}" for p in error.problems]
    return problems


def deployment_names(deployments: list[dict] | None = None) -> list[str]:
    return [d["name"] for d in (load_deployments() if deployments is None else deployments)]


def select(names: list[str] | None, deployments: list[dict] | None = None) -> list[dict]:
    """The deployments named (all when none are), checked; RecipeError lists every problem."""
    deployments = load_deployments() if deployments is None else deployments
    known = [d.get("name") for d in deployments]
    unknown = [n for n in names or [] if n not in known]
    if unknown:
        raise RecipeError(str(PREFECT_FILE), [f"no deployment {n!r}. Deployments: {', '.join(known)}.{did_you_mean(n, known)}"
                                              for n in unknown])
    chosen = [d for d in deployments if not names or d.get("name") in names]
    problems = check_deployments(chosen)
    if problems:
        raise RecipeError(str(PREFECT_FILE), problems)
    return chosen


def require_server(command: str) -> str:
    """The API URL of a reachable Prefect server, or NoPrefectServer saying how to start one."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise NoPrefectServer("PREFECT_API_URL is not set (and no Prefect profile sets it)", command)
    import httpx

    try:
        response = httpx.get(url.rstrip("/") + "/health", timeout=10)
        response.raise_for_status()
    except httpx.HTTPError as error:
        raise NoPrefectServer(f"none answers at PREFECT_API_URL={url} ({type(error).__name__}: {error})", command) from None
    return url


def ensure_work_pools(deployments: list[dict]) -> dict[str, str]:
    """Create each work pool the deployments name that does not exist, as a process pool. Returns pool -> type."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    pools = {}
    with get_client(sync_client=True) as client:
        for name in sorted({d["work_pool"]["name"] for d in deployments}):
            try:
                pools[name] = client.read_work_pool(name).type
            except ObjectNotFound:
                client.create_work_pool(WorkPoolCreate(name=name, type=WORK_POOL_TYPE))
                pools[name] = WORK_POOL_TYPE
    return pools


def deploy(names: list[str] | None = None) -> list[dict]:
    """Register the deployments (all, or those named) with the Prefect server; return what the server now has."""
    chosen = select(names)
    require_server("deploy")
    ensure_work_pools(chosen)
    selection = ["--all"] if not names else [arg for d in chosen for arg in ("--name", d["name"])]
    command = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--prefect-file", str(PREFECT_FILE), *selection]
    # From the repo root: Prefect records it as each deployment's working directory (see prefect.yaml).
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PREFECT_CLI_PROMPT": "false"})
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
        raise RecipeError(str(PREFECT_FILE), [f"`prefect deploy` failed (exit {done.returncode}):\n{tail}"])
    return registered([d["name"] for d in chosen])


def registered(names: list[str]) -> list[dict]:
    """The server's record of these deployments of the recipe flow: name, pool, schedules, parameters."""
    from prefect.client.orchestration import get_client

    from flows.recipe_flow import run_recipe

    rows = []
    with get_client(sync_client=True) as client:
        for name in names:
            deployment = client.read_deployment_by_name(f"{run_recipe.name}/{name}")
            rows.append({"deployment": f"{run_recipe.name}/{name}", "work_pool": deployment.work_pool_name,
                         "schedules": [s.schedule.cron for s in deployment.schedules if hasattr(s.schedule, "cron")],
                         "parameters": deployment.parameters})
    return rows


def serve(names: list[str] | None = None, *, limit: int | None = None) -> None:
    """Serve the deployments (all, or those named) from this process until interrupted."""
    from prefect import serve as prefect_serve
    from prefect.schedules import Cron

    from flows.recipe_flow import run_recipe

    chosen = select(names)
    require_server("serve")
    served = [run_recipe.to_deployment(
        name=d["name"], description=d.get("description"), tags=d.get("tags"), parameters=d.get("parameters") or {},
        schedules=[Cron(s["cron"], timezone=s.get("timezone")) for s in d.get("schedules") or [] if "cron" in s])
        for d in chosen]
    prefect_serve(*served, limit=limit)


def _entrypoint_flow(entrypoint, where: str, problems: list[str]):
    """The function behind `path/to/module.py:flow_name`, imported as a module of this repo (nothing else runs)."""
    if not isinstance(entrypoint, str) or ":" not in entrypoint:
        problems.append(f"{where}: entrypoint {entrypoint!r} is not `path/to/file.py:flow_function`")
        return None
    path, name = entrypoint.rsplit(":", 1)
    if not (REPO / path).is_file():
        problems.append(f"{where}: entrypoint file {path!r} does not exist in {REPO}")
        return None
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    flow = getattr(module, name, None)
    if flow is None or not hasattr(flow, "fn"):
        problems.append(f"{where}: {path} has no Prefect flow {name!r}")
        return None
    return flow.fn


def _check_schedules(schedules: list) -> list[str]:
    from prefect.client.schemas.schedules import CronSchedule

    problems = []
    for schedule in schedules:
        if not isinstance(schedule, dict) or "cron" not in schedule:
            problems.append(f"schedule {schedule!r}: only `cron:` schedules are used here")
            continue
        try:
            CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone"))
        except (ValidationError, ValueError) as error:
            problems.append(f"schedule cron={schedule['cron']!r} timezone={schedule.get('timezone')!r}: {error}".split("\n")[0])
    return problems
