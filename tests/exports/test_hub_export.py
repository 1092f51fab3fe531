"""Hub export of a version built by the real flow: every config loads with `datasets`, images are
embedded, shards respect the size limit, the card's metadata matches the lake, and the upload reaches a
loopback Hub (tests/servers/hub_stub.py) with the token in the Authorization header and nowhere else."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard, DatasetCardData
from PIL import Image

from schemas.errors import ExportError
from stores.exports import hub
from stores.lake import Lake
from tests.servers.hub_stub import HubStub

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSION = 2
SMALL_SHARD_BYTES = 60_000  # the built samples hold ~100 kB of images: forces several shards
TOKEN = "hf_thinkmillDummyToken7Qz4Xw9"  # recognisable: a leak anywhere is easy to find


@pytest.fixture(scope="module")
def exported(built, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hub") / "wethink"
    with Lake.open(built["root"], read_only=True) as lake:
        return hub.write_folder(lake, folder, version=VERSION, max_shard_bytes=SMALL_SHARD_BYTES)


def lake_sql(built, query: str) -> list[dict]:
    with Lake.open(built["root"], read_only=True) as lake:
        return lake.sql(query).to_pylist()


def lake_count(built, table: str) -> int:
    return lake_sql(built, f"SELECT count(*) AS n FROM {table} AT (VERSION => {VERSION})")[0]["n"]


def load(folder, config, cache):
    return datasets.load_dataset(str(folder), config, split="train", cache_dir=str(cache))


def test_every_config_loads_with_the_rows_the_version_has(exported, built, tmp_path):
    assert set(exported.configs) == set(hub.CONFIGS)  # every table of the built version has rows
    assert set(datasets.get_dataset_config_names(str(exported.folder))) == set(hub.CONFIGS)
    for name, config in hub.CONFIGS.items():
        loaded = load(exported.folder, name, tmp_path / "cache")
        expected = lake_count(built, config.table or "questions")
        assert loaded.num_rows == expected == exported.configs[name].n_rows, name
    rollouts = load(exported.folder, "rollouts", tmp_path / "cache")
    lake_ids = {r["rollout_id"] for r in lake_sql(built, f"SELECT rollout_id FROM rollouts AT (VERSION => {VERSION})")}
    assert set(rollouts["rollout_id"]) == lake_ids and "row_hash" not in rollouts.column_names


def test_samples_carry_their_image_bytes_not_a_path(exported, built, tmp_path):
    # Elsewhere, with the dataset's media store out of reach, images still decode: the bytes are in the files.
    moved = tmp_path / "moved"
    shutil.copytree(exported.folder, moved)
    samples = load(moved, "samples", tmp_path / "cache")
    assert isinstance(samples.features["image"], datasets.Image)
    sizes = {r["question_id"]: (r["width"], r["height"]) for r in lake_sql(built, f"""
        SELECT q.question_id, a.width, a.height FROM questions q AT (VERSION => {VERSION})
        JOIN assets a AT (VERSION => {VERSION}) ON a.asset_id = q.asset_ids[1]""")}
    for row in samples:
        assert isinstance(row["image"], Image.Image)
        assert row["image"].size == sizes[row["question_id"]]
    media = {r["asset_id"]: (built["root"] / r["media_uri"]).read_bytes()
             for r in lake_sql(built, f"SELECT asset_id, media_uri FROM assets AT (VERSION => {VERSION})")}
    raw = pq.read_table(sorted((moved / "data" / "samples").glob("*.parquet"))).to_pylist()
    assert all(row["image"]["bytes"] == media[row["asset_id"]] for row in raw)


def test_shards_stay_under_the_size_limit_and_are_named_for_the_hub(exported):
    samples = exported.configs["samples"]
    assert len(samples.files) >= 2
    for config in exported.configs.values():
        n = len(config.files)
        assert config.files == [f"data/{config.name}/train-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
        for file in config.files:
            assert (exported.folder / file).stat().st_size <= SMALL_SHARD_BYTES
    assert sorted(p.name for p in (exported.folder / "data").iterdir()) == sorted(exported.configs)
    assert not list(exported.folder.rglob("*.tmp"))


def test_a_row_larger_than_a_shard_is_refused_with_what_to_do(built, tmp_path):
    with Lake.open(built["root"], read_only=True) as lake, pytest.raises(ExportError, match="--max-shard-mb"):
        hub.write_folder(lake, tmp_path / "out", version=VERSION, max_shard_bytes=2_000)
    assert not (tmp_path / "out").exists()  # no half export left for load_dataset to take as whole


def test_card_metadata_loads_and_matches_the_lake(exported, built):
    card = DatasetCard.load(exported.folder / "README.md")
    data = card.data
    assert isinstance(data, DatasetCardData)
    assert data.license == "other"  # no licence given anywhere: never invented
    assert data.size_categories == ["n<1K"] and data.task_categories == ["visual-question-answering"]
    assert data.source_datasets == ["original"]
    configs = {c["config_name"]: c for c in data.configs}
    assert set(configs) == set(exported.configs) and configs["samples"]["default"] is True
    assert configs["rollouts"]["data_files"] == [{"split": "train", "path": "data/rollouts/train-*"}]
    info = {i["config_name"]: i for i in data.dataset_info}
    assert {name: i["splits"][0]["num_examples"] for name, i in info.items()} == {n: c.n_rows for n, c in exported.configs.items()}
    assert {"name": "image", "dtype": "image"} in info["samples"]["features"]

    facts_block = data.thinkmill
    version_row = lake_sql(built, f"SELECT recipe, config_hash FROM versions WHERE version = {VERSION}")[0]
    assert (facts_block["version"], facts_block["recipe"], facts_block["config_hash"]) == (
        VERSION, version_row["recipe"], version_row["config_hash"])
    passed = lake_sql(built, f"SELECT count(*) AS n, count(*) FILTER (WHERE passed) AS p FROM verdicts AT (VERSION => {VERSION})")[0]
    assert (facts_block["verification"]["n"], facts_block["verification"]["n_passed"]) == (passed["n"], passed["p"])
    scored = {(r["policy_id"], r["method"]): r["n"] for r in lake_sql(built, f"""
        SELECT policy_id, method, count(*) AS n FROM difficulty AT (VERSION => {VERSION}) WHERE pass_rate IS NOT NULL GROUP BY ALL""")}
    assert {(h["policy_id"], h["method"]): sum(h["counts"]) for h in facts_block["difficulty"]} == scored
    assert len({policy for policy, _ in scored}) >= 2  # base and GRPO-trained policies: difficulty is per policy
    rejects = {r["reason"]: r["n"] for r in lake_sql(built, f"SELECT reason, count(*) AS n FROM rejects AT (VERSION => {VERSION}) GROUP BY 1")}
    assert facts_block["rejects"] == rejects
    lineage = facts_block["lineage"]
    assert [run["version"] for run in lineage["runs"]] == [1, 2]
    assert "scripted-teacher" in {m["model"] for m in lineage["models"]}
    assert all(not m["model"].startswith("/") for m in lineage["models"])  # no paths of this machine
    assert lineage["stage_versions"]["synthesize_qa"] and "## Verification" in card.text and "## Lineage" in card.text
    # The metadata survives a round trip through the Hub library's own type.
    assert DatasetCardData(**data.to_dict()).to_dict() == data.to_dict()


def test_licence_given_at_export_wins_then_the_recipes(built, tmp_path, monkeypatch):
    with Lake.open(built["root"], read_only=True) as lake:
        given = hub.write_folder(lake, tmp_path / "given", version=1, license="cc-by-4.0", recipe_license="mit")
        from_recipe = hub.write_folder(lake, tmp_path / "recipe", version=1, recipe_license="cc-by-sa-4.0")
    assert DatasetCard.load(given.folder / "README.md").data.license == "cc-by-4.0"
    assert DatasetCard.load(from_recipe.folder / "README.md").data.license == "cc-by-sa-4.0"

    # The CLI reads the recipe file's `license` (configs/ may live elsewhere: THINKMILL_CONFIGS).
    configs = tmp_path / "configs"
    shutil.copytree(REPO_ROOT / "configs", configs)
    recipe = configs / "recipes" / "build-wethink.yaml"
    recipe.write_text(recipe.read_text() + "license: apache-2.0\n")
    result = run_flow(["export", "hub", "--dataset", "wethink", "--version", "1", "--to-folder", str(tmp_path / "cli")],
                      {"THINKMILL_HOME": str(built["home"]), "THINKMILL_CONFIGS": str(configs)})
    assert result.returncode == 0, result.stderr
    assert DatasetCard.load(tmp_path / "cli" / "README.md").data.license == "apache-2.0"


def run_flow(args: list[str], env: dict) -> subprocess.CompletedProcess:
    """The real `flow` command in its own process (what a user runs)."""
    # The session is offline (tests/conftest.py); each of these turns the Hub client offline. HF_ENDPOINT is loopback.
    offline = ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    full_env = {k: v for k, v in os.environ.items() if k not in offline}
    full_env.update(env)
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO_ROOT, env=full_env,
                          capture_output=True, text=True, timeout=300)


def hub_env(built, stub, tmp_path) -> dict:
    return {"THINKMILL_HOME": str(built["home"]), "HF_ENDPOINT": stub.url, "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": TOKEN,
            "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_VERBOSITY": "debug", "HF_DEBUG": "1", "TMPDIR": str(tmp_path / "tmp")}


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_upload_reaches_the_hub_private_with_the_token_only_in_the_header(built, tmp_path):
    (tmp_path / "tmp").mkdir()
    with HubStub(tmp_path / "stub") as stub:
        result = run_flow(["export", "hub", "--dataset", "wethink", "--version", str(VERSION), "--repo", "someone/wethink",
                           "--private", "--max-shard-mb", str(SMALL_SHARD_BYTES / 1e6)], hub_env(built, stub, tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "uploaded to" in result.stdout and "(private)" in result.stdout

    creates = [r for r in stub.requests if r.path == "/api/repos/create"]
    assert len(creates) == 1 and creates[0].body["type"] == "dataset" and creates[0].body["visibility"] == "private"
    assert stub.private == {"datasets/someone/wethink": True}
    commits = [r for r in stub.requests if r.path.endswith("/commit/main")]
    assert len(commits) == 1
    for request in creates + commits:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"

    # What arrived is exactly what the offline export writes.
    offline = tmp_path / "offline"
    assert run_flow(["export", "hub", "--dataset", "wethink", "--version", str(VERSION), "--repo", "someone/wethink",
                     "--to-folder", str(offline), "--max-shard-mb", str(SMALL_SHARD_BYTES / 1e6)],
                    {"THINKMILL_HOME": str(built["home"])}).returncode == 0
    expected = {p.relative_to(offline).as_posix(): p.read_bytes() for p in offline.rglob("*") if p.is_file()}
    assert stub.files("someone/wethink") == expected
    assert len([name for name in expected if name.startswith("data/samples/")]) >= 2

    # The token: in no line we printed or logged (debug logging on), in no file anyone wrote.
    assert "Send: curl" in result.stderr  # huggingface_hub's debug log was on, and was checked
    assert TOKEN not in result.stdout and TOKEN not in result.stderr
    assert files_containing(tmp_path, TOKEN.encode()) == []
    assert files_containing(built["root"], TOKEN.encode()) == []


def test_a_failed_upload_says_why_without_the_token(built, tmp_path):
    (tmp_path / "tmp").mkdir()
    with HubStub(tmp_path / "stub") as stub:
        stub.fail_with_echo = True  # the server echoes the Authorization header in its error
        result = run_flow(["export", "hub", "--dataset", "wethink", "--repo", "someone/wethink"], hub_env(built, stub, tmp_path))
    assert result.returncode == 1
    assert "error: upload to" in result.stderr and "someone/wethink" in result.stderr and "401" in result.stderr
    assert "Bearer ***" in result.stderr  # the echo reached the message, scrubbed
    assert TOKEN not in result.stdout + result.stderr
    assert files_containing(tmp_path, TOKEN.encode()) == []


def test_no_token_says_how_to_log_in(built, tmp_path):
    result = run_flow(["export", "hub", "--dataset", "wethink", "--repo", "someone/wethink"],
                      {"THINKMILL_HOME": str(built["home"]), "HF_HOME": str(tmp_path / "empty-hf-home"),
                       "HF_ENDPOINT": "http://127.0.0.1:9"})
    assert result.returncode == 1
    assert "no Hugging Face token" in result.stderr and "HF_TOKEN" in result.stderr and "--to-folder" in result.stderr


def test_export_refuses_a_folder_with_files_in_it(built, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with Lake.open(built["root"], read_only=True) as lake, pytest.raises(ExportError, match="not empty"):
        hub.write_folder(lake, tmp_path / "full", version=VERSION)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_a_recipe_may_state_its_licence_without_changing_other_recipes_hashes():
    from flows.recipes import load_recipe

    plain = load_recipe("build-wethink")
    assert plain.license is None and "license" not in plain.resolved()  # config hashes of existing runs hold
    stated = load_recipe("build-wethink", ["license=cc-by-4.0"])
    assert stated.license == "cc-by-4.0" and stated.resolved()["license"] == "cc-by-4.0"
    assert stated.config_hash != plain.config_hash
