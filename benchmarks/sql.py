"""Point lookup and version diff on a 1M-row dataset version: the lake vs the same query on raw Parquet.

The lake: a dataset whose `captions` table gets 1,000,000 rows in version 1 (one `Lake.commit`), then
version 2 replaces 1 % of them (same id, new text) and adds 1 % (a second commit: DuckLake marks the
old rows deleted and writes the new ones to a new file). The baseline: each version's rows copied out
once as one plain Parquet file, queried by a bare DuckDB connection (`read_parquet`), i.e. the floor
that the catalog, snapshots and deletion files add to. Queries, as a user runs them:

- point lookup: `flow sql "SELECT * FROM captions WHERE caption_id = '…'"` (`Lake.sql`) on the latest
  version, and `… AT (VERSION => 1)` (time travel), vs the same WHERE on the raw file of that version;
- version diff: `flow diff --table captions --rows` (`Lake.diff(1, 2, tables=["captions"])`: one SQL
  join over the two snapshots) vs the same join (`stores.lake.diff_sql`) over the two raw files.

Each figure is the median of `--repeats` timings in one process (the first, cold, run is dropped).
Target: every ratio ≤ 1.5×.

    python benchmarks/sql.py [--rows 1000000] [--repeats 15]
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas import TABLES
from stores.extensions import connect
from stores.lake import Lake, diff_sql

TARGET = 1.5


def caption_rows(ids: np.ndarray, texts: list[str], run_id: str) -> pa.Table:
    n = len(ids)
    columns = {
        "caption_id": pa.array(ids), "asset_id": pa.array([f"asset-{i % 50_000:06d}" for i in range(n)]),
        "style": pa.array(["fine"] * n), "text": pa.array(texts), "model": pa.array(["scripted-teacher"] * n),
        "run_id": pa.array([run_id] * n), "stage": pa.array(["caption"] * n), "stage_version": pa.array([1] * n),
        "config_hash": pa.array(["bench"] * n),
        "row_hash": pa.array([f"{hash(t) & 0xFFFFFFFFFFFF:012x}" for t in texts]),
    }
    schema = TABLES["captions"].schema
    return pa.table({name: columns.get(name, pa.nulls(n, schema.field(name).type)) for name in schema.names}).cast(schema)


def random_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """Content-address-like ids: 64 hex digits, uniformly random (no order a min/max index could use)."""
    return np.array([bytes(row).hex() for row in rng.integers(0, 256, (n, 32), dtype=np.uint8)])


def build(root: Path, n_rows: int) -> tuple[list[str], float]:
    """Versions 1 and 2 of the dataset through the Lake API; returns ids to look up and the build time."""
    rng = np.random.default_rng(0)
    ids = random_ids(rng, n_rows)
    texts = [f"a {c} shape left of a {d} one, {i} in all" for i, (c, d) in
             enumerate(zip(rng.choice(["red", "blue", "green"], n_rows), rng.choice(["square", "circle"], n_rows)))]
    started = time.perf_counter()
    with Lake.open(root, create=True) as lake:
        lake.commit({"captions": caption_rows(ids, texts, "bench-1")}, run_id="bench-1", recipe="bench-sql",
                    config_hash="bench", config={})
        changed = rng.choice(n_rows, n_rows // 100, replace=False)
        added = random_ids(rng, n_rows // 100)
        update_ids = np.concatenate([ids[changed], added])
        update_texts = [texts[i] + " (recaptioned)" for i in changed] + [f"new caption {i}" for i in range(len(added))]
        lake.commit({"captions": caption_rows(update_ids, update_texts, "bench-2")}, run_id="bench-2",
                    recipe="bench-sql", config_hash="bench", config={})
    probes = [str(ids[i]) for i in rng.choice(n_rows, 40, replace=False)]
    return probes, time.perf_counter() - started


def export_raw(root: Path, folder: Path) -> dict[int, Path]:
    """Each version's captions as one plain Parquet file, written by DuckDB (as DuckLake writes its own)."""
    files = {}
    with Lake.open(root, read_only=True) as lake:
        for version in (1, 2):
            files[version] = folder / f"captions-v{version}.parquet"
            rows = lake.table("captions", version=version)
            con = connect()
            con.register("rows", rows)
            con.execute(f"COPY rows TO '{files[version]}' (FORMAT parquet)")
            con.close()
    return files


def median_s(fn, repeats: int) -> float:
    fn()  # cold: file metadata, catalog queries, page cache
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="thinkmill-bench-sql-") as tmp:
        root, raw_folder = Path(tmp, "datasets", "bench"), Path(tmp, "raw")
        raw_folder.mkdir()
        probes, build_s = build(root, args.rows)
        raw = export_raw(root, raw_folder)
        n_files = len(list((root / "data").rglob("*.parquet")))
        print(f"built versions 1 ({args.rows:,} rows) and 2 (1 % changed, 1 % added) through Lake.commit in {build_s:.1f} s; "
              f"{n_files} Parquet files in the lake, raw copies {sum(p.stat().st_size for p in raw.values()) / 1e6:.0f} MB")

        lake = Lake.open(root, read_only=True)
        bare = connect()
        cycle = iter(probes * (args.repeats + 2) * 2)

        def lookup_lake(version=None):
            at = "" if version is None else f" AT (VERSION => {version})"
            probe = next(cycle)
            rows = lake.sql(f"SELECT * FROM captions{at} WHERE caption_id = '{probe}'")
            assert rows.num_rows == 1, probe

        def lookup_raw(version):
            probe = next(cycle)
            rows = bare.execute(f"SELECT * FROM read_parquet('{raw[version]}') WHERE caption_id = '{probe}'").fetchall()
            assert len(rows) == 1, probe

        raw_rows = {v: f"SELECT caption_id AS id, row_hash FROM read_parquet('{raw[v]}')" for v in raw}
        expected = {"added": args.rows // 100, "removed": 0, "changed": args.rows // 100}

        def diff_lake():
            changes = lake.diff(1, 2, tables=["captions"])["captions"]
            assert {k: len(v) for k, v in changes.items()} == expected

        def diff_raw():
            rows = bare.execute(diff_sql(raw_rows[1], raw_rows[2])).fetchall()
            kinds = {"added": 0, "removed": 0, "changed": 0}
            for kind, _ in rows:
                kinds[kind] += 1
            assert kinds == expected

        figures = []
        for label, lake_fn, raw_fn in [
            ("point lookup, latest version", lookup_lake, lambda: lookup_raw(2)),
            ("point lookup, AT (VERSION => 1)", lambda: lookup_lake(1), lambda: lookup_raw(1)),
            ("version diff 1 -> 2", diff_lake, diff_raw),
        ]:
            lake_s, raw_s = median_s(lake_fn, args.repeats), median_s(raw_fn, args.repeats)
            figures.append((label, lake_s, raw_s))
            print(f"{label:<34} lake {lake_s * 1000:8.1f} ms   raw Parquet {raw_s * 1000:8.1f} ms")
        lake.close()
        worst = max(lake_s / raw_s for _, lake_s, raw_s in figures)
        print("sql on a 1M-row version, lake vs raw Parquet: "
              + ", ".join(f"{label} {lake_s / raw_s:.2f}x" for label, lake_s, raw_s in figures)
              + f"; worst {worst:.2f}x (target <= {TARGET}x)")


if __name__ == "__main__":
    main()
