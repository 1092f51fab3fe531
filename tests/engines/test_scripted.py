"""The scripted teacher: the world's oracle, deterministic per call, wrong on purpose at the rates it is told."""

import pytest

from pipelines.answers import extract_answer, parse_json_object
from pipelines.engines import EngineRegistry
from pipelines.engines.base import Request, user
from pipelines.engines.scripted import DEFAULT_NOISE, ScriptedEngine
from pipelines.stages.distill_cot import parse_raw, parse_refined
from pipelines.wethink import parse_candidates, parse_check
from pipelines.structured import ask
from pipelines.world import caption_coarse, caption_fine, invalid_items, make_scene, qa_items, scene_to_json
from tests.stages.fixtures import teacher

SCENES = {family: make_scene(family, 3, size=96) for family in ("counting", "relations", "arithmetic", "bar_chart")}
TASKS = ["bridge_cot.describe", "bridge_cot.pseudo", "bridge_cot.reason", "caption.coarse", "caption.fine", "distill_cot.raw", "distill_cot.refine", "judge", "mcts.judge", "synthesize_qa.answer",
         "synthesize_qa.check", "synthesize_qa.detail_answer", "synthesize_qa.detail_request", "synthesize_qa.mmupt_write",
         "synthesize_qa.write"]


def call(task: str, scene=None, *, text: str = "go", n: int = 1, **hints) -> Request:
    if scene is not None:
        hints["scene"] = scene_to_json(scene)
    return Request(messages=[user(text)], n=n, task=task, hints=hints)


def one(engine, request: Request) -> str:
    (response,) = engine.generate([request])
    assert response.error is None, response.error
    return response.text


def test_captions_are_the_worlds_captions():
    engine = teacher()
    for scene in SCENES.values():
        assert one(engine, call("caption.coarse", scene)) == caption_coarse(scene)
        assert one(engine, call("caption.fine", scene)) == caption_fine(scene)


def test_the_same_request_gets_the_same_texts_from_any_instance():
    scene = SCENES["counting"]
    request = call("synthesize_qa.write", scene, n=4, n_questions=3)
    noisy = dict(malformed=0.5, wrong_answer=0.5, invalid_question=0.5)
    first, again = ScriptedEngine(noise=noisy).generate([request])[0], ScriptedEngine(noise=noisy).generate([request])[0]
    assert first.texts == again.texts and first.call_id == again.call_id
    assert len(first.texts) == 4


def test_hints_are_not_part_of_the_call_id_but_the_messages_are():
    scene = SCENES["counting"]
    a, b = call("caption.fine", scene), call("caption.fine", SCENES["relations"])
    assert a.call_id("scripted", "m", "r") == b.call_id("scripted", "m", "r")  # a real model sees only messages
    assert call("caption.fine", scene, text="other").call_id("scripted", "m", "r") != a.call_id("scripted", "m", "r")


def test_each_sample_of_a_request_draws_its_own_noise():
    scene = SCENES["arithmetic"]
    item = qa_items(scene)[0]
    engine = teacher(wrong_answer=0.5)
    (response,) = engine.generate([call("synthesize_qa.answer", scene, n=24, question=item.question)])
    answers = [extract_answer(t) for t in response.texts]
    right = sum(a == item.answer for a in answers)
    assert 0 < right < 24, answers  # some samples drew "wrong", others did not


def test_noise_zero_answers_are_always_right_and_noise_one_answers_never_are():
    for scene in SCENES.values():
        for item in qa_items(scene):
            reference = extract_answer(f"<answer>{item.answer}</answer>")  # as a stage reads it back
            request = call("synthesize_qa.answer", scene, n=3, question=item.question)
            assert [extract_answer(t) for t in teacher().generate([request])[0].texts] == [reference] * 3
            wrong = [extract_answer(t) for t in teacher(wrong_answer=1).generate([request])[0].texts]
            assert reference not in wrong, (item.question, wrong)


def test_outputs_parse_with_the_stages_own_parsers():
    engine = teacher()
    for scene in SCENES.values():
        items = qa_items(scene)
        written = parse_candidates(one(engine, call("synthesize_qa.write", scene, n_questions=len(items))))
        assert sorted(c.question for c in written) == sorted(i.question for i in items)
        by_question = {i.question: i for i in items}
        for candidate in written:
            expected = by_question[candidate.question]
            assert (candidate.answer, candidate.answer_type, tuple(candidate.choices), tuple(candidate.abilities)) == \
                   (expected.answer, expected.answer_type, expected.choices, expected.abilities)
        item = items[0]
        assert parse_check(one(engine, call("synthesize_qa.check", scene, question=item.question))) == {
            "verifiable": True, "ambiguous": False, "reason": "answerable from the image with one correct answer"}
        assert parse_raw(one(engine, call("distill_cot.raw", scene, question=item.question))) == item.answer
        refined = parse_refined(one(engine, call("distill_cot.refine", scene, question=item.question, final_answer="42")))
        assert extract_answer(refined) == "42"  # the refiner writes toward the answer it is given


def test_the_check_marks_invalid_questions_and_unknown_ones():
    engine = teacher()
    scene = SCENES["bar_chart"]
    ambiguous, unverifiable = invalid_items(scene)
    verdict = parse_check(one(engine, call("synthesize_qa.check", scene, question=ambiguous.question)))
    assert (verdict["verifiable"], verdict["ambiguous"]) == (True, True)
    verdict = parse_check(one(engine, call("synthesize_qa.check", scene, question=unverifiable.question)))
    assert (verdict["verifiable"], verdict["ambiguous"]) == (False, False)
    verdict = parse_check(one(engine, call("synthesize_qa.check", scene, question="What is the capital of France?")))
    assert (verdict["verifiable"], verdict["ambiguous"]) == (False, True)


def test_invalid_question_noise_adds_exactly_one_invalid_candidate():
    scene = SCENES["bar_chart"]
    written = parse_candidates(one(teacher(invalid_question=1), call("synthesize_qa.write", scene, n_questions=2)))
    assert len(written) == 3
    assert written[-1].question == invalid_items(scene)[0].question
    assert not any(c.question == invalid_items(scene)[0].question
                   for c in parse_candidates(one(teacher(), call("synthesize_qa.write", scene, n_questions=2))))


def test_malformed_noise_breaks_every_structured_output_in_each_way_real_models_do():
    engine = teacher(malformed=1)
    scene = SCENES["counting"]
    question = qa_items(scene)[0].question
    errors = []
    for k in range(30):  # vary the call so each kind of breakage turns up
        with pytest.raises(ValueError) as caught:
            parse_candidates(one(engine, call("synthesize_qa.write", scene, text=f"write {k}", n_questions=2)))
        errors.append(str(caught.value))
        with pytest.raises(ValueError):
            parse_check(one(engine, call("synthesize_qa.check", scene, text=f"check {k}", question=question)))
        with pytest.raises(ValueError):
            parse_refined(one(engine, call("distill_cot.refine", scene, text=f"refine {k}", question=question)))
    assert any(e.startswith("no JSON object found") for e in errors)                     # prose
    assert any(e.startswith(("invalid JSON", 'expected {"questions"')) for e in errors)  # truncated
    assert "question 0: field 'answer': Field required" in errors                        # a missing field


def test_a_retry_with_feedback_draws_afresh():
    engine = teacher(malformed=0.5)
    scene = SCENES["relations"]
    requests = [call("synthesize_qa.write", scene, text=f"write {k}", n_questions=2) for k in range(16)]
    once = ask(engine, requests, parse_candidates, max_retries=0)
    retried = ask(engine, requests, parse_candidates, max_retries=4)
    assert 0 < sum(a.ok for a in once) < 16
    assert sum(a.ok for a in retried) > sum(a.ok for a in once)
    assert any(a.ok and a.attempts > 1 for a in retried)


def test_the_judge_checks_facts_then_overlap_and_needs_no_scene():
    engine = teacher()
    reference = "The red circle is to the left of and above the blue square."

    def judged(candidate):
        return parse_json_object(one(engine, call("judge", candidate=candidate, reference=reference)))["score"]

    assert judged(reference) == 1.0
    assert judged("The red circle is to the left.") == 0.5   # right but incomplete
    assert judged("The red square is below.") == 0.0         # states facts the reference does not
    assert judged("Nothing like it at all.") == 0.0


def test_the_judge_fails_a_descriptive_answer_with_one_fact_changed():
    scene = SCENES["counting"]
    item = next(i for i in qa_items(scene) if i.answer_type == "des")
    wrong = extract_answer(one(teacher(wrong_answer=1), call("synthesize_qa.answer", scene, question=item.question)))
    assert wrong != item.answer.rstrip(".")
    verdict = parse_json_object(one(teacher(), call("judge", candidate=wrong, reference=item.answer)))
    assert verdict["score"] < 0.5, (wrong, item.answer, verdict)


def test_an_unknown_task_is_an_error_listing_the_tasks():
    (response,) = teacher().generate([call("caption.poem", SCENES["counting"])])
    assert response.texts == [] and response.text == ""
    assert response.error == f"the scripted teacher has no answer for task 'caption.poem' (it knows: {', '.join(TASKS)})"


def test_a_request_without_a_scene_is_an_error_not_a_guess():
    (response,) = teacher().generate([call("caption.fine")])
    assert response.texts == []
    assert response.error.startswith("the scripted teacher only knows synthetic images (no scene graph")


def test_a_batch_gets_one_response_per_request_in_order_with_usage():
    scene = SCENES["counting"]
    requests = [call("caption.coarse", scene), call("nope", scene), call("caption.fine", scene, n=2)]
    responses = teacher().generate(requests)
    assert [len(r.texts) for r in responses] == [1, 0, 2]
    assert responses[1].error and responses[0].error is None
    assert responses[2].usage == {"prompt_tokens": 1, "completion_tokens": 2 * len(caption_fine(scene).split())}


def test_unknown_noise_kinds_are_refused_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown noise kinds \['malformd'\]; known: \['invalid_question', 'malformed', 'wrong_answer'\]"):
        ScriptedEngine(noise={"malformd": 1})
    assert set(DEFAULT_NOISE) == {"malformed", "wrong_answer", "invalid_question"}


def test_the_registry_builds_it_from_a_profile(tmp_path):
    engines = EngineRegistry({"captioner": {"engine": "scripted", "model": "t1", "noise": {"malformed": 0}}}, home=tmp_path)
    engine = engines.engine("captioner")
    assert (engine.name, engine.model, engine.revision) == ("scripted", "t1", "world-v1")
    assert engine.noise == {**DEFAULT_NOISE, "malformed": 0}
    assert engines.engine("captioner") is engine  # loaded once per profile


# ---- ThinkLite's judge for MCTS solutions ----------------------------------------------------------------------

def mcts_judge(solution: str, reference: str, answer_type: str = "num", choices=(), **noise) -> str:
    (response,) = teacher(**noise).generate([call("mcts.judge", text=f"Question: q\nGround truth answer: {reference}\n{solution}",
                                                  solution=solution, reference=reference, answer_type=answer_type,
                                                  choices=list(choices))])
    assert response.error is None
    return response.text


def test_the_mcts_judge_answers_in_one_sentence_whether_the_final_boxed_answer_is_right():
    right = "### Step1: Count the squares: 3. <end>\n### Final Answer: The answer is: \\boxed{3}."
    wrong = right.replace("boxed{3}", "boxed{4}")
    assert mcts_judge(right, "3") == "The generated answer is true."
    assert mcts_judge(wrong, "3") == "The generated answer is false."
    assert mcts_judge("### Step1: I am not sure. <end>", "3") == "The generated answer is false."  # no final answer
    assert mcts_judge(right.replace("{3}", "{three}"), "3") == "The generated answer is true."  # verifier, not strings
    # multiple choice: the letter, or (open-ended) the option text graded as text
    assert mcts_judge("### Final Answer: The answer is: \\boxed{B}.", "B", "mc", ["red", "blue", "green", "grey"]).endswith("true.")
    assert mcts_judge("### Final Answer: The answer is: \\boxed{blue}.", "blue", "fib").endswith("true.")


def test_the_mcts_judge_is_wrong_and_rambling_at_its_noise_rates():
    right = "### Final Answer: The answer is: \\boxed{3}."
    assert mcts_judge(right, "3", wrong_answer=1.0) == "The generated answer is false."
    rambling = mcts_judge(right, "3", malformed=1.0)
    assert "true" not in rambling.split(".")[0] and rambling.endswith("The generated answer is true.")
