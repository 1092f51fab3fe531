"""Staging: the Parquet files a stage wrote for one shard, before the run commits them to the lake.

Each (stage, shard cache key) gets a folder `<dataset>/staging/<stage>/<key>/` holding `out.parquet`,
`rejects.parquet`, one `side-<table>.parquet` per side table, and `shard.json` (counts, kept ids,
wall time). The folder appears atomically (written under a temporary name, then renamed), so a
killed run never leaves a half shard that a re-run would trust. Cached task results point here.
"""

import json
import os
import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


class Staging:
    def __init__(self, dataset_root: Path):
        self.root = Path(dataset_root) / "staging"

    def shard_dir(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def has(self, stage: str, key: str) -> bool:
        return (self.shard_dir(stage, key) / "shard.json").exists()

    def write(self, stage: str, key: str, tables: dict[str, pa.Table], meta: dict) -> dict:
        """Write a shard's tables and metadata; return the small JSON reference the task returns."""
        final = self.shard_dir(stage, key)
        if final.exists():  # an identical shard already landed (same key = same inputs)
            return self.reference(stage, key)
        tmp = final.parent / f".{key}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.mkdir(parents=True)
        for name, table in tables.items():
            pq.write_table(table, tmp / f"{name}.parquet", compression="zstd")
        (tmp / "shard.json").write_text(json.dumps({**meta, "tables": sorted(tables)}, sort_keys=True))
        try:
            os.rename(tmp, final)
        except OSError:  # another worker landed the same shard first; theirs is identical
            shutil.rmtree(tmp, ignore_errors=True)
        return self.reference(stage, key)

    def reference(self, stage: str, key: str) -> dict:
        return {"stage": stage, "key": key}

    def read(self, reference: dict) -> tuple[dict[str, pa.Table], dict]:
        folder = self.shard_dir(reference["stage"], reference["key"])
        meta = json.loads((folder / "shard.json").read_text())
        tables = {name: pq.read_table(folder / f"{name}.parquet") for name in meta["tables"]}
        return tables, meta
