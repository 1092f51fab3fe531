"""Reward cores, the registry, and the TRL and EasyR1 wrappers (pipelines/rewards.py)."""

import inspect

import pytest

from pipelines.engines.base import Response
from pipelines.rewards import (
    REWARDS,
    WEIGHTS,
    accuracy_reward,
    boxed_format_reward,
    completion_text,
    easyr1_compute_score,
    format_reward,
    infer_answer_type,
    iou_reward,
    majority_vote_rewards,
    score,
    trl_reward,
)

GOOD = "<think>Three red cubes and one blue.</think>\n<answer>3</answer>"
RIGHT_ANSWER_BAD_FORMAT = "Three red cubes.\n<answer>3</answer>"
WRONG_ANSWER_GOOD_FORMAT = "<think>Four?</think><answer>4</answer>"
NO_ANSWER_GOOD_TAGS = "<think>I cannot tell.</think><answer> </answer>"


# --- format and accuracy -----------------------------------------------------------------------

def test_format_reward():
    assert format_reward(GOOD) == 1.0
    assert format_reward(RIGHT_ANSWER_BAD_FORMAT) == 0.0
    assert format_reward(NO_ANSWER_GOOD_TAGS) == 0.0  # an empty answer is not the format
    assert format_reward("") == 0.0


def test_accuracy_reward_by_type():
    assert accuracy_reward(GOOD, "3", "num") == 1.0
    assert accuracy_reward(GOOD, "3.0", "fib") == 1.0
    assert accuracy_reward("<answer>(C)</answer>", "C", "mc") == 1.0
    assert accuracy_reward("<answer>14 apples</answer>", "C", "mc", choices=["10 apples", "12 apples", "14 apples"]) == 1.0
    assert accuracy_reward(WRONG_ANSWER_GOOD_FORMAT, "3", "num") == 0.0
    assert accuracy_reward(NO_ANSWER_GOOD_TAGS, "3", "num") == 0.0


def test_accuracy_reward_is_not_applicable_to_descriptive_answers():
    assert accuracy_reward("<answer>A dog on a sofa.</answer>", "A dog on a sofa.", "des") is None


def test_accuracy_reward_for_boxes_is_the_iou():
    assert accuracy_reward("<answer>[0, 0, 2, 2]</answer>", "[1, 1, 3, 3]", "bbox") == pytest.approx(1 / 7)


# --- score and its presets ---------------------------------------------------------------------

def test_weight_presets_are_the_papers():
    assert WEIGHTS["wethink"] == (0.7, 0.3)
    assert WEIGHTS["easyr1"] == (0.9, 0.1)
    assert WEIGHTS["modomodo"] == (2.0, 1.0)


@pytest.mark.parametrize(
    "weights, response, overall",
    [
        ("wethink", GOOD, 1.0),
        ("wethink", RIGHT_ANSWER_BAD_FORMAT, 0.7),
        ("wethink", WRONG_ANSWER_GOOD_FORMAT, 0.3),
        ("easyr1", GOOD, 1.0),
        ("easyr1", RIGHT_ANSWER_BAD_FORMAT, 0.9),
        ("easyr1", WRONG_ANSWER_GOOD_FORMAT, 0.1),
        ("modomodo", GOOD, 3.0),
        ("modomodo", RIGHT_ANSWER_BAD_FORMAT, 2.0),
        ("modomodo", WRONG_ANSWER_GOOD_FORMAT, 1.0),
        ("hfrrf", GOOD, 1.0),
        ("hfrrf", RIGHT_ANSWER_BAD_FORMAT, 0.0),   # right answer, bad format: AND fails
        ("hfrrf", WRONG_ANSWER_GOOD_FORMAT, 0.0),
    ],
)
def test_score_overall(weights, response, overall):
    assert score(response, "3", answer_type="num", weights=weights)["overall"] == pytest.approx(overall)


def test_score_reports_its_parts():
    assert score(RIGHT_ANSWER_BAD_FORMAT, "3", answer_type="num") == {"overall": 0.7, "accuracy": 1.0, "format": 0.0}
    assert score(RIGHT_ANSWER_BAD_FORMAT, "3", answer_type="num", weights="hfrrf") == {
        "overall": 0.0, "accuracy": 1.0, "format": 0.0}


def test_modomodo_zeroes_everything_when_no_answer_is_extracted():
    tags_around_nothing = "<think>hmm</think><answer>.</answer>"  # the format check alone would pass
    assert format_reward(tags_around_nothing) == 1.0
    assert score(tags_around_nothing, "3", answer_type="num", weights="modomodo") == {
        "overall": 0.0, "accuracy": 0.0, "format": 0.0}
    assert score(tags_around_nothing, "3", answer_type="num", weights="wethink")["overall"] == 0.3


def test_hfrrf_needs_a_passed_box_not_just_some_overlap():
    response = "<think>the dog</think><answer>[0, 0, 2, 2]</answer>"
    parts = score(response, "[1, 1, 3, 3]", answer_type="bbox", weights="hfrrf")
    assert parts["overall"] == 0.0 and parts["accuracy"] == pytest.approx(1 / 7)
    assert score(response, "[0, 0, 2, 2]", answer_type="bbox", weights="hfrrf")["overall"] == 1.0


def test_hybrid_routes_by_answer_type():
    mc = "<think>the second</think><answer>(B)</answer>"
    fib = "<think>a tower</think><answer>The Eiffel Tower</answer>"
    assert score(mc, "B", answer_type="mc")["overall"] == 1.0
    assert score(fib, "eiffel tower", answer_type="fib")["overall"] == 1.0
    assert score(fib, "B", answer_type="mc")["overall"] == pytest.approx(0.3)


def test_descriptive_answers_take_the_judges_score():
    response = "<think>look</think><answer>A dog sleeps on a red sofa.</answer>"
    assert score(response, "A dog on a sofa.", answer_type="des") == {"overall": None, "accuracy": None, "format": 1.0}
    assert score(response, "A dog on a sofa.", answer_type="des", judge_score=0.5)["overall"] == pytest.approx(0.65)
    assert score(response, "A dog on a sofa.", answer_type="des", judge_score=1.0, weights="hfrrf")["overall"] == 1.0


def test_unknown_weights_list_the_known_ones():
    with pytest.raises(ValueError, match="unknown weights 'r1'; known: wethink, easyr1, modomodo, hfrrf"):
        score(GOOD, "3", answer_type="num", weights="r1")


# --- TRL wrapper -------------------------------------------------------------------------------

def as_chat(text):
    return [{"role": "assistant", "content": text}]


COLUMNS = {
    "solution": ["3", "3", "B", "a dog"],
    "answer_type": ["num", "num", "mc", "des"],
    "choices": [[], None, ["one", "two"], []],
}
COMPLETIONS = [GOOD, RIGHT_ANSWER_BAD_FORMAT, "<think>second</think><answer>two</answer>",
               "<think>look</think><answer>a dog</answer>"]


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("format", [1.0, 0.0, 1.0, 1.0]),
        ("accuracy", [1.0, 1.0, 1.0, None]),
        ("hybrid_wethink", [1.0, 0.7, 1.0, None]),
        ("hfrrf", [1.0, 0.0, 1.0, None]),
    ],
)
def test_trl_reward_kinds(kind, expected):
    reward = trl_reward(kind)
    prompts = ["q"] * 4
    assert reward(prompts, COMPLETIONS, **COLUMNS) == pytest.approx(expected)
    # TRL passes keywords, chats, and extra keys of its own
    chats = [as_chat(text) for text in COMPLETIONS]
    extras = {"completion_ids": [[1]] * 4, "trainer_state": object(), "log_extra": print, "log_metric": print}
    assert reward(prompts=prompts, completions=chats, **COLUMNS, **extras) == pytest.approx(expected)


def test_trl_reward_has_a_name_for_the_logs():
    assert [trl_reward(kind).__name__ for kind in ["format", "accuracy", "hybrid_wethink", "hfrrf"]] == [
        "format_reward", "accuracy_reward", "hybrid_wethink_reward", "hfrrf_reward"]


def test_trl_reward_signature_matches_trl():
    parameters = inspect.signature(trl_reward("format")).parameters
    assert list(parameters) == ["prompts", "completions", "columns"]


def test_trl_reward_unknown_kind_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown reward 'iuo'; known: format, format_boxed, accuracy, iou, "
                                         "hybrid_wethink, hybrid_easyr1, hybrid_modomodo, hfrrf, majority_vote, judge"):
        trl_reward("iuo")


def test_trl_reward_missing_columns_say_which():
    with pytest.raises(ValueError, match="needs dataset columns solution, answer_type; missing: answer_type"):
        trl_reward("accuracy")(["q"], [GOOD], solution=["3"])
    assert trl_reward("format")(["q"], [GOOD]) == [1.0]  # format needs no columns


def test_completion_text_forms():
    assert completion_text("plain") == "plain"
    assert completion_text(as_chat("chat")) == "chat"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]) == "ab"
    assert completion_text([{"role": "assistant", "content": None}]) == ""


# --- the boxed format variant -------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    (r"<think>3 + 4 = 7</think> The answer is \boxed{7}.", 1.0),
    (r"<think>3 + 4</think>\boxed{\frac{7}{1}}", 1.0),              # nested braces balance
    (r"The answer is \boxed{7}.", 0.0),                              # no reasoning block
    (r"<think>so \boxed{7}</think> and then nothing", 0.0),         # the box must come after the reasoning
    (r"<think>x</think> \boxed{ }", 0.0),                            # an empty box is no answer
    (r"<think>x</think> \boxed{7", 0.0),                             # cut off
    (r"<think>a</think><think>b</think> \boxed{7}", 0.0),           # one reasoning block only
    ("<think>x</think><answer>7</answer>", 0.0),                     # the tag format is the other variant
])
def test_boxed_format_reward(text, expected):
    assert boxed_format_reward(text) == expected


def test_the_two_format_variants_disagree_where_they_should():
    tagged, boxed = "<think>x</think><answer>7</answer>", r"<think>x</think> \boxed{7}"
    assert (format_reward(tagged), boxed_format_reward(tagged)) == (1.0, 0.0)
    assert (format_reward(boxed), boxed_format_reward(boxed)) == (0.0, 1.0)
    assert accuracy_reward(boxed, "7", "num") == 1.0  # the answer is read from the box either way


# --- IoU ------------------------------------------------------------------------------------------

def test_iou_reward_on_boxes():
    assert iou_reward("<answer>[10, 10, 20, 20]</answer>", "[10, 10, 20, 20]") == 1.0
    assert iou_reward("<answer>[0, 0, 10, 10]</answer>", "[0, 0, 10, 5]") == pytest.approx(0.5)
    assert iou_reward("<answer>[0, 0, 1, 1]</answer>", "[5, 5, 6, 6]") == 0.0
    assert iou_reward("<answer>[20, 20, 10, 10]</answer>", "[10, 10, 20, 20]") == 0.0  # corners swapped: not a box
    assert iou_reward("<think>left</think>", "[0, 0, 1, 1]") == 0.0                    # no answer at all
    assert iou_reward("<answer>3</answer>", "3", "num") is None                       # not a box question


def test_modomodo_pays_twice_the_iou_plus_the_format():
    box = "<think>the dog</think><answer>[0, 0, 10, 10]</answer>"
    assert score(box, "[0, 0, 10, 5]", answer_type="bbox", weights="modomodo")["overall"] == pytest.approx(2 * 0.5 + 1.0)
    assert score("<think>the dog</think><answer>left</answer>", "[0, 0, 10, 5]", answer_type="bbox",
                 weights="modomodo")["overall"] == pytest.approx(1.0)  # extracted, but not a box: IoU 0, format 1


# --- hybrid routing by reward_route -----------------------------------------------------------------

class CountingJudge:
    """A judge engine (the Engine protocol) that always gives `grade`, and counts its calls."""

    name, model, revision = "test-judge", "judge", "r1"

    def __init__(self, grade: float):
        self.grade, self.calls = grade, 0

    def generate(self, requests):
        self.calls += len(requests)
        return [Response(texts=[f'{{"score": {self.grade}, "reason": "test"}}'], call_id=f"call-{i}") for i, _ in enumerate(requests)]


HYBRID = {"solution": ["7", "7", "a red cube", "7"], "answer_type": ["num", "num", "des", "fib"],
          "reward_route": ["rule", "rule", "model", "model"], "question": ["How many?"] * 4}
HYBRID_TEXTS = ["<think>x</think><answer>7</answer>", "<think>x</think><answer>8</answer>",
                "<think>x</think><answer>a red cube</answer>", "<think>x</think><answer>seven</answer>"]


def test_hybrid_routes_rule_items_to_the_verifiers_and_model_items_to_the_judge():
    judge = CountingJudge(0.5)
    rewards = trl_reward("hybrid_wethink", judge=judge)(["q"] * 4, HYBRID_TEXTS, **HYBRID)
    # rule: right 0.7 + 0.3, wrong 0.3; model: the judge's 0.5 → 0.35 + 0.3, even for the fib item routed to it
    assert rewards == pytest.approx([1.0, 0.3, 0.65, 0.65])
    assert judge.calls == 2


@pytest.mark.parametrize("name, right, wrong", [("hybrid_wethink", 1.0, 0.3), ("hybrid_easyr1", 1.0, 0.1),
                                                ("hybrid_modomodo", 3.0, 1.0)])
def test_hybrid_presets_weigh_rule_items_like_the_papers(name, right, wrong):
    columns = {"solution": ["7", "7"], "answer_type": ["num", "num"], "reward_route": ["rule", "rule"]}
    assert trl_reward(name)(["q", "q"], HYBRID_TEXTS[:2], **columns) == pytest.approx([right, wrong])


def test_hybrid_without_a_judge_leaves_model_routed_items_not_applicable():
    rewards = trl_reward("hybrid_wethink")(["q"] * 4, HYBRID_TEXTS, **HYBRID)
    assert rewards[:2] == pytest.approx([1.0, 0.3]) and rewards[2:] == [None, None]


def test_hybrid_routes_by_answer_type_when_there_is_no_reward_route_column():
    judge = CountingJudge(1.0)
    columns = {k: HYBRID[k] for k in ("solution", "answer_type", "question")}
    assert trl_reward("hybrid_easyr1", judge=judge)(["q"] * 4, HYBRID_TEXTS, **columns) == pytest.approx([1.0, 0.1, 1.0, 1.0])
    assert judge.calls == 1  # only the "des" item


# --- the judge reward ---------------------------------------------------------------------------

def test_judge_reward_scores_descriptive_items_and_skips_the_rest():
    judge = CountingJudge(1.0)
    columns = {"solution": ["a red cube", "7"], "answer_type": ["des", "num"], "question": ["What is left?", "How many?"]}
    assert trl_reward("judge", judge=judge)(["q", "q"], ["<answer>a red cube</answer>", "<answer>7</answer>"], **columns) == [1.0, None]
    assert judge.calls == 1


@pytest.mark.parametrize("degenerate", ["<answer>:</answer>", "<think>Let me solve this</think>", "",
                                        "<answer>Thought process:</answer>", "<answer>What is on the left?</answer>"])
def test_judge_reward_gives_degenerate_answers_zero_without_a_call(degenerate):
    judge = CountingJudge(1.0)  # a judge that would say "correct" to anything
    columns = {"solution": ["a red cube"], "answer_type": ["des"], "question": ["What is on the left?"]}
    assert trl_reward("judge", judge=judge)(["q"], [degenerate], **columns) == [0.0]
    assert judge.calls == 0


# --- MM-UPT's majority vote ------------------------------------------------------------------------

def test_majority_vote_rewards_agreement_with_the_most_frequent_answer():
    group = ["<answer>7</answer>", "<answer>7.0</answer>", "<answer>seven</answer>", "<answer>8</answer>", "<answer>9</answer>"]
    assert majority_vote_rewards(group, "num") == [1.0, 1.0, 1.0, 0.0, 0.0]


def test_majority_vote_guard_never_lets_no_answer_win():
    mostly_silent = ["I am not sure.", "<answer></answer>", "hmm", "<think>…</think>", "<answer>4</answer>", "<answer>5</answer>",
                     "<answer>4</answer>"]
    rewards = majority_vote_rewards(mostly_silent, "num")
    assert rewards == [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0]  # the silent majority gets nothing; "4" wins among answers
    assert majority_vote_rewards(["no idea", "<answer> </answer>"], "num") == [0.0, 0.0]


def test_majority_vote_without_the_guard_rewards_silence_and_warns():
    mostly_silent = ["I am not sure.", "<answer></answer>", "hmm", "<answer>4</answer>", "<answer>4</answer>"]
    with pytest.warns(UserWarning, match="no-answer guard"):
        assert majority_vote_rewards(mostly_silent, "num", no_answer_guard=False) == [1.0, 1.0, 1.0, 0.0, 0.0]
    with pytest.warns(UserWarning, match="no_answer_guard=False"):
        trl_reward("majority_vote", no_answer_guard=False)


def test_majority_vote_in_trl_groups_the_batch_by_question():
    # TRL hands one batch holding several prompts' groups; the same question text over two images must not pool.
    texts = ["<answer>3</answer>", "<answer>3</answer>", "<answer>4</answer>",
             "<answer>4</answer>", "<answer>4</answer>", "<answer>3</answer>"]
    columns = {"question_id": ["q1"] * 3 + ["q2"] * 3, "answer_type": ["num"] * 6}
    assert trl_reward("majority_vote")(["How many?"] * 6, texts, **columns) == [1.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    # Without question ids the prompt decides: one prompt text here, so one group of six ("3" and "4" tie; the first wins).
    assert trl_reward("majority_vote")(["How many?"] * 6, texts, answer_type=["num"] * 6) == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]


def test_majority_vote_uses_no_reference_answer():
    texts = ["<answer>B</answer>", "<answer>(B)</answer>", "<answer>A</answer>"]
    columns = {"question_id": ["q"] * 3, "answer_type": ["mc"] * 3, "solution": ["A"] * 3}
    assert trl_reward("majority_vote")(["q"] * 3, texts, **columns) == [1.0, 1.0, 0.0]  # the majority, even if wrong


# --- EasyR1 wrapper ---------------------------------------------------------------------------------

def test_easyr1_compute_score_sequential_gives_a_dict_of_floats():
    result = easyr1_compute_score({"response": "<think>3 + 4</think><answer>7</answer>", "response_length": 12,
                                   "ground_truth": "7"})
    assert result == {"overall": 1.0, "format": 1.0, "accuracy": 1.0}
    assert all(isinstance(value, float) for value in result.values())


def test_easyr1_compute_score_batch_and_presets():
    inputs = [{"response": "Counting.\nThe answer is B", "response_length": 5, "ground_truth": "B"},
              {"response": "<think>x</think><answer>[0, 0, 10, 10]</answer>", "response_length": 9, "ground_truth": "[0, 0, 10, 5]"},
              {"response": "<think>x</think><answer>8</answer>", "response_length": 8, "ground_truth": "7"}]
    assert easyr1_compute_score(inputs) == [{"overall": 0.9, "format": 0.0, "accuracy": 1.0},
                                            {"overall": pytest.approx(0.55), "format": 1.0, "accuracy": 0.5},
                                            {"overall": 0.1, "format": 1.0, "accuracy": 0.0}]
    assert easyr1_compute_score(inputs[2], preset="hfrrf")["overall"] == 0.0
    assert easyr1_compute_score(inputs[0], preset="wethink")["overall"] == pytest.approx(0.7)


def test_easyr1_compute_score_takes_an_explicit_answer_type_and_refuses_other_shapes():
    text_answer = {"response": "<think>x</think><answer>7</answer>", "response_length": 8, "ground_truth": "seven",
                   "answer_type": "fib"}
    assert easyr1_compute_score(text_answer)["accuracy"] == 1.0
    with pytest.raises(ValueError, match="must be a dict with 'response' and 'ground_truth'"):
        easyr1_compute_score("<answer>7</answer>")


def test_infer_answer_type_from_a_bare_reference():
    assert [infer_answer_type(t) for t in ["C", "[1, 2, 3, 4]", "-3.5", "50%", "a red cube", "c"]] == [
        "mc", "bbox", "num", "num", "fib", "fib"]


# --- the registry -----------------------------------------------------------------------------------

def test_every_registered_reward_has_a_trl_wrapper_named_for_the_logs():
    for name in REWARDS:
        assert trl_reward(name).__name__ == f"{name}_reward"
        assert list(inspect.signature(trl_reward(name)).parameters) == ["prompts", "completions", "columns"]
