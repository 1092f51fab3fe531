"""Checks on a dataset as others see it: is every visible snapshot a whole version, and what does it hold?

`whole_version_problems(lake)` lists what is wrong with any committed snapshot: a snapshot (after the
catalog's creation, snapshot 0) must carry its `versions` row, the run's stage accounting (rows that
say in = kept + rejected), tables whose row counts follow from the versions' own counts, and no id
twice. `contents(lake)` is what two runs must agree on: the ids per content table and the accounting
per stage. `watch(...)` polls a dataset from a separate process while runs write and kill it, and
writes what it saw to a JSON file (the crash-safety tests read it).
"""

import json
import sys
import time
from pathlib import Path

from schemas import RUN_TABLES, TABLES
from stores import catalogs
from stores.lake import Lake

ACCOUNTING_TABLES = ["stage_stats"]  # per-stage counts of each run (the other RUN_TABLES: versions, loop_rounds)


def whole_version_problems(lake: Lake) -> list[str]:
    """Everything wrong with the visible snapshots; empty when each one is a whole version."""
    con = lake._con
    problems = []
    snapshots = [row[0] for row in con.execute("SELECT snapshot_id FROM lake.snapshots() WHERE snapshot_id > 0 ORDER BY 1").fetchall()]
    previous_counts: dict[str, int] = {}
    for snapshot in snapshots:
        at = f"AT (VERSION => {snapshot})"
        present = set(_tables_at(lake, snapshot))
        rows = con.execute(f"SELECT run_id, counts FROM lake.versions {at} WHERE version = ?", [snapshot]).fetchall() \
            if "versions" in present else []
        if len(rows) != 1:
            problems.append(f"snapshot {snapshot}: {len(rows)} versions rows for it, not 1")
            continue
        run_id, counts = rows[0][0], json.loads(rows[0][1])
        for table in ACCOUNTING_TABLES:
            stages = con.execute(f"SELECT stage, n_in, n_out, n_rejected FROM lake.{table} {at} WHERE run_id = ?",
                                 [run_id]).fetchall() if table in present else []
            if not stages:
                problems.append(f"snapshot {snapshot}: no {table} rows for its run {run_id}")
            problems += [f"snapshot {snapshot}: {table} says {stage} took {n_in} but kept {n_out} + rejected {n_rejected}"
                         for stage, n_in, n_out, n_rejected in stages if n_in != n_out + n_rejected]
        for table in sorted(present & set(TABLES) - set(RUN_TABLES)):
            id_column = TABLES[table].id_column
            n_rows, n_ids = con.execute(f"SELECT count(*), count(DISTINCT {id_column}) FROM lake.{table} {at}").fetchone()
            if n_rows != n_ids:
                problems.append(f"snapshot {snapshot}: {table} has {n_rows} rows for {n_ids} ids")
            change = counts.get(table, {"added": 0, "removed": 0})
            expected = previous_counts.get(table, 0) + change["added"] - change["removed"]
            if n_rows != expected:
                problems.append(f"snapshot {snapshot}: {table} has {n_rows} rows; its versions row implies {expected}")
            previous_counts[table] = n_rows
    return problems


def contents(lake: Lake) -> dict:
    """Ids per content table, accounting per stage of the latest run, and the number of versions."""
    con = lake._con
    ids = {table: sorted(r[0] for r in con.execute(f"SELECT {TABLES[table].id_column} FROM lake.{table}").fetchall())
           for table in lake.tables() if table in TABLES and table not in RUN_TABLES}
    versions = lake.versions()
    accounting = {}
    for table in ACCOUNTING_TABLES:
        if versions and table in lake.tables():
            rows = con.execute(f"SELECT step_index, stage, n_in, n_out, n_rejected FROM lake.{table} WHERE run_id = ? "
                               f"ORDER BY step_index", [versions[-1]["run_id"]]).fetchall()
            accounting[table] = [list(row) for row in rows]
    return {"ids": ids, "accounting": accounting, "n_versions": len(versions)}


def _tables_at(lake: Lake, snapshot: int) -> list[str]:
    present = []
    for table in lake.tables():
        try:
            lake._con.execute(f"SELECT 1 FROM lake.{table} AT (VERSION => {snapshot}) LIMIT 0").fetchall()
            present.append(table)
        except Exception:  # noqa: BLE001 (the table did not exist yet at that snapshot)
            pass
    return present


def watch(root: str, stop_file: str, out_file: str, interval_s: str = "0.05") -> None:
    """Poll the dataset at `root` until `stop_file` exists (once more after); write what was seen to `out_file`."""
    seen, problems, errors, polls = set(), [], [], 0
    while True:
        stopping = Path(stop_file).exists()
        if catalogs.exists(Path(root)):
            try:
                with Lake.open(Path(root), read_only=True) as lake:
                    found = whole_version_problems(lake)
                    seen.update(v["version"] for v in lake.versions())
                polls += 1
                problems += [p for p in found if p not in problems]
            except Exception as error:  # noqa: BLE001 (a catalog still being created is not a finding)
                errors.append(f"{type(error).__name__}: {str(error)[:200]}")
        if stopping:
            break
        time.sleep(float(interval_s))
    Path(out_file).write_text(json.dumps({"seen": sorted(seen), "problems": problems, "polls": polls,
                                          "errors": errors[-20:], "n_errors": len(errors)}))


if __name__ == "__main__":
    watch(*sys.argv[1:])
