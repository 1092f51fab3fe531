"""synthesize_qa: WeThink's write → rule-check → validity-check → two-answerer agreement, with a reject per dropped candidate."""

import json

import pyarrow.compute as pc
import pytest

from pipelines.engines.base import Response, images_of, text_of
from pipelines.stage import account, kept_ids
from pipelines.stages.synthesize_qa import synthesize_qa
from pipelines.wethink import PROMPT_VERSION
from pipelines.world import invalid_items, knowledge_of, qa_items, scene_from_json, world_from_json
from schemas import make_id
from tests.stages.fixtures import (
    Counting,
    FakeEngine,
    Roles,
    attempt,
    context,
    failing,
    ingest_clips,
    ingest_scenes,
    items_of,
    scene_of,
    scripted,
    teacher,
    teachers,
    true_captions,
)

ALL = 20  # more than any scene has: the writer proposes every item it knows


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("dataset")


@pytest.fixture(scope="module")
def assets(root):
    return ingest_scenes(root, scenes=4)  # one scene of each family


@pytest.fixture(scope="module")
def captions(root, assets):
    return true_captions(context("caption", root), assets)


def run(assets, captions, root, engines, **params):
    params.setdefault("detail_rounds", 0)  # these tests are about writing and filtering; detail mining has its own
    result = synthesize_qa(assets, captions, context("synthesize_qa", root, engines), **params)
    return result, account(synthesize_qa, assets, result)


def question_id(asset: dict, question: str) -> str:
    return make_id("question", [asset["asset_id"]], question)


def rejects_of(result) -> dict[str, tuple[str, str]]:
    """subject_id -> (reason, input_id)"""
    r = result.rejects.to_pylist()
    return {x["subject_id"]: (x["reason"], x["input_id"]) for x in r}


def item_json(item) -> dict:
    return {"question": item.question, "answer": item.answer, "answer_type": item.answer_type,
            "choices": list(item.choices), "abilities": list(item.abilities), "category": item.category}


def writer(propose) -> FakeEngine:
    """A reasoner that writes `propose(scene)` (a list of dicts) as its candidates and otherwise is the perfect teacher."""
    oracle = teacher()

    def reply(request):
        if request.task == "synthesize_qa.write":
            questions = propose(world_from_json(request.hints["scene"]))
            return "```json\n" + json.dumps({"questions": questions}) + "\n```"
        (response,) = oracle.generate([request])
        return response

    return FakeEngine(reply, model="writer")


def test_noiseless_teachers_keep_exactly_the_worlds_multi_ability_items_with_their_true_answers(assets, captions, root):
    result, counts = run(assets, captions, root, teachers(root), questions_per_image=ALL)
    assert (counts.n_in, counts.n_out, counts.n_rejected) == (4, 4, 0)
    kept = {(r["asset_ids"][0], r["question"]): r for r in result.out.to_pylist()}
    expected_rejects = {}
    for asset in assets.to_pylist():
        for item in qa_items(scene_of(asset)):
            key = (asset["asset_id"], item.question)
            if len(item.abilities) < 2:
                assert key not in kept
                expected_rejects[question_id(asset, item.question)] = ("synthesize_qa.too_few_abilities", asset["asset_id"])
                continue
            row = kept.pop(key)
            assert (row["answer"], row["answer_type"], row["choices"], row["abilities"], row["category"]) == \
                   (item.answer, item.answer_type, list(item.choices), list(item.abilities), item.category)
            assert row["question_id"] == question_id(asset, item.question)
            assert row["reward_route"] == ("model" if item.answer_type == "des" else "rule")
            assert (row["generator"], row["model"], row["prompt_version"]) == ("scripted-teacher", "scripted-teacher", PROMPT_VERSION)
    assert kept == {}
    # The world has one single-ability item per shapes scene ("How many shapes are there in total?").
    assert len(expected_rejects) >= 3 and rejects_of(result) == expected_rejects
    assert "combines 1 abilities ['counting']; needs 2" in result.rejects["detail"].to_pylist()
    assert all(d.startswith("combines 1 abilities [") for d in result.rejects["detail"].to_pylist())
    assert all(json.loads(raw)["question"] for raw in result.rejects["raw"].to_pylist())
    # Sub-item rejects: the candidate is refused, its image is kept.
    assert kept_ids(synthesize_qa, assets, result) == assets["asset_id"].to_pylist()


def test_min_abilities_one_keeps_every_item_the_world_knows(assets, captions, root):
    result, counts = run(assets, captions, root, teachers(root), questions_per_image=ALL, min_abilities=1)
    n_items = sum(len(qa_items(scene_of(a))) for a in assets.to_pylist())
    assert result.out.num_rows == n_items and result.rejects.num_rows == 0 and counts.n_out == 4


def test_question_ids_are_stable_across_calls_and_differ_per_image(assets, captions, root):
    first, _ = run(assets, captions, root, teachers(root))
    again, _ = run(assets, captions, root, teachers(root))
    assert first.out["question_id"].to_pylist() == again.out["question_id"].to_pylist()
    assert first.out.num_rows > 0
    assert len(set(first.out["question_id"].to_pylist())) == first.out.num_rows


def test_unrequested_answer_types_are_dropped_before_any_check(assets, captions, root):
    judge = Counting(teacher())
    engines = Roles(reasoner=teacher(), captioner=teacher(), judge=judge)
    result, counts = run(assets, captions, root, engines, questions_per_image=ALL, answer_types=["num"], min_abilities=1)
    assert set(result.out["answer_type"].to_pylist()) == {"num"}
    reasons = rejects_of(result)
    for asset in assets.to_pylist():
        for item in qa_items(scene_of(asset)):
            if item.answer_type != "num":
                assert reasons[question_id(asset, item.question)] == ("synthesize_qa.type_not_requested", asset["asset_id"])
    details = set(result.rejects["detail"].to_pylist())
    assert "answer type 'mc' is not one of ['num']" in details and "answer type 'des' is not one of ['num']" in details
    assert len(judge.requests) == result.out.num_rows  # only the survivors were checked (no des: no judge grading)
    assert counts.n_out == 4


def test_an_image_none_of_whose_candidates_survive_is_rejected_through_its_candidates(assets, captions, root):
    result, counts = run(assets, captions, root, teachers(root), questions_per_image=ALL, answer_types=["num"], min_abilities=4)
    assert result.out.num_rows == 0
    assert (counts.n_in, counts.n_out, counts.n_rejected) == (4, 0, 4)
    assert set(result.rejects["input_id"].to_pylist()) == set(assets["asset_id"].to_pylist())
    assert not set(result.rejects["subject_id"].to_pylist()) & set(assets["asset_id"].to_pylist())  # no reject names an image
    assert sum(counts.by_reason.values()) == 4
    assert set(counts.by_reason) <= {"synthesize_qa.type_not_requested", "synthesize_qa.too_few_abilities"}


def test_malformed_writing_is_retried_exactly_max_retries_times_then_rejected_with_the_raw_output(assets, captions, root):
    reasoner = Counting(teacher(malformed=1))
    result, counts = run(assets, captions, root, Roles(reasoner=reasoner, captioner=teacher(), judge=teacher()), max_retries=2)
    writes = [r for r in reasoner.requests if r.task == "synthesize_qa.write"]
    assert sorted(attempt(r) for r in writes) == [0] * 4 + [1] * 4 + [2] * 4
    assert (counts.n_out, counts.n_rejected, counts.by_reason) == (0, 4, {"synthesize_qa.malformed_output": 4})
    for reject in result.rejects.to_pylist():
        assert reject["subject_id"] == reject["input_id"]
        assert reject["raw"] and reject["detail"]
    assert not any(r.task == "synthesize_qa.answer" for r in reasoner.requests)


def test_malformed_noise_through_the_registry_gives_the_same_reject(assets, captions, root):
    result, counts = run(assets, captions, root, teachers(root, reasoner=scripted("bad-writer", malformed=1)))
    assert counts.by_reason == {"synthesize_qa.malformed_output": 4}


def test_invalid_questions_proposed_under_noise_are_rejected_as_ambiguous_by_the_check(assets, captions, root):
    result, counts = run(assets, captions, root, teachers(root, reasoner=scripted("careless", invalid_question=1)),
                         min_abilities=1)
    reasons = rejects_of(result)
    for asset in assets.to_pylist():
        ambiguous = invalid_items(scene_of(asset))[0]
        assert reasons[question_id(asset, ambiguous.question)] == ("synthesize_qa.ambiguous", asset["asset_id"])
        assert [asset["asset_id"]] not in [r["asset_ids"] for r in result.out.to_pylist() if r["question"] == ambiguous.question]
    assert set(reasons.values()) == {("synthesize_qa.ambiguous", a) for a in assets["asset_id"].to_pylist()}
    assert counts.n_out == 4
    raw = json.loads(result.rejects["raw"][0].as_py())  # the check's own verdict
    assert (raw["verifiable"], raw["ambiguous"]) == (True, True)


def test_the_two_check_filter_rejects_unverifiable_and_ambiguous_candidates_and_unknown_ones(assets, captions, root):
    def propose(scene):
        ambiguous, unverifiable = invalid_items(scene)
        return [item_json(qa_items(scene)[0]), item_json(ambiguous), item_json(unverifiable),
                {**item_json(qa_items(scene)[0]), "question": "What did the painter have for breakfast?"}]

    result, counts = run(assets, captions, root, Roles(reasoner=writer(propose), captioner=teacher(), judge=teacher()),
                         min_abilities=1)
    reasons = rejects_of(result)
    for asset in assets.to_pylist():
        scene = scene_of(asset)
        ambiguous, unverifiable = invalid_items(scene)
        assert reasons[question_id(asset, ambiguous.question)] == ("synthesize_qa.ambiguous", asset["asset_id"])
        assert reasons[question_id(asset, unverifiable.question)] == ("synthesize_qa.unverifiable", asset["asset_id"])
        assert reasons[question_id(asset, "What did the painter have for breakfast?")] == \
               ("synthesize_qa.unverifiable", asset["asset_id"])
    assert sorted(result.out["question"].to_pylist()) == sorted(qa_items(scene_of(a))[0].question for a in assets.to_pylist())
    details = set(result.rejects["detail"].to_pylist())
    assert "the question does not match anything in the image" in details
    assert (counts.n_out, counts.n_rejected) == (4, 0)


def test_answers_disagree_when_the_caption_reader_is_wrong_and_the_image_reader_right(assets, captions, root):
    engines = teachers(root, reasoner=scripted("wrong-reasoner", wrong_answer=1), captioner=scripted("right-vlm"))
    result, counts = run(assets, captions, root, engines, questions_per_image=ALL, answer_types=["mc", "fib", "num"])
    assert result.out.num_rows == 0
    assert (counts.n_out, counts.n_rejected) == (0, 4)
    disagree = [r for r in result.rejects.to_pylist() if r["reason"] == "synthesize_qa.answers_disagree"]
    n_candidates = sum(1 for a in assets.to_pylist() for i in qa_items(scene_of(a))
                       if i.answer_type != "des" and len(i.abilities) >= 2)
    assert len(disagree) == n_candidates
    for reject in disagree:
        assert "(differs), from image" in reject["detail"] and reject["detail"].endswith("(agrees)")
        assert reject["raw"].startswith("from caption: <think>") and "\nfrom image: <think>" in reject["raw"]
        assert reject["input_id"] in assets["asset_id"].to_pylist()


def test_answers_disagree_the_other_way_round_too(assets, captions, root):
    engines = teachers(root, reasoner=scripted("right-reasoner"), captioner=scripted("wrong-vlm", wrong_answer=1))
    result, _ = run(assets, captions, root, engines, questions_per_image=ALL, answer_types=["num"])
    details = [r["detail"] for r in result.rejects.to_pylist() if r["reason"] == "synthesize_qa.answers_disagree"]
    assert details and all("(agrees), from image" in d and d.endswith("(differs)") for d in details)


def test_a_reference_both_answerers_reject_is_disputed(assets, captions, root):
    wrong = scripted("wrong-everywhere", wrong_answer=1)
    result, counts = run(assets, captions, root, teachers(root, reasoner=wrong, captioner=wrong),
                         questions_per_image=ALL, answer_types=["mc", "num"])
    assert result.out.num_rows == 0 and counts.n_rejected == 4
    disputed = {r["reason"] for r in result.rejects.to_pylist()} - {"synthesize_qa.type_not_requested",
                                                                     "synthesize_qa.too_few_abilities"}
    assert disputed == {"synthesize_qa.reference_disputed"}


def test_an_asset_without_a_fine_caption_is_rejected_and_the_others_go_on(assets, captions, root):
    first = assets["asset_id"][0].as_py()
    without = captions.filter([not (a == first and s == "fine") for a, s in
                               zip(captions["asset_id"].to_pylist(), captions["style"].to_pylist())])
    result, counts = run(assets, without, root, teachers(root))
    assert rejects_of(result)[first] == ("synthesize_qa.no_caption", first)
    assert counts.n_out == 3 and counts.by_reason == {"synthesize_qa.no_caption": 1}


def test_a_writer_that_cannot_answer_is_an_engine_error_per_image_without_retries(assets, captions, root):
    reasoner = failing("connection refused")
    result, counts = run(assets, captions, root, Roles(reasoner=reasoner, captioner=teacher(), judge=teacher()), max_retries=3)
    assert len(reasoner.requests) == 4
    assert counts.by_reason == {"synthesize_qa.engine_error": 4}
    assert set(result.rejects["detail"].to_pylist()) == {"connection refused"}


def test_a_check_that_never_gives_a_verdict_rejects_the_candidate(assets, captions, root):
    result, counts = run(assets, captions, root, teachers(root, judge=scripted("bad-judge", malformed=1)), min_abilities=1)
    assert set(result.rejects["reason"].to_pylist()) == {"synthesize_qa.check_failed"}
    assert all(d.startswith("the validity check gave no usable verdict: ") for d in result.rejects["detail"].to_pylist())
    assert counts.n_rejected == 4


def test_a_missing_independent_answer_rejects_the_candidate(assets, captions, root):
    oracle = teacher()
    vlm = FakeEngine(lambda r: Response([], "call-x", error="image too large for the server"))
    result, counts = run(assets.slice(0, 1), captions, root, Roles(reasoner=oracle, captioner=vlm, judge=oracle), min_abilities=1)
    assert set(result.rejects["reason"].to_pylist()) == {"synthesize_qa.no_independent_answer"}
    assert result.rejects["detail"][0].as_py() == "from caption: ok; from image: image too large for the server"
    assert counts.by_reason == {"synthesize_qa.no_independent_answer": 1}


def test_rule_checks_name_each_bad_candidate(assets, captions, root):
    def propose(scene):
        good = item_json(next(i for i in qa_items(scene) if i.answer_type == "num" and len(i.abilities) >= 2))
        return [good, good,  # the same question twice
                {**good, "question": "Q1?", "abilities": ["counting", "telepathy"]},
                {**good, "question": "Q2?", "answer": "seven"},
                {**good, "question": "Q3?", "answer_type": "mc", "choices": ["1", "2"], "answer": "C"},
                {**good, "question": "Q4?", "answer_type": "bbox"}]

    asset = assets.to_pylist()[0]
    result, counts = run(assets.slice(0, 1), captions, root, Roles(reasoner=writer(propose), captioner=teacher(), judge=teacher()))
    good = next(i for i in qa_items(scene_of(asset)) if i.answer_type == "num" and len(i.abilities) >= 2)
    assert rejects_of(result) == {
        question_id(asset, good.question): ("synthesize_qa.duplicate_question", asset["asset_id"]),
        question_id(asset, "Q1?"): ("synthesize_qa.unknown_ability", asset["asset_id"]),
        question_id(asset, "Q2?"): ("synthesize_qa.answer_not_numeric", asset["asset_id"]),
        question_id(asset, "Q3?"): ("synthesize_qa.bad_choices", asset["asset_id"]),
        question_id(asset, "Q4?"): ("synthesize_qa.type_not_requested", asset["asset_id"]),
    }
    assert result.out["question"].to_pylist() == [good.question]  # the first copy stands
    assert counts.n_out == 1


def test_a_candidate_that_is_not_an_object_is_malformed_output_not_a_crash(assets, captions, root):
    # Fixed in this change: pydantic gives such an error an empty `loc`, and the message builder
    # indexed it (IndexError out of the stage) instead of asking again.
    reasoner = writer(lambda scene: ["How many red shapes are there?"])
    result, counts = run(assets.slice(0, 1), captions, root, Roles(reasoner=reasoner, captioner=teacher(), judge=teacher()))
    assert counts.by_reason == {"synthesize_qa.malformed_output": 1}
    assert result.rejects["detail"][0].as_py() == "question 0: not an object: Input should be a valid dictionary or instance of Candidate"
    assert "That answer could not be used: question 0: not an object" in reasoner.requests[1].messages[-1]["content"]


def test_the_feedback_for_a_missing_field_names_the_question_by_position(assets, captions, root):
    def propose(scene):
        first, second = (item_json(i) for i in qa_items(scene)[:2])
        del second["answer"]
        return [first, second]

    result, _ = run(assets.slice(0, 1), captions, root, Roles(reasoner=writer(propose), captioner=teacher(), judge=teacher()))
    assert result.rejects["detail"].to_pylist() == ["question 1: field 'answer': Field required"]


def test_des_answers_go_to_the_judge_for_agreement(assets, captions, root):
    judge = Counting(teacher())
    result, _ = run(assets, captions, root, Roles(reasoner=teacher(), captioner=teacher(), judge=judge),
                    questions_per_image=ALL, answer_types=["des"])
    n_des = result.out.num_rows
    assert n_des == sum(1 for a in assets.to_pylist() for i in qa_items(scene_of(a)) if i.answer_type == "des"
                        and len(i.abilities) >= 2)
    assert judge.tasks().count("judge") == 2 * n_des  # one grading per answerer
    assert judge.tasks().count("synthesize_qa.check") == n_des


# ---- detail mining, tie-break, MM-UPT -------------------------------------------------------------

def test_detail_mining_adds_the_vlms_answers_to_what_the_writer_reads(assets, captions, root):
    reasoner, vlm = Counting(teacher()), Counting(teacher())
    run(assets, captions, root, Roles(reasoner=reasoner, captioner=vlm, judge=teacher()), detail_rounds=2)
    asked = [r for r in reasoner.requests if r.task == "synthesize_qa.detail_request"]
    # round 1 for every image; round 2 asks again and is told nothing is missing, so mining stops
    assert len(asked) == 2 * assets.num_rows
    answered = [r for r in vlm.requests if r.task == "synthesize_qa.detail_answer"]
    assert answered and all(r.messages[0]["content"][0]["type"] == "image" for r in answered)
    writes = [r for r in reasoner.requests if r.task == "synthesize_qa.write"]
    for write in writes:
        scene = scene_from_json(write.hints["scene"])
        prompt = write.messages[0]["content"][0]["text"]
        assert "More details, from a second look at the image:" in prompt
        truth = {i.question: i.answer for i in qa_items(scene)}
        section = prompt.split("More details, from a second look at the image:\n", 1)[1].split("\n\n", 1)[0]
        mined = section.splitlines()
        assert mined and all(any(line == f"- {q} {a}." for q, a in truth.items()) for line in mined)


def test_no_detail_rounds_means_no_detail_calls(assets, captions, root):
    reasoner = Counting(teacher())
    run(assets, captions, root, Roles(reasoner=reasoner, captioner=teacher(), judge=teacher()), detail_rounds=0)
    assert "synthesize_qa.detail_request" not in reasoner.tasks()


def test_a_third_model_settles_a_split_and_without_one_the_question_is_dropped(assets, captions, root):
    wrong_reasoner = teachers(root, reasoner=scripted("wrong-reasoner", wrong_answer=1))
    dropped, counts = run(assets, captions, root, wrong_reasoner, questions_per_image=ALL, min_abilities=1, answer_types=["num"])
    reasons = {r["reason"] for r in dropped.rejects.to_pylist()}
    assert dropped.out.num_rows == 0 and "synthesize_qa.answers_disagree" in reasons
    settled, _ = run(assets, captions, root, teachers(root, reasoner=scripted("wrong-reasoner", wrong_answer=1),
                                                      tiebreaker=scripted("third")),
                     questions_per_image=ALL, min_abilities=1, answer_types=["num"])
    n_split = sum(r["reason"] == "synthesize_qa.answers_disagree" for r in dropped.rejects.to_pylist())
    assert settled.out.num_rows == n_split > 0  # every split question is kept once the third model agrees
    for row in settled.out.to_pylist():
        scene = scene_for(assets, row["asset_ids"][0])
        assert row["answer"] == {i.question: i.answer for i in qa_items(scene)}[row["question"]]
    unsettled, _ = run(assets, captions, root, teachers(root, reasoner=scripted("wrong-reasoner", wrong_answer=1),
                                                        tiebreaker=scripted("wrong-third", wrong_answer=1)),
                       questions_per_image=ALL, min_abilities=1, answer_types=["num"])
    assert unsettled.out.num_rows == 0
    assert all("tie-break by" in r["detail"] for r in unsettled.rejects.to_pylist() if r["reason"] == "synthesize_qa.answers_disagree")


@pytest.mark.parametrize("method", ["mmupt_direct", "mmupt_in_context"])
def test_mmupt_questions_are_labelled_by_majority_vote(assets, captions, root, method):
    vlm = Counting(teacher())
    result, counts = run(assets, captions, root, Roles(captioner=vlm), method=method, mmupt_votes=5)
    assert counts.n_in == counts.n_out == assets.num_rows
    written = [r for r in vlm.requests if r.task == "synthesize_qa.mmupt_write"]
    assert all(("example" in r.messages[0]["content"][1]["text"]) == (method == "mmupt_in_context") for r in written)
    assert all(r.n == 5 for r in vlm.requests if r.task == "synthesize_qa.answer")
    for row in result.out.to_pylist():  # a noiseless VLM's majority is the true answer
        scene = scene_for(assets, row["asset_ids"][0])
        assert row["answer"] == {i.question: i.answer for i in qa_items(scene)}[row["question"]].rstrip(".")  # extracted
        assert method in row["generator"] and "majority of 5" in row["generator"]


def test_mmupt_drops_questions_without_a_clear_majority(assets, captions, root):
    noisy = teachers(root, captioner=scripted("noisy-vlm", wrong_answer=0.6))
    result, counts = run(assets, captions, root, noisy, method="mmupt_direct", mmupt_votes=6, mmupt_min_agreement=0.9)
    assert {r["reason"] for r in result.rejects.to_pylist()} == {"synthesize_qa.no_majority"}
    assert all("votes (need 90%)" in r["detail"] for r in result.rejects.to_pylist())
    assert counts.n_in == counts.n_out + counts.n_rejected


def scene_for(assets, asset_id: str):
    return scene_from_json(next(a["scene"] for a in assets.to_pylist() if a["asset_id"] == asset_id))


# ---- videos: one item each, questions over time --------------------------------------------------

@pytest.fixture(scope="module")
def clips(root):
    return ingest_clips(root, clips=3)  # one clip per clip family, 8 frames each


@pytest.fixture(scope="module")
def clip_captions(root, clips):
    return true_captions(context("caption", root), clips)


def test_questions_about_a_video_name_the_video_and_the_vlm_answers_from_its_frames(clips, clip_captions, root):
    vlm = Counting(teacher())
    result, counts = run(clips, clip_captions, root, Roles(reasoner=teacher(), captioner=vlm, judge=teacher()),
                         questions_per_image=ALL)
    assert (counts.n_in, counts.n_out, counts.n_rejected) == (3, 3, 0)  # three videos; their 24 frames are not items
    kept = {(r["asset_ids"][0], r["question"]): r for r in result.out.to_pylist()}
    for video in items_of(clips):
        clip = scene_of(video)
        for item in knowledge_of(clip).qa_items(clip):  # every clip item combines temporal_reasoning with another
            row = kept.pop((video["asset_id"], item.question))
            assert (row["answer"], row["abilities"], row["category"]) == (item.answer, list(item.abilities), clip.family)
            assert "temporal_reasoning" in row["abilities"]
    assert kept == {} and result.rejects.num_rows == 0
    answers = [r for r in vlm.requests if r.task == "synthesize_qa.answer"]
    assert len(answers) == result.out.num_rows and all(len(images_of(r.messages)) == 8 for r in answers)
    assert kept_ids(synthesize_qa, clips, result) == [a["asset_id"] for a in items_of(clips)] + \
        [a["asset_id"] for a in clips.to_pylist() if a["parent_asset_id"] is not None]


def test_temporal_reasoning_is_offered_and_allowed_for_videos_only(assets, captions, clips, clip_captions, root):
    def propose(graph):  # one of the world's own items, claiming temporal reasoning too
        item = next(i for i in knowledge_of(graph).qa_items(graph) if i.answer_type == "num" and len(i.abilities) >= 2)
        return [{**item_json(item), "abilities": sorted({*item.abilities, "temporal_reasoning"})}]

    image, video = assets.slice(0, 1), clips.filter(pc.equal(clips["source_ref"], items_of(clips)[0]["source_ref"]))
    for asset_rows, asset_captions, allowed in ((image, captions, False), (video, clip_captions, True)):
        reasoner = writer(propose)
        result, counts = run(asset_rows, asset_captions, root, Roles(reasoner=reasoner, captioner=teacher(), judge=teacher()))
        (prompt,) = [text_of(r.messages) for r in reasoner.requests if r.task == "synthesize_qa.write"]
        assert ("temporal_reasoning" in prompt) is allowed
        assert prompt.startswith("You write reasoning questions about " + ("a video" if allowed else "an image"))
        if allowed:
            assert counts.n_out == 1 and "temporal_reasoning" in result.out["abilities"][0].as_py()
        else:
            assert counts.by_reason == {"synthesize_qa.unknown_ability": 1}
            assert "['temporal_reasoning'] are not in the taxonomy" in result.rejects["detail"][0].as_py()
