"""Run a recipe as one Prefect flow: a task per (step, shard), one lake commit at the end.

Every shard task is cached by Prefect under a key made of small, stable values only: the dataset,
the stage and its version, the resolved parameters, the identity of the models it calls, and the
content hashes of its input rows. A re-run with nothing changed therefore does no stage work and
commits nothing; a changed parameter re-runs that stage, and later stages only where their inputs
changed. Task outputs are Parquet files in the dataset's staging folder; the flow reads them back,
checks the accounting (in = kept + rejected), and commits everything in one DuckLake snapshot.

The shard tasks run on threads in this process (the default), or on a Ray cluster (`runner="ray"`,
flows/ray_runner.py): each worker writes its shard's Parquet files, the driver commits them.
"""

import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows.pause_points import pause_at
from flows.recipes import Recipe, load_recipe
from flows.run_tables import RunTables, related, shards, table_fingerprint, with_row_hash
from pipelines.engines import EngineRegistry
from pipelines.engines.counting import CountedEngines, add_tallies
from pipelines.sources import source_items
from pipelines.stage import Accounting, StageContext, StageResult, account, item_ids, kept_ids
from pipelines.stages import STAGES
from schemas import TABLES, make_id
from schemas.base import canonical_json, sha256_text
from schemas.errors import RecipeError, ThinkmillError
from stores import catalogs
from stores.call_cache import CallCache
from stores.lake import Lake, dataset_root
from stores.staging import Staging


def _cache_key(context, parameters) -> str:
    # Small, stable values only (computed by the flow): a table or an engine does not hash reliably,
    # and a wrong key would silently reuse a stale result.
    return parameters["cache_key"]


def _is_transient(task, task_run, state) -> bool:
    """Retry engine hiccups; a bug or a bad recipe fails the same way twice, so fail at once."""
    if not state.is_failed():
        return False
    try:
        state.result()
    except ThinkmillError as error:
        from schemas.errors import EngineTimeout, EngineUnavailable

        return isinstance(error, (EngineTimeout, EngineUnavailable))
    except Exception:
        return True
    return False


@task(cache_key_fn=_cache_key, persist_result=True, result_serializer="json", retries=2,
      retry_delay_seconds=[2, 10], retry_condition_fn=_is_transient, task_run_name="{stage}[{shard_index}]")
def run_shard(stage: str, shard_index: int, cache_key: str, inputs: dict, params: dict, context: dict,
              engines: EngineRegistry, progress) -> dict:
    """Run one stage on one shard and stage its output as Parquet; return a reference to it."""
    spec = STAGES[stage]
    counted = CountedEngines(engines)  # this task's own call and token counts (engines are shared by stages)
    ctx = StageContext(**context, engines=counted, progress=progress or _no_progress)
    started = time.perf_counter()
    result: StageResult = spec(*[inputs[name] for name in spec.reads], ctx, **params)
    counts = account(spec, inputs[spec.subject], result)
    pause_at(f"shard:{stage}")
    tables = {"out": with_row_hash(spec.writes, result.out), "rejects": with_row_hash("rejects", result.rejects)}
    tables |= {f"side-{name}": with_row_hash(name, rows) for name, rows in result.side.items()}
    meta = {"n_in": counts.n_in, "n_out": counts.n_out, "n_rejected": counts.n_rejected, "by_reason": counts.by_reason,
            "kept": kept_ids(spec, inputs[spec.subject], result), "wall_s": round(time.perf_counter() - started, 3),
            "calls": counted.tally.to_dict(),
            "worker": f"{socket.gethostname()}:{os.getpid()}"}  # where it ran: this process, or a Ray worker
    return Staging(Path(context["root"])).write(stage, cache_key, tables, meta)


@task(task_run_name="read-sources", cache_policy=NO_CACHE, persist_result=False)
def read_sources(source: dict, seed: int) -> pa.Table:
    return source_items(source)


@flow(name="thinkmill-recipe", flow_run_name="{recipe_name}", validate_parameters=False)
def run_recipe(recipe_name: str, overrides: list[str] | None = None, dataset: str | None = None,
               home: str | None = None, show_progress: bool = False, no_cache: bool = False,
               catalog: str | None = None, data_path: str | None = None, live_progress: bool = True) -> dict:
    """Run `recipe_name` (with `--set` overrides) on a dataset; return the run summary.

    The summary has the new `version` (None when the run changed nothing), rows added/removed per
    table, and per step: items in, kept, rejected by reason, shards run and shards cached.
    Model calls go through the dataset's call cache (`calls.sqlite`) unless `no_cache`.
    `catalog`, `data_path`: where a new dataset's catalog and Parquet files go (stores/catalogs.py);
    THINKMILL_CATALOG is the default catalog for new datasets. `live_progress`: shards report items
    as they finish them (threads in this process); False when shards run elsewhere (Ray).
    """
    from flows.environment import thinkmill_home

    recipe = load_recipe(recipe_name, overrides or [], dataset=dataset)
    home_path = Path(home) if home else thinkmill_home()
    root = dataset_root(home_path, recipe.dataset)
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    started = time.perf_counter()
    if catalog is None and not catalogs.exists(root):
        catalog = os.environ.get("THINKMILL_CATALOG") or None
    lake = Lake.open(root, create=True, catalog=catalog, data_path=data_path)
    try:
        start_version = lake.current_version()
        tables = RunTables(lambda name: lake.table(name))
        # Every model call is replayed from the dataset's call cache when it was answered before.
        registry = EngineRegistry(recipe.models, home_path, cache=None if no_cache else CallCache(root / "calls.sqlite"))
        staging = Staging(root)
        tables.put("source_items", read_sources(recipe.source, recipe.seed))
        steps, loop_rounds = [], None
        with _progress(show_progress) as bars:
            for step in recipe.steps:
                steps.append(_run_step(step, recipe, tables, registry, staging, root, run_id, start_version, bars,
                                       live_progress))
            if recipe.loop:  # the closed loop: `rounds` times the loop steps, in this run (flows/loop.py)
                from flows.loop import run_rounds

                round_steps, loop_rounds = run_rounds(recipe, lambda step, view, engines: _run_step(
                    step, recipe, view, engines, staging, root, run_id, start_version, bars, live_progress), tables,
                    registry, run_id=run_id)
                steps += round_steps
        stage_stats = pa.Table.from_pylist([s["row"] for s in steps], schema=TABLES["stage_stats"].schema)
        commit = lake.commit(tables.for_lake(), run_id=run_id, recipe=recipe.name, config_hash=recipe.config_hash,
                             config=recipe.resolved(), stage_stats=stage_stats,
                             run_rows={"loop_rounds": loop_rounds} if loop_rounds is not None else None,
                             before_commit=lambda: pause_at("commit"))
        if commit.version is not None:
            pause_at("committed")
    finally:
        lake.close()
    summary = {"dataset": recipe.dataset, "root": str(root), "recipe": recipe.name, "run_id": run_id,
               "config_hash": recipe.config_hash, "version": commit.version, "previous_version": start_version,
               "added": commit.added, "removed": commit.removed, "steps": [s["summary"] for s in steps],
               "model_calls": registry.cache_counts(), "commit_attempts": commit.attempts,
               "wall_s": round(time.perf_counter() - started, 3),  # the flow's work: no interpreter or Prefect start
               "workers": sorted({w for s in steps for w in s["workers"]})}
    if recipe.loop:  # the per-round table, read back from the version the loop left (flows/loop_report.py)
        from flows.loop_report import report_of_run

        summary["loop"] = report_of_run(root, commit.version or start_version)
    create_markdown_artifact(key=f"run-{_slug(recipe.dataset)}", markdown=summary_markdown(summary),
                             description=f"{recipe.name} on {recipe.dataset}")
    return summary


def _run_step(step, recipe: Recipe, tables: RunTables, registry: EngineRegistry, staging: Staging, root: Path,
              run_id: str, start_version, bars, live_progress: bool = True) -> dict:
    spec = STAGES[step.stage]
    inputs = tables.inputs(spec)
    spec.check_columns(inputs)
    subject = inputs[spec.subject]
    n_items = len(item_ids(spec, subject))  # video frames ride along with their video; they are not items
    size = recipe.shard_size if spec.sharded else max(n_items, 1)
    subject_shards = shards(subject, size)
    engines_fp = [registry.fingerprint(role) if registry.has(role) else f"{role}: unbound" for role in spec.engines]
    context = {"run_id": run_id, "stage": spec.name, "stage_version": spec.version, "config_hash": recipe.config_hash,
               "root": Path(root), "seed": recipe.seed, "data_version": start_version}
    bar = bars.stage(spec.name, n_items)
    started = time.perf_counter()
    futures = []
    for index, shard in enumerate(subject_shards):
        shard_inputs = {name: (shard if name == spec.subject else related(table, shard)) for name, table in inputs.items()}
        key_parts = [str(root), spec.name, spec.version, step.params, engines_fp,
                     {name: table_fingerprint(name.removeprefix("lake."), t) for name, t in shard_inputs.items()}]
        key = f"{spec.name}-v{spec.version}-{sha256_text(canonical_json(key_parts))[:32]}"
        options = {} if staging.has(spec.name, key) else {"refresh_cache": True}  # staged files gone: recompute
        futures.append(run_shard.with_options(**options).submit(
            spec.name, index, key, shard_inputs, step.params, context, registry, bar.advance if live_progress else None))
    total, outs, rejects, sides, kept, cached, calls, workers = Accounting(0, 0, 0, {}), [], [], {}, [], 0, [], set()
    for future, shard in zip(futures, subject_shards):
        reference = future.result()
        shard_cached = future.state.name == "Cached"
        cached += shard_cached
        staged, meta = staging.read(reference)
        if not shard_cached:  # a cached shard's calls were made (and counted) by the run that computed it
            calls.append(meta.get("calls", {}))
        outs.append(staged["out"])
        rejects.append(staged["rejects"])
        for name, rows in staged.items():
            if name.startswith("side-"):
                sides.setdefault(name.removeprefix("side-"), []).append(rows)
        kept += meta["kept"]
        workers.add(meta.get("worker", "?"))
        total = total + Accounting(meta["n_in"], meta["n_out"], meta["n_rejected"], meta["by_reason"])
        bar.shard_done(meta["n_in"], total)
    out = pa.concat_tables(outs) if outs else TABLES[spec.writes].schema.empty_table()
    tables.apply(spec, out, pa.concat_tables(rejects), {n: pa.concat_tables(r) for n, r in sides.items()}, kept)
    wall_s = round(time.perf_counter() - started, 3)
    row = {"stage_stats_id": make_id("stage_stats", run_id, step.index, spec.name), "run_id": run_id,
           "step_index": step.index, "stage": spec.name, "stage_version": spec.version, "unit": spec.unit,
           "n_in": total.n_in, "n_out": total.n_out, "n_rejected": total.n_rejected,
           "rejected_by_reason": total.to_json(), "n_shards": len(subject_shards), "n_shards_cached": cached,
           **add_tallies(calls), "wall_s": wall_s}
    summary = {k: row[k] for k in ("stage", "unit", "n_in", "n_out", "n_rejected", "n_shards", "n_shards_cached",
                                   "n_calls_made", "n_calls_cached", "prompt_tokens", "completion_tokens", "wall_s")}
    summary["rejected_by_reason"] = total.by_reason
    return {"row": row, "summary": summary, "workers": workers}


def summary_markdown(summary: dict) -> str:
    version = summary["version"]
    head = (f"# {summary['recipe']} on `{summary['dataset']}`\n\n"
            + (f"Committed **version {version}** (run `{summary['run_id']}`, config `{summary['config_hash'][:12]}`).\n\n"
               if version is not None else f"Nothing changed: the dataset stays at version {summary['previous_version']}.\n\n"))
    lines = ["| step | stage | in | kept | rejected | top reject reasons | shards (cached) | model calls (cached) "
             "| tokens in / out | seconds |",
             "|---|---|---:|---:|---:|---|---|---:|---:|---:|"]
    for i, s in enumerate(summary["steps"], 1):
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(s["rejected_by_reason"].items(), key=lambda x: -x[1])[:3])
        stage = f"{s['stage']} (round {s['round']})" if "round" in s else s["stage"]
        lines.append(f"| {i} | {stage} | {s['n_in']} | {s['n_out']} | {s['n_rejected']} | {reasons} | "
                     f"{s['n_shards']} ({s['n_shards_cached']}) | {s.get('n_calls_made', 0)} ({s.get('n_calls_cached', 0)}) | "
                     f"{s.get('prompt_tokens', 0)} / {s.get('completion_tokens', 0)} | {s['wall_s']} |")
    rows = ["", "| table | rows added | rows removed |", "|---|---:|---:|"]
    rows += [f"| {t} | {summary['added'].get(t, 0)} | {summary['removed'].get(t, 0)} |" for t in sorted(summary["added"])]
    if summary.get("loop"):
        from flows.loop_report import loop_markdown

        rows += ["", loop_markdown(summary["loop"])]
    return head + "\n".join(lines + rows) + "\n"


def _no_progress(n: int) -> None:
    pass


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-") or "dataset"


class _StageBar:
    """One progress bar per stage: items done, with kept/rejected counts in its label."""

    def __init__(self, progress, name: str, total: int):
        self._progress, self._name, self._lock = progress, name, threading.Lock()
        self._done_in_shards = 0
        self._task = progress.add_task(f"{name:<14}", total=max(total, 1)) if progress else None
        self._live = 0

    def advance(self, n: int = 1) -> None:
        if self._task is not None:
            with self._lock:
                self._live += n
                self._progress.update(self._task, completed=self._done_in_shards + self._live)

    def shard_done(self, shard_items: int, total: Accounting) -> None:
        if self._task is not None:
            with self._lock:
                self._done_in_shards += shard_items
                self._live = 0
                self._progress.update(self._task, completed=self._done_in_shards,
                                      description=f"{self._name:<14} kept {total.n_out} rejected {total.n_rejected}")


class _Bars:
    def __init__(self, progress):
        self._progress = progress

    def stage(self, name: str, total: int) -> _StageBar:
        return _StageBar(self._progress, name, total)


class _progress:
    """A rich progress display when asked for (the CLI), silence otherwise (tests, deployments)."""

    def __init__(self, show: bool):
        self._show = show

    def __enter__(self) -> _Bars:
        if not self._show:
            return _Bars(None)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._rich = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        self._rich.__enter__()
        return _Bars(self._rich)

    def __exit__(self, *exc):
        if self._show:
            self._rich.__exit__(*exc)


@contextmanager
def _threads(*, workers: int, address: str | None):
    if address is not None:
        raise RecipeError("--ray-address", ["a Ray address needs the Ray runner: add --runner ray"])
    yield ThreadPoolTaskRunner(max_workers=workers)


def _ray(*, workers: int, address: str | None):
    from flows.ray_runner import ray_task_runner

    return ray_task_runner(workers=workers, address=address)


# Where shard tasks run: name -> context manager yielding a Prefect task runner.
TASK_RUNNERS = {"threads": _threads, "ray": _ray}


def run(recipe_name: str, overrides: list[str] | None = None, *, dataset: str | None = None, home: Path | None = None,
        show_progress: bool = False, workers: int | None = None, no_cache: bool = False, runner: str = "threads",
        ray_address: str | None = None, catalog: str | None = None, data_path: str | None = None) -> dict:
    """Run a recipe in-process (ephemeral Prefect unless PREFECT_API_URL is set). Returns the summary.

    `runner`: "threads" (this process, `workers` at a time) or "ray" (a local Ray instance with
    `workers` CPUs, or the cluster at `ray_address`). `catalog`, `data_path`: see `run_recipe`.
    """
    recipe = load_recipe(recipe_name, overrides or [], dataset=dataset)  # fail fast, before Prefect starts
    if runner not in TASK_RUNNERS:
        raise RecipeError("--runner", [f"unknown runner {runner!r}; runners are: {', '.join(TASK_RUNNERS)}"])
    with TASK_RUNNERS[runner](workers=workers or recipe.workers, address=ray_address) as task_runner:
        return run_recipe.with_options(task_runner=task_runner)(
            recipe_name, list(overrides or []), dataset, str(home) if home else None, show_progress, no_cache,
            catalog, data_path, runner == "threads")
