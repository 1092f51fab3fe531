"""Reward cores and the TRL wrapper (pipelines/rewards.py)."""

import inspect

import pytest

from pipelines.rewards import (
    WEIGHTS,
    accuracy_reward,
    completion_text,
    format_reward,
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
    with pytest.raises(ValueError, match="unknown reward kind 'iou'; known: format, accuracy, hybrid_wethink, hfrrf"):
        trl_reward("iou")


def test_trl_reward_missing_columns_say_which():
    with pytest.raises(ValueError, match="needs dataset columns solution, answer_type; missing: answer_type"):
        trl_reward("accuracy")(["q"], [GOOD], solution=["3"])
    assert trl_reward("format")(["q"], [GOOD]) == [1.0]  # format needs no columns


def test_completion_text_forms():
    assert completion_text("plain") == "plain"
    assert completion_text(as_chat("chat")) == "chat"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]) == "ab"
    assert completion_text([{"role": "assistant", "content": None}]) == ""
