"""Answer extraction, response formats, reflection counts and JSON replies (pipelines/answers.py)."""

import pytest

from pipelines.answers import (
    count_reflections,
    extract_answer,
    has_boxed_format,
    has_think_answer_format,
    last_boxed,
    parse_json_object,
    strip_code_fences,
)


# --- extract_answer ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>2+2</think><answer>4</answer>", "4"),
        ("<answer>3</answer> then <answer> 5. </answer>", "5"),                  # the last tag wins
        ("<ANSWER>B</ANSWER>", "B"),
        ("<answer>so \\boxed{12}</answer>", "12"),                                # boxed inside the tag
        ("\\boxed{1} ... \\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{1}{\\sqrt{2}}"),  # nested braces, last box
        ("\\boxed{\\boxed{3}}", "3"),
        ("final: \\boxed{2} and then \\boxed{3", "2"),                            # truncated box skipped
        ("\\boxed { 7 }", "7"),
        ("Counting the bars.\nAnswer: 12", "12"),
        ("Counting the bars.\n**Answer:** 12.", "12"),
        ("We add them.\nSo the answer is 42.", "42"),
        ("### Step3: done <end>\n### Final Answer: The answer is: 9", "9"),
        ("### Final Answer: The answer is: \\boxed{9}", "9"),
        ("The answer is: (C)", "(C)"),
    ],
)
def test_extract_answer_finds_the_final_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "I am not sure.",
        "<answer></answer>",
        "<answer>   </answer>",
        "<answer>.</answer>",
        "<answer>5</answer><answer></answer>",        # the final word is empty: no answer
        "The answer is 5.\nLet me think more about it",  # an answer line must be the last line
        "\\boxed{}",
        "\\boxed{3",
    ],
)
def test_extract_answer_returns_none_not_empty_string(text):
    assert extract_answer(text) is None


def test_answer_tag_beats_boxed_value_in_the_reasoning():
    text = "<think>maybe \\boxed{4}</think><answer>5</answer>"
    assert extract_answer(text) == "5"


def test_boxed_beats_an_answer_line():
    assert extract_answer("so \\boxed{6}\nAnswer: 7") == "6"


def test_last_boxed_keeps_nested_braces():
    assert last_boxed("\\boxed{\\{1, 2\\} \\cup \\{3\\}}") == "\\{1, 2\\} \\cup \\{3\\}"
    assert last_boxed("no box") is None


# --- formats -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text",
    [
        "<think>a</think><answer>b</answer>",
        "  <think>\nlong\nreasoning\n</think>\n\n<answer> 3 </answer>\n",
        "<think></think><answer>3</answer>",  # empty reasoning is still the format
    ],
)
def test_think_answer_format_accepts(text):
    assert has_think_answer_format(text)


@pytest.mark.parametrize(
    "text",
    [
        "<answer>3</answer>",                                         # no think
        "<think>a</think>",                                           # no answer
        "<think>a</think><answer></answer>",                          # empty answer
        "<think>a</think><answer> </answer>",
        "Sure! <think>a</think><answer>3</answer>",                   # prose before
        "<think>a</think><answer>3</answer> Hope this helps.",        # prose after
        "<think>a</think>text<answer>3</answer>",                     # prose between
        "<answer>3</answer><think>a</think>",                         # wrong order
        "<think>a</think><answer>3</answer><answer>4</answer>",       # two answers
        "<think><think>a</think></think><answer>3</answer>",          # nested think
        "<think>a</think><answer>3 <think>b</think></answer>",        # tag inside the answer
        "<think>a<answer>3</answer>",                                 # unclosed think
        "",
    ],
)
def test_think_answer_format_rejects(text):
    assert not has_think_answer_format(text)


def test_boxed_format():
    assert has_boxed_format("thus \\boxed{\\frac{1}{2}}")
    assert not has_boxed_format("thus \\boxed{ }")
    assert not has_boxed_format("thus 1/2")
    assert not has_boxed_format("thus \\boxed{1/2")


# --- reflections -------------------------------------------------------------------------------

def test_count_reflections_counts_each_marker_once():
    text = (
        "Wait, the legend is swapped. Hmm, so blue is 2019. But wait, the axis starts at 10. "
        "Let me re-check the bars. Let me double-check. On second thought, it is 12. Hmmm."
    )
    assert count_reflections(text) == 7


def test_count_reflections_ignores_ordinary_uses():
    assert count_reflections("We wait for the bus. The waiter is awaiting. Waited.") == 0
    assert count_reflections("") == 0


# --- JSON replies ------------------------------------------------------------------------------

def test_parse_json_object_plain_and_fenced():
    assert parse_json_object('{"a": 1}') == {"a": 1}
    assert parse_json_object('Here it is:\n```json\n{"a": [1, 2]}\n```\nAnything else?') == {"a": [1, 2]}
    assert parse_json_object('```\n{"a": 1}\n```') == {"a": 1}


def test_parse_json_object_skips_prose_and_stray_braces():
    assert parse_json_object('Use {x} as before. {"question": "How many?"} Done.') == {"question": "How many?"}
    assert parse_json_object('{"nested": {"b": "}"}} trailing') == {"nested": {"b": "}"}}


def test_parse_json_object_reports_no_object():
    with pytest.raises(ValueError, match="no JSON object found"):
        parse_json_object("I cannot answer that.")
    with pytest.raises(ValueError, match="no JSON object found"):
        parse_json_object("[1, 2, 3]")


def test_parse_json_object_reports_where_it_is_invalid():
    with pytest.raises(ValueError, match=r"invalid JSON at line 3, column 1"):
        parse_json_object('{\n  "a": 1,\n}')  # trailing commas are not repaired
    with pytest.raises(ValueError, match=r"invalid JSON at line 1, column \d+: Expecting"):
        parse_json_object("{'a': 1}")


def test_strip_code_fences_leaves_unfenced_text_alone():
    assert strip_code_fences("plain") == "plain"
    assert strip_code_fences("```python\nx = 1\n```") == "x = 1\n"
