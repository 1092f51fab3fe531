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
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # a busy machine starts it slowly
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


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """A small `wethink` dataset built by the real flow: run once, re-run unchanged, re-run with
    `select.rule` changed (so it has versions 1 and 2). Synthetic scenes plus a folder of broken files."""
    from flows.recipe_flow import run
    from stores.lake import dataset_root
    from tests.media_files import write_bad_media

    home = tmp_path_factory.mktemp("home")
    folder = tmp_path_factory.mktemp("uploads")
    expected_rejects = write_bad_media(folder)
    overrides = ["source.synthetic.scenes=12", "rollouts.group_size=6", "rescore.group_size=6", "grpo.max_steps=4",
                 f"source.image_folder.path={folder}"]
    first = run("build-wethink", overrides, home=home)
    again = run("build-wethink", overrides, home=home)
    changed = run("build-wethink", overrides + ["select.rule=easyr1"], home=home)
    return {"home": home, "root": dataset_root(home, "wethink"), "first": first, "again": again, "changed": changed,
            "expected_rejects": expected_rejects}
