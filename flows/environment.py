"""Where thinkmill keeps things, and the Prefect settings it needs, set before Prefect is imported.

`THINKMILL_HOME` (default `./.thinkmill`) holds `datasets/<name>/` (catalog, Parquet, media,
staging), `models/` (locally built models) and `prefect/` (Prefect's own database and cached task
results when no Prefect server is configured). Set `PREFECT_API_URL` to use a Prefect server instead
of the ephemeral one each run starts.
"""

import os
from pathlib import Path


def thinkmill_home() -> Path:
    return Path(os.environ.get("THINKMILL_HOME") or Path.cwd() / ".thinkmill").resolve()


def configure_prefect(home: Path) -> None:
    """Defaults only: anything the user set in the environment wins."""
    (home / "prefect" / "results").mkdir(parents=True, exist_ok=True)  # Prefect does not create parents
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(home / "prefect" / "results"))
    # The ephemeral server otherwise tries to send telemetry and logs an error on closed networks.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # The ephemeral server gets 20 s to start by default; on a busy 2-core machine it can need more.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
