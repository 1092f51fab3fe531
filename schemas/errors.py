"""Every error thinkmill raises on purpose. Bad data and bad model output are rejects, not errors.

ThinkmillError
├── RecipeError          unknown recipe or stage, bad --set key or value (lists what is valid)
├── SchemaMismatch       a table lacks a column a stage reads
├── LakeError
│   ├── UnknownDataset   no catalog under the dataset root (lists the datasets there are)
│   ├── UnknownTable
│   ├── UnknownVersion
│   ├── ReadOnlyLake     a write or ATTACH through `flow sql`
│   ├── CatalogError     a bad catalog spec, or one that contradicts the dataset's
│   └── CommitConflict   other writers kept committing first, past every retry
├── EngineError
│   ├── UnknownEngine
│   ├── EngineUnavailable   a model could not be loaded or reached
│   └── EngineTimeout
├── ExportError          an export that cannot be written or uploaded as asked (says what to do instead)
├── AccountingError      a stage lost or invented items (in != out + rejects): a bug in the stage
└── NoPrefectServer      `flow deploy` / `flow serve` with no Prefect server to talk to (says how to start one)
"""

from difflib import get_close_matches


class ThinkmillError(Exception):
    """Catch this to catch everything thinkmill raises on purpose."""


def did_you_mean(name: str, known) -> str:
    close = get_close_matches(str(name), [str(k) for k in known], n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


class RecipeError(ThinkmillError, ValueError):
    """A recipe, or a --set override, that cannot run. The message lists every problem at once."""

    def __init__(self, where: str, problems: list[str]):
        self.where, self.problems = where, problems
        if len(problems) == 1:
            super().__init__(f"{where}: {problems[0]}")
        else:
            super().__init__(f"{where}: {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems))


class SchemaMismatch(ThinkmillError, ValueError):
    def __init__(self, stage: str, table: str, missing: list[str], present: list[str]):
        super().__init__(
            f"stage {stage!r} reads columns {missing} of table {table!r}, which it does not have "
            f"(it has: {', '.join(present)}). Is an earlier step missing from the recipe?"
        )


class LakeError(ThinkmillError):
    pass


class UnknownDataset(LakeError, LookupError):
    def __init__(self, name: str, root, known: list[str]):
        have = ", ".join(known) if known else "none yet"
        super().__init__(
            f"no dataset {name!r} under {root} (datasets there: {have}). "
            f"Create it with `flow run <recipe> --dataset {name}`, or point THINKMILL_HOME at the right place."
        )


class UnknownTable(LakeError, LookupError):
    def __init__(self, name: str, known: list[str]):
        super().__init__(f"no table {name!r} in this dataset; tables are: {', '.join(known)}.{did_you_mean(name, known)}")


class UnknownVersion(LakeError, LookupError):
    def __init__(self, dataset: str, version, known: list[int]):
        have = ", ".join(map(str, known)) if known else "none yet"
        super().__init__(f"dataset {dataset!r} has no version {version}; its versions are: {have} (see `flow versions {dataset}`)")


class ReadOnlyLake(LakeError, PermissionError):
    def __init__(self, statement: str, why: str):
        super().__init__(
            f"`flow sql` is read-only: {why} ({statement.strip()[:80]!r}). "
            "Datasets change only through recipe runs (`flow run <recipe>`); to copy results out use "
            "`--format csv|json|parquet --output FILE`."
        )


class CatalogError(LakeError, ValueError):
    """A catalog spec that cannot be used: unknown kind, a password in it, or not the dataset's own."""


class CommitConflict(LakeError):
    def __init__(self, dataset: str, attempts: int, last_error: str):
        super().__init__(
            f"could not commit to {dataset!r}: other writers committed first {attempts} times in a row "
            f"(last: {last_error}). Nothing was committed by this run; run it again (its shards and model calls "
            f"are cached, so only the commit is redone)."
        )


class EngineError(ThinkmillError):
    pass


class UnknownEngine(EngineError, LookupError):
    def __init__(self, name: str, known: list[str]):
        super().__init__(f"unknown engine {name!r}; engines are: {', '.join(known)}.{did_you_mean(name, known)}")


class EngineUnavailable(EngineError, ConnectionError):
    pass


class EngineTimeout(EngineError, TimeoutError):
    pass


class AccountingError(ThinkmillError, AssertionError):
    def __init__(self, stage: str, n_in: int, n_out: int, n_rejected: int, lost: list[str]):
        super().__init__(
            f"stage {stage!r} lost track of items: {n_in} in, {n_out} kept + {n_rejected} rejected "
            f"= {n_out + n_rejected}. Items neither kept nor rejected (first 5): {lost[:5]}. This is a bug in the stage."
        )


class ExportError(ThinkmillError, ValueError):
    """An export (trainer files, Hub folder or upload, report page) that cannot be made as asked; says what to do instead."""


class NoPrefectServer(ThinkmillError, ConnectionError):
    def __init__(self, why: str, command: str):
        super().__init__(
            f"`flow {command}` needs a Prefect server: {why}. Start one and point Prefect at it:\n"
            "  prefect server start --host 127.0.0.1 --port 4200 &\n"
            "  export PREFECT_API_URL=http://127.0.0.1:4200/api\n"
            "(`flow run` needs none: it runs a recipe in-process.)"
        )
