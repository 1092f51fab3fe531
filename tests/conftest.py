"""Shared test setup: every test runs against a temporary THINKMILL_HOME, offline."""

import os
import tempfile
from pathlib import Path

import pytest

# Set before anything imports prefect or the hub client.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="thinkmill-tests-"))
os.environ.setdefault("PREFECT_HOME", str(_SESSION_HOME / "prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Locally built models are shared by every test of the session (the tiny policy takes a minute to build).
os.environ.setdefault("THINKMILL_MODELS", str(_SESSION_HOME / "models"))


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh THINKMILL_HOME for one test."""
    monkeypatch.setenv("THINKMILL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"
