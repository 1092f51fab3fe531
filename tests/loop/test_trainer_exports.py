"""Trainer exports of the loop dataset, each read back by the tool it is for: TRL trains a GRPO step
from the TRL files, the EasyR1 Parquet has EasyR1's columns and markers, LLaMA-Factory's sharegpt
JSON round-trips through `datasets` with its images on disk."""

import io
import json

import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from flows.cli import app
from pipelines.answers import extract_answer, has_think_answer_format
from schemas.errors import ExportError, UnknownVersion
from stores.exports.trainers import export_trainer
from stores.lake import Lake

pytestmark = pytest.mark.slow


@pytest.fixture
def lake(looped):
    with Lake.open(looped["root"], read_only=True) as opened:
        yield opened


def selected_ids(sql) -> set[str]:
    return {r["question_id"] for r in sql("SELECT DISTINCT question_id FROM difficulty WHERE selected")}


def test_trl_export_trains_one_grpo_step_in_trl(lake, sql, tmp_path):
    import datasets
    from trl import GRPOConfig, GRPOTrainer

    from pipelines.rewards import trl_reward

    written = export_trainer(lake, tmp_path / "trl", format="trl")
    dataset = datasets.load_dataset("parquet", data_files=written["files"][0], split="train")
    assert set(dataset["question_id"]) == selected_ids(sql) and len(dataset) == written["n_rows"] > 0
    assert isinstance(dataset[0]["images"][0], Image.Image)
    seen = []

    def accuracy(prompts, completions, **columns):  # the exported columns reach the reward functions
        seen.extend(columns["solution"])
        return trl_reward("accuracy")(prompts, completions, **columns)

    (newest,) = sql("SELECT path FROM loop_rounds r JOIN policies p USING (policy_id) WHERE r.round = 2")
    config = GRPOConfig(output_dir=str(tmp_path / "scratch"), max_steps=1, num_generations=2, per_device_train_batch_size=2,
                        max_completion_length=16, use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none",
                        save_strategy="no", logging_steps=1, disable_tqdm=True, dataloader_num_workers=0)
    trainer = GRPOTrainer(model=newest["path"], reward_funcs=[trl_reward("format"), accuracy], args=config, train_dataset=dataset)
    trainer.train()
    assert trainer.state.global_step == 1
    assert "rewards/accuracy/mean" in trainer.state.log_history[0]
    assert seen and set(seen) <= set(dataset["solution"])


def test_easyr1_export_has_exactly_its_columns_and_one_marker_per_image(lake, sql, tmp_path):
    written = export_trainer(lake, tmp_path / "easyr1", format="easyr1")
    table = pq.read_table(tmp_path / "easyr1" / "train.parquet")
    assert table.column_names == ["problem", "answer", "images"]
    answers = {r["question_id"]: r["answer"] for r in sql("SELECT question_id, answer FROM questions")}
    rows = table.to_pylist()
    assert len(rows) == len(selected_ids(sql)) == written["n_rows"]
    assert sorted(r["answer"] for r in rows) == sorted(answers[q] for q in selected_ids(sql))
    for row in rows:
        assert row["problem"].count("<image>") == len(row["images"]) >= 1
        for image in row["images"]:  # embedded bytes, as EasyR1's process_image reads them
            assert Image.open(io.BytesIO(image["bytes"])).size[0] > 0
    assert "{{ content | trim }}" in (tmp_path / "easyr1" / "format_prompt.jinja").read_text()


def test_llamafactory_export_round_trips_through_datasets(lake, sql, tmp_path):
    import datasets

    out = tmp_path / "lf"
    out.mkdir()
    (out / "dataset_info.json").write_text(json.dumps({"someone_elses": {"file_name": "x.json"}}))
    written = export_trainer(lake, out, format="llamafactory")
    info = json.loads((out / "dataset_info.json").read_text())
    name = "thinkmill_loop_v1"
    assert set(info) == {"someone_elses", name}  # the entry is added, the folder's other datasets are kept
    assert info[name]["formatting"] == "sharegpt" and info[name]["columns"]["messages"] == "conversations"
    written_json = json.loads((out / info[name]["file_name"]).read_text())
    loaded = datasets.load_dataset("json", data_files=str(out / info[name]["file_name"]), split="train")
    assert len(loaded) == len(written_json) == written["n_rows"] > 0
    answers: dict[str, set] = {}  # question text -> reference answers (one text can be asked of several images)
    for r in sql("SELECT question, answer FROM questions"):
        answers.setdefault(r["question"], set()).add(r["answer"])
    for row, original in zip(loaded, written_json):
        assert row["conversations"] == original["conversations"] and row["images"] == original["images"]
        human, gpt = row["conversations"]
        assert (human["from"], gpt["from"]) == ("human", "gpt")
        assert human["value"].count("<image>") == len(row["images"]) >= 1
        for path in row["images"]:
            assert Image.open(out / path).size[0] > 0  # resolvable from the dataset_dir
        question = human["value"].replace("<image>", "").split("\n")[0]
        assert has_think_answer_format(gpt["value"]) and extract_answer(gpt["value"]) in answers[question]  # a verified CoT


def test_default_is_the_selection_and_all_is_every_verified_question_never_held_out(lake, sql, tmp_path):
    held_out = {r["question_id"] for r in sql("SELECT question_id FROM splits WHERE split = 'held_out'")}
    verified = {r["question_id"] for r in sql("SELECT DISTINCT question_id FROM verdicts WHERE passed")}
    default = export_trainer(lake, tmp_path / "a", format="trl")
    everything = export_trainer(lake, tmp_path / "b", format="trl", all_questions=True)
    ids = lambda where: set(pq.read_table(where / "train.parquet").column("question_id").to_pylist())  # noqa: E731
    assert ids(tmp_path / "a") == selected_ids(sql) and default["rows"] == "selected items"
    assert ids(tmp_path / "b") == verified - held_out and held_out and not held_out & ids(tmp_path / "b")
    (last,) = sql("SELECT scored_by FROM loop_rounds WHERE round = 2")
    narrowed = export_trainer(lake, tmp_path / "c", format="trl", policy_id=last["scored_by"])
    assert ids(tmp_path / "c") == {r["question_id"] for r in sql(
        f"SELECT question_id FROM difficulty WHERE selected AND policy_id = '{last['scored_by']}'")}
    assert narrowed["n_rows"] <= default["n_rows"]


def test_export_errors_say_what_exists(lake, tmp_path):
    with pytest.raises(UnknownVersion, match="its versions are: 1"):
        export_trainer(lake, tmp_path / "x", format="trl", version=5)
    with pytest.raises(ExportError, match="formats: trl, easyr1, llamafactory. Did you mean 'trl'"):
        export_trainer(lake, tmp_path / "x", format="trll")
    with pytest.raises(ExportError, match="policies: .*tiny-llava@"):
        export_trainer(lake, tmp_path / "x", format="trl", policy_id="nobody@0")
    (tmp_path / "file").write_text("")
    with pytest.raises(ExportError, match="is a file"):
        export_trainer(lake, tmp_path / "file", format="trl")


def test_a_version_without_a_selection_points_to_all(tmp_path):
    import pyarrow as pa

    from schemas import TABLES

    with Lake.open(tmp_path / "bare", create=True) as bare:
        question = {"question_id": "q1", "asset_ids": ["a1"], "question": "How many?", "answer": "2", "answer_type": "num",
                    "choices": [], "category": "counting", "abilities": ["counting"], "reward_route": "rule", "generator": "hand",
                    "run_id": "r", "stage": "hand", "stage_version": 1, "config_hash": "c", "row_hash": "h"}
        bare.commit({"questions": pa.Table.from_pylist([question], schema=TABLES["questions"].schema)},
                    run_id="r", recipe="by-hand", config_hash="c", config={})
        with pytest.raises(ExportError, match="no selected items .* Versions with a selection: none; or export every verified question with --all"):
            export_trainer(bare, tmp_path / "out", format="easyr1")


def test_flow_export_trainer_on_the_command_line(looped, monkeypatch, tmp_path):
    monkeypatch.setenv("THINKMILL_HOME", str(looped["home"]))
    result = CliRunner().invoke(app, ["export", "trainer", "--dataset", "loop", "--format", "llamafactory", "--version", "1",
                                      "--output", str(tmp_path / "lf")])
    assert result.exit_code == 0, result.output
    assert "rows (selected items, version 1) for llamafactory" in result.output and "dataset: thinkmill_loop_v1" in result.output
    result = CliRunner().invoke(app, ["export", "trainer", "-d", "loop", "-f", "verl", "-o", str(tmp_path / "x")])
    assert result.exit_code != 0 and "trl" in result.output and "easyr1" in result.output
