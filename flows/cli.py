"""The `flow` command: run recipes, and look at datasets and their versions.

    flow run build-wethink [--set key=value ...] [--dataset NAME]
    flow recipes | flow datasets
    flow versions wethink
    flow sql "SELECT answer_type, count(*) FROM questions GROUP BY 1" --dataset wethink
    flow diff wethink 1 2
    flow show wethink <question_id>
    flow report loop --dataset loop
    flow export trainer --dataset wethink --format trl --output out/
    flow export hub --dataset wethink --repo me/wethink [--private]   (or --to-folder DIR: no upload)
    flow report html --dataset wethink [--version N]
    flow versions wethink --stages            # per stage: items, rejects, model calls, tokens, seconds
    flow deploy | flow serve                  # the recipes as scheduled Prefect deployments (prefect.yaml)

Tables for people by default; `--format json|csv|parquet` (and `--output FILE`) for scripts.
Only `run` starts Prefect; the rest read the lake directly and answer in well under a second.
"""

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from flows.environment import configure_prefect, thinkmill_home
from schemas.errors import ThinkmillError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="thinkmill: build verified, difficulty-scored multimodal reasoning datasets.")


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    parquet = "parquet"


FORMAT = typer.Option(Format.table, "--format", "-f", help="table for people; json, csv or parquet for scripts")
OUTPUT = typer.Option(None, "--output", "-o", help="write to this file instead of standard output (needed for parquet)")


@app.command()
def run(recipe: str = typer.Argument(..., help="recipe name (see `flow recipes`) or path to a recipe .yaml"),
        set_: list[str] = typer.Option([], "--set", help="override a recipe value: key=value (repeatable)"),
        dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="dataset name (default: the recipe's)"),
        workers: Optional[int] = typer.Option(None, help="parallel shard tasks (default: the recipe's, 2)"),
        format: Format = typer.Option(Format.table, "--format", "-f", help="table or json"),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar per stage"),
        no_cache: bool = typer.Option(False, "--no-cache", help="call the models again instead of replaying answered calls"),
        runner: str = typer.Option("threads", "--runner", help="where shard tasks run: threads (this process) or ray"),
        ray_address: Optional[str] = typer.Option(None, "--ray-address", help="join this Ray cluster (HOST:PORT, or auto) "
                                                  "instead of starting a local one"),
        catalog: Optional[str] = typer.Option(None, "--catalog", help="a new dataset's catalog: sqlite (default) or "
                                              "'postgres:dbname=... host=...' (default: $THINKMILL_CATALOG)"),
        data_path: Optional[str] = typer.Option(None, "--data-path", help="a new dataset's Parquet folder, e.g. "
                                                "s3://bucket/prefix/ (default: <dataset>/data/)")):
    """Run a recipe as a Prefect flow and commit its result as a new dataset version."""
    home = thinkmill_home()
    configure_prefect(home)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")  # the progress bars and summary say what happened
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # one bar per stage is enough
    from flows.recipes import load_recipe

    load_recipe(recipe, set_, dataset=dataset)  # validate before paying for Prefect's start-up
    from flows.recipe_flow import run as run_flow, summary_markdown

    summary = run_flow(recipe, set_, dataset=dataset, home=home, show_progress=progress and sys.stderr.isatty(), workers=workers,
                       no_cache=no_cache, runner=runner, ray_address=ray_address, catalog=catalog, data_path=data_path)
    if format == Format.json:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    from rich.console import Console
    from rich.markdown import Markdown

    Console().print(Markdown(summary_markdown(summary)))
    if summary["version"] is not None:
        typer.echo(f"Query it: flow sql \"SELECT answer_type, count(*) FROM questions GROUP BY 1\" --dataset {summary['dataset']}")


@app.command()
def recipes(format: Format = FORMAT):
    """List the recipes in configs/recipes/."""
    from flows.recipes import configs_dir, recipe_names

    rows = []
    for name in recipe_names():
        first = (configs_dir() / "recipes" / f"{name}.yaml").read_text().splitlines()[:1]
        rows.append({"recipe": name, "about": first[0].lstrip("# ").split(": ", 1)[-1] if first else ""})
    _emit_rows(rows, format, None)


@app.command()
def datasets(format: Format = FORMAT):
    """List the datasets under THINKMILL_HOME."""
    from stores.lake import list_datasets

    home = thinkmill_home()
    _emit_rows([{"dataset": name, "root": str(home / "datasets" / name)} for name in list_datasets(home)], format, None)


@app.command()
def versions(dataset: str = typer.Argument(..., help="dataset name"), format: Format = FORMAT, output: Optional[Path] = OUTPUT,
             stages: bool = typer.Option(False, "--stages", help="one row per stage of each version's run: items, "
                                                                 "rejects, model calls, tokens, seconds (table stage_stats)"),
             version: Optional[int] = typer.Option(None, "--version", "-v", help="with --stages: this version only")):
    """List a dataset's versions (DuckLake snapshots), oldest first."""
    if stages:
        from flows.stage_stats import for_people, stage_rows

        with _lake(dataset) as lake:
            rows = stage_rows(lake, version=version)
        _emit_rows(for_people(rows) if format == Format.table else rows, format, output)
        return
    with _lake(dataset) as lake:
        rows = lake.versions()
    for row in rows:
        counts = json.loads(row["counts"])
        row["rows_added"] = sum(c["added"] for c in counts.values())
        row["rows_removed"] = sum(c["removed"] for c in counts.values())
        if format == Format.table:
            for column in ("counts", "run_id", "commit_message"):
                row.pop(column)
            row["config_hash"] = row["config_hash"][:12]
            row["created_at"] = row["created_at"].strftime("%Y-%m-%d %H:%M:%S")
    _emit_rows(rows, format, output)


@app.command()
def sql(query: str = typer.Argument(..., help="DuckDB SQL; tables: assets, captions, questions, cots, verdicts, "
                                              "rollouts, difficulty, rejects, versions, ...; time travel: AT (VERSION => n)"),
        dataset: str = typer.Option(..., "--dataset", "-d", help="dataset name"),
        format: Format = FORMAT, output: Optional[Path] = OUTPUT,
        max_width: int = typer.Option(60, help="truncate cells wider than this in table output (0: never)")):
    """Query a dataset with DuckDB SQL, read-only."""
    with _lake(dataset) as lake:
        result = lake.sql(query)
    _emit(result, format, output, max_width=max_width)


@app.command()
def diff(dataset: str = typer.Argument(..., help="dataset name"), old: int = typer.Argument(..., help="older version"),
         new: int = typer.Argument(..., help="newer version"),
         rows: bool = typer.Option(False, "--rows", help="list the ids, not just the counts"), format: Format = FORMAT,
         table: list[str] = typer.Option([], "--table", "-t", help="only this table (repeatable; default: all)")):
    """Rows added, removed and changed per table between two versions."""
    with _lake(dataset) as lake:
        changes = lake.diff(old, new, tables=table or None)
    if rows:
        out = [{"table": t, "change": kind, "id": i} for t, c in changes.items() for kind in ("added", "removed", "changed") for i in c[kind]]
    else:
        out = [{"table": t, "added": len(c["added"]), "removed": len(c["removed"]), "changed": len(c["changed"])} for t, c in changes.items()]
    _emit_rows(out, format, None)


@app.command()
def show(dataset: str = typer.Argument(..., help="dataset name"),
         question_id: str = typer.Argument(..., help="a question id, or a unique prefix of one"),
         version: Optional[int] = typer.Option(None, help="as of this version (default: latest)"), format: Format = FORMAT):
    """Everything about one question: image, question, answer, captions, CoTs, verdicts, difficulty."""
    from flows.show import question_record, render_record

    with _lake(dataset) as lake:
        record = question_record(lake, question_id, version=version)
    if format == Format.json:
        typer.echo(json.dumps(record, indent=2, default=str))
    else:
        render_record(record)


@app.command()
def deploy(names: Optional[list[str]] = typer.Argument(None, help="deployments of prefect.yaml (default: all)"),
           check: bool = typer.Option(False, "--check", help="only check prefect.yaml against the recipes; register nothing"),
           format: Format = FORMAT):
    """Register the recipes' scheduled deployments (prefect.yaml) with the Prefect server at PREFECT_API_URL."""
    from flows import deployments

    if check:
        chosen = deployments.select(names)
        _emit_rows([{"deployment": d["name"], "recipe": (d.get("parameters") or {}).get("recipe_name"),
                     "schedules": " | ".join(s["cron"] for s in d.get("schedules") or []),
                     "work_pool": d["work_pool"]["name"]} for d in chosen], format, None)
        return
    rows = deployments.deploy(names)
    if format == Format.table:
        rows = [{**r, "schedules": ", ".join(r["schedules"]), "parameters": json.dumps(r["parameters"])} for r in rows]
    _emit_rows(rows, format, None)
    pools = sorted({r["work_pool"] for r in rows if r["work_pool"]})
    typer.echo(f"Start a worker to run them: prefect worker start --pool {pools[0] if pools else 'thinkmill'}", err=True)


@app.command()
def serve(names: Optional[list[str]] = typer.Argument(None, help="deployments of prefect.yaml (default: all)"),
          limit: Optional[int] = typer.Option(None, help="most flow runs at once (default: no limit)")):
    """Serve the recipes' deployments from this process, with their schedules (one machine, no worker)."""
    from flows import deployments

    deployments.serve(names, limit=limit)


cache_app = typer.Typer(no_args_is_help=True, help="The dataset's call cache: every model call, replayed on re-runs.")
app.add_typer(cache_app, name="cache")


def _call_cache(dataset: str):
    from stores.call_cache import CallCache
    from stores.lake import Lake, dataset_root

    root = dataset_root(thinkmill_home(), dataset)
    Lake.open(root, read_only=True).close()  # a clear error when the dataset does not exist
    return CallCache(root / "calls.sqlite")


@cache_app.command("stats")
def cache_stats(dataset: str = typer.Argument(..., help="dataset name"), format: Format = FORMAT):
    """Calls stored, by task and by prompt version."""
    stats = _call_cache(dataset).stats()
    if format == Format.json:
        typer.echo(json.dumps(stats, indent=2))
        return
    _emit_rows([{"task": t, "calls": n} for t, n in stats["by_task"].items()], format, None)
    typer.echo(f"{stats['n_calls']} calls: {stats['n_ok']} answered, {stats['n_errors']} replayed errors, "
               f"{stats['n_transient_errors']} transient errors (asked again next run)")


@cache_app.command("invalidate")
def cache_invalidate(dataset: str = typer.Argument(..., help="dataset name"),
                     prompt_version: Optional[str] = typer.Option(None, help="e.g. synthesize_qa-v2"),
                     task: Optional[str] = typer.Option(None, help="e.g. caption.fine"),
                     model: Optional[str] = typer.Option(None, help="a model name")):
    """Forget stored calls (all filters must match), so the next run that needs them asks the model again.

    Stage work is also cached per shard: to re-run a stage whose inputs did not change, change one of
    its parameters or delete `<dataset>/staging/<stage>/`.
    """
    try:
        deleted = _call_cache(dataset).invalidate(prompt_version=prompt_version, task=task, model=model)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    typer.echo(f"forgot {deleted} calls")


report_app = typer.Typer(no_args_is_help=True, help="Reports on a dataset version, for people: pages, loop rounds.")
app.add_typer(report_app, name="report")


@report_app.command("loop")
def report_loop(dataset: str = typer.Option(..., "--dataset", "-d", help="dataset name"),
                version: Optional[int] = typer.Option(None, help="a version a loop run made (default: the newest)"),
                min_easy_pass_rate: float = typer.Option(0.9, help="a question is easy for a policy at this pass rate or above"),
                max_hard_pass_rate: float = typer.Option(0.1, help="a question is hard for a policy at this pass rate or below"),
                format: Format = FORMAT, output: Optional[Path] = OUTPUT):
    """Per round of a loop run: policy, train reward, held-out reward, pass-rate shift, items that became easy or hard."""
    from flows.loop_report import legend, loop_report, table_rows

    with _lake(dataset) as lake:
        report = loop_report(lake, version=version, min_easy_pass_rate=min_easy_pass_rate, max_hard_pass_rate=max_hard_pass_rate)
    if format == Format.json:
        text = json.dumps(report, indent=2, default=str) + "\n"
        (output.write_text(text) if output else sys.stdout.write(text))
        return
    _emit_rows(table_rows(report), format, output)
    if format == Format.table:
        typer.echo(f"{report['recipe']} run {report['run_id']}, version {report['version']}. {legend(report)}")


@report_app.command("fidelity")
def report_fidelity(dataset: str = typer.Option(..., "--dataset", "-d", help="dataset name (built by e.g. `flow run fidelity`)"),
                    version: Optional[int] = typer.Option(None, help="dataset version (default: the latest)"),
                    steps: int = typer.Option(8, help="GRPO steps per arm (every arm the same)"),
                    learning_rate: float = typer.Option(1e-3, help="GRPO learning rate per arm"),
                    seed: int = typer.Option(0, help="seed of the random arm and of training"),
                    observe_mixture: bool = typer.Option(True, "--observe-mixture/--no-observe-mixture",
                                                         help="run one pilot on the surrogate's mixture to observe its score"),
                    format: Format = typer.Option(Format.table, "--format", "-f", help="table or json")):
    """Held-out reward after short GRPO on MCTS-selected, random, SC-selected and all questions; RAP; mixture vs uniform."""
    from flows.fidelity import fidelity_report, table_rows, text_sections

    home = thinkmill_home()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    with _lake(dataset) as lake:
        report = fidelity_report(lake, home, version=version, steps=steps, seed=seed, learning_rate=learning_rate,
                                 observe_mixture=observe_mixture, progress=lambda message: typer.echo(message, err=True))
    if format == Format.json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    _emit_rows(table_rows(report), Format.table, None)
    typer.echo(text_sections(report))


export_app = typer.Typer(no_args_is_help=True, help="Write a dataset version out for others: the Hugging Face Hub, trainers.")
app.add_typer(export_app, name="export")


class TrainerFormat(str, Enum):
    trl = "trl"
    easyr1 = "easyr1"
    llamafactory = "llamafactory"


@export_app.command("trainer")
def export_trainer(dataset: str = typer.Option(..., "--dataset", "-d", help="dataset name"),
                   format: TrainerFormat = typer.Option(..., "--format", "-f", help="trl (GRPOTrainer), easyr1 (EasyR1/verl) or llamafactory (SFT)"),
                   output: Path = typer.Option(..., "--output", "-o", help="folder to write into (created if absent)"),
                   version: Optional[int] = typer.Option(None, help="dataset version (default: the latest)"),
                   all_: bool = typer.Option(False, "--all", help="every verified question, not only the selected items"),
                   policy: Optional[str] = typer.Option(None, help="only the items selected for this policy id")):
    """Export the selected items of a version (or --all) as training files for TRL, EasyR1 or LLaMA-Factory."""
    from stores.exports.trainers import export_trainer as export

    with _lake(dataset) as lake:
        written = export(lake, output, format=format.value, version=version, all_questions=all_, policy_id=policy)
    skipped = "".join(f", skipped {n} ({why})" for why, n in written["skipped"].items())
    typer.echo(f"wrote {written['n_rows']} rows ({written['rows']}, version {written['version']}) for {written['format']} "
               f"to {written['output']}{skipped}; images {written['images']}.\nLoad with: {written['load_with']}")


@export_app.command("hub")
def export_hub(dataset: str = typer.Option(..., "--dataset", "-d", help="dataset name"),
               version: Optional[int] = typer.Option(None, help="dataset version (default: latest)"),
               repo: Optional[str] = typer.Option(None, help="Hub dataset repo, user/name or org/name"),
               private: bool = typer.Option(False, "--private", help="create the repo private"),
               to_folder: Optional[Path] = typer.Option(None, "--to-folder", help="write the Hub layout here; no upload"),
               license: Optional[str] = typer.Option(None, help="licence id for the card, e.g. cc-by-4.0 (default: the "
                                                                 "recipe's, else 'other')"),
               max_shard_mb: float = typer.Option(500.0, help="largest Parquet file, in MB")):
    """Write a version as a Hub dataset (Parquet shards, embedded images, a dataset card) and upload it.

    The token comes from HF_TOKEN or `hf auth login`; HF_ENDPOINT picks another Hub.
    """
    import tempfile

    from flows.recipes import recipe_license
    from schemas.errors import ExportError
    from stores.exports.hub import upload, write_folder

    if to_folder is None and repo is None:
        raise typer.BadParameter("give --repo user/name to upload, or --to-folder DIR to write the files only", param_hint="--repo")
    if to_folder is not None and private:
        raise ExportError("--private applies to an upload; --to-folder writes files only. Drop one of them.")
    with _lake(dataset) as lake, tempfile.TemporaryDirectory(prefix="thinkmill-hub-") as scratch:
        folder = to_folder if to_folder is not None else Path(scratch) / dataset
        recipes = {v["version"]: v["recipe"] for v in lake.versions()}
        export = write_folder(lake, folder, version=version, max_shard_bytes=int(max_shard_mb * 1_000_000), license=license,
                              recipe_license=recipe_license(recipes.get(version or max(recipes, default=0), "")), repo_id=repo)
        n_files = sum(len(c.files) for c in export.configs.values())
        typer.echo(f"{dataset} version {export.version}: {len(export.configs)} configs "
                   f"({', '.join(f'{n} {c.n_rows} rows' for n, c in export.configs.items())}), {n_files} Parquet files + README.md")
        if to_folder is not None:
            typer.echo(f"wrote {folder}; load it with datasets.load_dataset({str(folder)!r}, 'samples')")
            return
        url = upload(folder, repo, private=private, commit_message=f"thinkmill: {dataset} version {export.version}")
        typer.echo(f"uploaded to {url}{' (private)' if private else ''}")


@report_app.command("html")
def report_html(dataset: str = typer.Option(..., "--dataset", "-d", help="dataset name"),
                version: Optional[int] = typer.Option(None, help="dataset version (default: latest)"),
                output: Optional[Path] = typer.Option(None, "--output", "-o", help="folder for index.html and thumbnails "
                                                      "(default: $THINKMILL_HOME/reports/<dataset>-v<version>)"),
                max_samples: int = typer.Option(500, help="most samples on the page (the page says when it shows fewer)")):
    """A static page to look at a version: samples with image, QA, CoT, verdicts, difficulty; charts; rejects."""
    from stores.exports.report_page import write_report

    with _lake(dataset) as lake:
        page = write_report(lake, output, version=version, max_samples=max_samples,
                            default_root=thinkmill_home() / "reports")
    typer.echo(f"wrote {page.path} ({page.n_shown} of {page.n_samples} samples); open it in a browser")


# ---- helpers -------------------------------------------------------------------------------------

class _lake:
    def __init__(self, dataset: str):
        self.dataset = dataset

    def __enter__(self):
        from stores.lake import Lake, dataset_root

        self.lake = Lake.open(dataset_root(thinkmill_home(), self.dataset), read_only=True)
        return self.lake

    def __exit__(self, *exc):
        self.lake.close()


def _emit_rows(rows: list[dict], format: Format, output: Optional[Path]) -> None:
    import pyarrow as pa

    _emit(pa.Table.from_pylist(rows) if rows else pa.table({}), format, output)


def _emit(table, format: Format, output: Optional[Path], *, max_width: int = 60) -> None:
    import pyarrow as pa

    if format == Format.parquet:
        if output is None:
            raise typer.BadParameter("parquet is binary: give --output FILE.parquet", param_hint="--format")
        import pyarrow.parquet as pq

        pq.write_table(table, output)
        typer.echo(f"wrote {table.num_rows} rows to {output}", err=True)
        return
    if format == Format.csv:
        import io

        import pyarrow.csv as pacsv

        buffer = io.BytesIO()
        plain = pa.table({n: _plain(c) for n, c in zip(table.column_names, table.columns)}) if table.num_columns else table
        pacsv.write_csv(plain, buffer)
        text = buffer.getvalue().decode()
    elif format == Format.json:
        text = json.dumps(table.to_pylist(), indent=2, default=str) + "\n"
    else:
        text = None
    if text is not None:
        (output.write_text(text) if output else sys.stdout.write(text))
        return
    from rich.console import Console
    from rich.table import Table

    view = Table(show_lines=False)
    for name in table.column_names:
        view.add_column(name, overflow="fold")
    for row in table.to_pylist():
        view.add_row(*[_cell(v, max_width) for v in row.values()])
    console = Console(file=open(output, "w") if output else None, width=None if output is None else 200)
    console.print(view)
    console.print(f"[dim]{table.num_rows} row{'s' if table.num_rows != 1 else ''}[/dim]")


def _plain(column):
    import pyarrow as pa

    if pa.types.is_list(column.type) or pa.types.is_struct(column.type) or pa.types.is_map(column.type):
        return pa.array([None if v is None else json.dumps(v, default=str) for v in column.to_pylist()], type=pa.string())
    return column


def _cell(value, max_width: int) -> str:
    text = "" if value is None else json.dumps(value, default=str) if isinstance(value, (list, dict)) else str(value)
    return text if not max_width or len(text) <= max_width else text[: max_width - 1] + "…"


def main() -> None:
    try:
        app()
    except ThinkmillError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
