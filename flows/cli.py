"""The `flow` command: run recipes, and look at datasets and their versions.

    flow run build-wethink [--set key=value ...] [--dataset NAME]
    flow recipes | flow datasets
    flow versions wethink
    flow sql "SELECT answer_type, count(*) FROM questions GROUP BY 1" --dataset wethink
    flow diff wethink 1 2
    flow show wethink <question_id>

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
def versions(dataset: str = typer.Argument(..., help="dataset name"), format: Format = FORMAT, output: Optional[Path] = OUTPUT):
    """List a dataset's versions (DuckLake snapshots), oldest first."""
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
