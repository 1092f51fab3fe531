"""The `flow` command on a built dataset: tables for people, json/csv/parquet for scripts, clear errors."""

import csv
import io
import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from flows.cli import app

pytestmark = pytest.mark.slow


@pytest.fixture
def flow(built, monkeypatch):
    monkeypatch.setenv("THINKMILL_HOME", str(built["home"]))
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, list(args), catch_exceptions=True)

    return invoke


def test_versions_lists_both_versions_as_json(flow):
    result = flow("versions", "wethink", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["version"] for r in rows] == [1, 2]
    assert rows[0]["recipe"] == "build-wethink" and rows[0]["rows_added"] > 0


def test_sql_answers_in_every_format(flow, tmp_path):
    query = "SELECT answer_type, count(*) AS n FROM questions GROUP BY 1 ORDER BY 1"
    as_json = json.loads(flow("sql", query, "--dataset", "wethink", "--format", "json").output)
    assert {r["answer_type"] for r in as_json} <= {"mc", "fib", "num", "des"} and sum(r["n"] for r in as_json) > 0
    as_csv = list(csv.DictReader(io.StringIO(flow("sql", query, "-d", "wethink", "-f", "csv").output)))
    assert [int(r["n"]) for r in as_csv] == [r["n"] for r in as_json]
    out = tmp_path / "q.parquet"
    assert flow("sql", query, "-d", "wethink", "-f", "parquet", "-o", str(out)).exit_code == 0
    assert pq.read_table(out).to_pylist() == as_json
    table = flow("sql", query, "-d", "wethink").output
    assert "answer_type" in table and f"{len(as_json)} rows" in table


def test_time_travel_through_sql(flow):
    def count(version):
        output = flow("sql", f"SELECT count(*) AS n FROM policies AT (VERSION => {version})", "-d", "wethink", "-f", "json").output
        return json.loads(output)[0]["n"]

    assert (count(1), count(2)) == (1, 2)


def test_sql_refuses_writes_with_a_clear_message(flow):
    for statement in ["DELETE FROM questions", "ATTACH 'x.db' AS x", "DROP TABLE assets"]:
        result = flow("sql", statement, "--dataset", "wethink")
        assert result.exit_code != 0
        assert "read-only" in str(result.exception)


def test_diff_counts_rows_per_table(flow):
    rows = {r["table"]: r for r in json.loads(flow("diff", "wethink", "1", "2", "-f", "json").output)}
    assert rows["assets"] == {"table": "assets", "added": 0, "removed": 0, "changed": 0}
    assert rows["policies"]["added"] == 1 and rows["difficulty"]["changed"] > 0
    listed = json.loads(flow("diff", "wethink", "1", "2", "--rows", "-f", "json").output)
    assert sum(1 for r in listed if r["table"] == "policies" and r["change"] == "added") == 1


def test_show_gathers_one_question(flow, built):
    from stores.lake import Lake

    with Lake.open(built["root"], read_only=True) as lake:
        question_id = lake.sql("SELECT question_id FROM difficulty WHERE method = 'group_stats' LIMIT 1").to_pylist()[0]["question_id"]
    record = json.loads(flow("show", "wethink", question_id[:20], "-f", "json").output)
    assert record["question"]["question_id"] == question_id
    assert record["assets"][0]["path"].endswith((".png", ".jpg")) and record["captions"] and record["cots"]
    assert {c["kind"] for c in record["cots"]} == {"raw", "refined"} and record["verdicts"][0]["passed"]
    policies = {d["policy_id"] for d in record["difficulty"]}
    assert len(policies) == 3 and "tiny-llava@" in " ".join(policies)  # the base, and one GRPO policy per version
    people = flow("show", "wethink", question_id)
    assert people.exit_code == 0 and "answer:" in people.output and "CoT · refined" in people.output


def test_errors_name_what_exists(flow):
    assert "versions are: 1, 2" in str(flow("diff", "wethink", "1", "9").exception)
    assert "wethink" in str(flow("versions", "nope").exception)
    assert "give more of the id" in str(flow("show", "wethink", "question-").exception)
    result = flow("run", "build-wethnik")
    assert "Did you mean 'build-wethink'" in str(result.exception)
    result = flow("run", "build-wethink", "--set", "caption.style=[coarse]")
    assert "caption.styles" in str(result.exception)


def test_recipes_lists_build_wethink(flow):
    rows = json.loads(flow("recipes", "-f", "json").output)
    assert "build-wethink" in [r["recipe"] for r in rows]


def test_cache_stats_and_invalidate_by_prompt_version(flow):
    stats = json.loads(flow("cache", "stats", "wethink", "-f", "json").output)
    assert stats["n_calls"] > 0 and "caption.fine" in stats["by_task"]
    (version,) = [v for v in stats["by_prompt_version"] if v.startswith("caption")]
    result = flow("cache", "invalidate", "wethink", "--prompt-version", version)
    assert result.exit_code == 0 and f"forgot {stats['by_prompt_version'][version]} calls" in result.output
    after = json.loads(flow("cache", "stats", "wethink", "-f", "json").output)
    assert version not in after["by_prompt_version"] and after["n_calls"] == stats["n_calls"] - stats["by_prompt_version"][version]
    assert flow("cache", "invalidate", "wethink").exit_code != 0  # no filter: refused
