"""rollouts: G scored answers of the policy per question and mode, on the real tiny policy and on scripted policies."""

import re

import pytest

from pipelines.answers import extract_answer, has_think_answer_format
from pipelines.engines.base import Response, images_of
from pipelines.stage import account
from pipelines.stages.rollouts import policy_id_of, rollouts
from pipelines.verification import check_answer
from tests.policy import one_thread
from tests.stages.fixtures import (
    Counting,
    FakeEngine,
    Roles,
    context,
    ingest_scenes,
    registry,
    scripted,
    teacher,
    true_questions,
)

TINY = {"engine": "hf", "model": "local:tiny-llava"}
G = 4
_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)  # the build and generation: 1 torch thread


# ---- the real tiny policy -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset")
    assets = ingest_scenes(root, scenes=3, families=["counting", "bar_chart", "arithmetic"])
    questions = true_questions(context("synthesize_qa", root), assets, types=("mc", "num", "fib"), per_asset=2)
    return root, assets, questions


@pytest.fixture(scope="module")
def sampled(world):
    root, assets, questions = world
    engines = registry(root, policy=TINY, judge=scripted())  # the policy is built once per machine (THINKMILL_MODELS)
    result = rollouts(questions, assets, context("rollouts", root, engines), group_size=G)
    return result, account(rollouts, questions, result)


def test_every_question_gets_a_group_of_g_with_the_image_and_g_without(world, sampled):
    _, _, questions = world
    result, counts = sampled
    assert (counts.n_in, counts.n_out, counts.n_rejected) == (6, 6, 0)
    rows = result.out.to_pylist()
    assert len(rows) == 6 * 2 * G
    for question_id in questions["question_id"].to_pylist():
        for mode in (True, False):
            group = [r for r in rows if r["question_id"] == question_id and r["with_image"] is mode]
            assert sorted(r["sample_index"] for r in group) == list(range(G))
            assert len({r["group_id"] for r in group}) == 1
    assert len({r["group_id"] for r in rows}) == 12  # one per (question, mode)
    assert len({r["rollout_id"] for r in rows}) == len(rows)


def test_rows_name_a_content_addressed_policy(sampled):
    result, _ = sampled
    (policy_id,) = set(result.out["policy_id"].to_pylist())
    assert re.fullmatch(r"tiny-llava@[0-9a-f]{12}", policy_id)
    row = result.out.to_pylist()[0]
    assert policy_id == f"tiny-llava@{row['model_revision'][:12]}"
    assert row["call_id"].startswith("call-") and row["prompt_version"] == "policy-v1"


def test_each_response_is_scored_consistently_with_its_extracted_answer(world, sampled):
    _, _, questions = world
    result, _ = sampled
    by_id = {q["question_id"]: q for q in questions.to_pylist()}
    for row in result.out.to_pylist():
        q = by_id[row["question_id"]]
        assert row["extracted"] == extract_answer(row["response"])
        check = check_answer(row["extracted"], q["answer"], q["answer_type"], choices=tuple(q["choices"]))
        assert row["correct"] == (row["extracted"] is not None and check.passed)
        assert row["format_ok"] == has_think_answer_format(row["response"])
        assert 0.0 <= row["reward"] <= 1.0
        assert row["reward"] == pytest.approx(0.7 * row["correct"] + 0.3 * row["format_ok"])  # WeThink's weights
    # The cold-started policy often keeps the format (about 60 % here): one that never did would be a broken build.
    assert sum(result.out["format_ok"].to_pylist()) > result.out.num_rows / 4


def test_the_same_call_samples_the_same_answers(world, sampled):
    root, assets, questions = world
    result, _ = sampled
    engines = registry(root, policy=TINY, judge=scripted())
    again = rollouts(questions.slice(0, 1), assets, context("rollouts", root, engines), group_size=G, with_image=[True])
    assert account(rollouts, questions.slice(0, 1), again).n_out == 1
    first = [r for r in result.out.to_pylist() if r["question_id"] == questions["question_id"][0].as_py() and r["with_image"]]
    assert again.out["rollout_id"].to_pylist() == [r["rollout_id"] for r in first]
    assert set(again.out["with_image"].to_pylist()) == {True}


def test_a_missing_image_file_rejects_its_questions_and_the_others_still_get_rows(tmp_path):
    assets = ingest_scenes(tmp_path, scenes=2, families=["counting", "bar_chart"])
    questions = true_questions(context("synthesize_qa", tmp_path), assets, types=("num",), per_asset=1)
    gone = assets.to_pylist()[0]
    (tmp_path / gone["media_uri"]).unlink()
    result = rollouts(questions, assets, context("rollouts", tmp_path, registry(tmp_path, policy=TINY, judge=scripted())),
                      group_size=2)
    counts = account(rollouts, questions, result)
    (reject,) = result.rejects.to_pylist()
    orphan = next(q for q in questions.to_pylist() if q["asset_ids"] == [gone["asset_id"]])
    assert (reject["subject_id"], reject["reason"]) == (orphan["question_id"], "rollouts.engine_error")
    assert gone["media_uri"].split("/")[-1] in reject["detail"]
    assert (counts.n_out, counts.n_rejected) == (1, 1)
    assert result.out.num_rows == 2 * 2 and orphan["question_id"] not in result.out["question_id"].to_pylist()


# ---- scripted policies: exact rewards -----------------------------------------------------------

QUESTIONS = [
    {"question_id": "q-num", "question": "How many shapes are there?", "answer": "12", "answer_type": "num", "choices": []},
    {"question_id": "q-mc", "question": "Which colour?", "answer": "B", "answer_type": "mc", "choices": ["red", "blue"]},
    {"question_id": "q-des", "question": "Where is the red circle?", "answer": "The red circle is in the upper left.",
     "answer_type": "des", "choices": []},
]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    return root, ingest_scenes(root, scenes=1, families=["counting"])


def questions_for(ctx, asset_id, ids=None, asset_ids=None):
    return ctx.rows("questions", [{"asset_ids": asset_ids or [asset_id], "category": "counting", "abilities": ["counting"],
                                   "reward_route": "model" if q["answer_type"] == "des" else "rule", "generator": "g", **q}
                                  for q in QUESTIONS if ids is None or q["question_id"] in ids])


def policy(texts: list[str], model="/models/tiny-llava-0123456789ab", revision="f" * 64) -> FakeEngine:
    return FakeEngine(lambda request: texts[: request.n], model=model, revision=revision)


def run_with(small, engine, judge=None, ids=None, **params):
    root, assets = small
    ctx = context("rollouts", root, Roles(policy=engine, judge=judge or teacher()))
    questions = questions_for(ctx, assets["asset_id"][0].as_py(), ids)
    result = rollouts(questions, assets, ctx, **params)
    return result, account(rollouts, questions, result)


def test_rewards_are_accuracy_and_format_weighted_by_the_preset(small):
    texts = ["<think>count</think><answer>12</answer>", "I counted.\nThe answer is 12.",
             "<think>count</think><answer>13</answer>", "I give up."]
    result, counts = run_with(small, policy(texts), ids={"q-num"}, group_size=4, with_image=[True])
    assert counts.n_out == 1
    rows = sorted(result.out.to_pylist(), key=lambda r: r["sample_index"])
    assert [r["extracted"] for r in rows] == ["12", "12", "13", None]
    assert [r["correct"] for r in rows] == [True, True, False, False]
    assert [r["format_ok"] for r in rows] == [True, False, True, False]
    assert [r["reward"] for r in rows] == pytest.approx([1.0, 0.7, 0.3, 0.0])
    result, _ = run_with(small, policy(texts), ids={"q-num"}, group_size=4, with_image=[True], reward="easyr1")
    assert sorted(result.out["reward"].to_pylist()) == pytest.approx([0.0, 0.1, 0.9, 1.0])


def test_one_request_per_mode_with_n_g_and_the_image_only_where_asked(small):
    engine = policy(["<think>x</think><answer>B</answer>"] * 3)
    run_with(small, engine, ids={"q-mc"}, group_size=3, temperature=0.7)
    with_image, without = engine.requests
    assert (with_image.n, with_image.temperature, with_image.task) == (3, 0.7, "rollout")
    assert len(images_of(with_image.messages)) == 1 and images_of(without.messages) == []
    assert with_image.seed != without.seed
    engine_again = policy(["<think>x</think><answer>B</answer>"] * 3)
    run_with(small, engine_again, ids={"q-mc"}, group_size=3, temperature=0.7)
    assert [r.seed for r in engine_again.requests] == [with_image.seed, without.seed]  # seeded by (seed, question, mode)


def test_descriptive_answers_are_scored_by_the_judge_and_degenerate_ones_without_a_call(small):
    judge = Counting(teacher())
    texts = ["<think>x</think><answer>The red circle is in the upper left.</answer>", "<think>x</think><answer>:</answer>",
             "<think>x</think><answer>Nothing useful.</answer>"]
    result, _ = run_with(small, policy(texts), judge=judge, ids={"q-des"}, group_size=3, with_image=[True])
    assert judge.tasks() == ["judge", "judge"]  # ":" scored 0 without asking
    rows = sorted(result.out.to_pylist(), key=lambda r: r["sample_index"])
    assert [r["correct"] for r in rows] == [True, False, False]
    assert [r["reward"] for r in rows] == pytest.approx([1.0, 0.3, 0.3])


def test_an_engine_error_rejects_the_question_and_the_others_still_get_rows(small):
    def reply(request):
        if "Which colour?" in request.messages[-1]["content"][-1]["text"]:
            return Response([], "call-x", error="CUDA out of memory")
        return ["<think>x</think><answer>12</answer>"] * request.n

    result, counts = run_with(small, FakeEngine(reply, model="/m/tiny-llava-0123456789ab", revision="a" * 64),
                              ids={"q-num", "q-mc"}, group_size=2)
    assert [(r["subject_id"], r["reason"], r["detail"]) for r in result.rejects.to_pylist()] == \
           [("q-mc", "rollouts.engine_error", "CUDA out of memory")]
    assert set(result.out["question_id"].to_pylist()) == {"q-num"} and result.out.num_rows == 4
    assert (counts.n_out, counts.n_rejected) == (1, 1)


def test_a_question_whose_asset_is_unknown_is_rejected(small):
    root, assets = small
    ctx = context("rollouts", root, Roles(policy=policy(["<answer>12</answer>"] * 2), judge=teacher()))
    questions = questions_for(ctx, None, {"q-num"}, asset_ids=["asset-nowhere"])
    result = rollouts(questions, assets, ctx, group_size=2)
    assert result.rejects["reason"].to_pylist() == ["rollouts.missing_image"]
    assert result.rejects["detail"].to_pylist() == ["its image asset-nowhere is not in the dataset"]
    assert account(rollouts, questions, result).n_rejected == 1


def test_an_unknown_reward_preset_lists_the_presets(small):
    with pytest.raises(ValueError, match=r"unknown reward preset 'wethinkk'; presets: wethink, easyr1, modomodo, hfrrf"):
        run_with(small, policy([]), reward="wethinkk")


def test_policy_ids_drop_the_build_hash_from_the_folder_name():
    assert policy_id_of(policy([], model="/home/m/tiny-llava-0123456789ab", revision="abcdef0123456789")) == "tiny-llava@abcdef012345"
    assert policy_id_of(policy([], model="Qwen/Qwen2-VL-2B", revision="0" * 40)) == "Qwen2-VL-2B@000000000000"


def test_an_answer_with_leftover_tags_is_not_correct(small):
    texts = ["<think>x</think><answer>98, blue 31, 2.</think><answer>12</answer>"]
    result, _ = run_with(small, policy(texts), ids={"q-num"}, group_size=1, with_image=[True])
    (row,) = result.out.to_pylist()
    assert row["extracted"] in ("12", None)  # the last <answer> is "12"; a tag inside an answer is not an answer
    assert row["correct"] is (row["extracted"] == "12")


def test_a_question_about_a_video_shows_the_policy_one_contact_sheet_of_its_frames(tmp_path):
    from pipelines.video import contact_sheet
    from stores.media import open_image
    from tests.stages.fixtures import ingest_clips, items_of

    clips = ingest_clips(tmp_path, clips=1)
    (video,) = items_of(clips)
    frames = sorted((a for a in clips.to_pylist() if a["parent_asset_id"] == video["asset_id"]), key=lambda a: a["frame_ts"])
    engine = policy(["<think>x</think><answer>3</answer>"] * 2)
    ctx = context("rollouts", tmp_path, Roles(policy=engine, judge=teacher()))
    questions = questions_for(ctx, video["asset_id"], ids={"q-num"})
    result = rollouts(questions, clips, ctx, group_size=2, with_image=[True])
    assert account(rollouts, questions, result).n_out == 1
    (request,) = engine.requests
    (sheet,) = images_of(request.messages)
    stored = open_image(sheet["path"])
    assert sheet["path"].startswith(str(tmp_path / "media")) and stored.size == (288, 288)  # 3x3 tiles of 96 px
    expected = contact_sheet([open_image(tmp_path / f["media_uri"]) for f in frames])
    assert list(stored.getdata()) == list(expected.getdata())
    again = policy(["<think>x</think><answer>3</answer>"] * 2)
    rollouts(questions, clips, context("rollouts", tmp_path, Roles(policy=again, judge=teacher())), group_size=2,
             with_image=[True])
    assert images_of(again.requests[0].messages) == [sheet]  # content-addressed: the same frames, the same file
