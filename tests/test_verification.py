"""Verifiers, the router and the judge guard (pipelines/verification.py)."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipelines.verification import (
    JUDGE_ATTACK_STRINGS,
    Check,
    box_iou,
    check_answer,
    check_choice,
    check_iou,
    check_math,
    check_numeric,
    check_text,
    choice_letter,
    is_degenerate_answer,
    normalize_text,
    read_box,
    read_number,
    too_costly_for_sympy,
)

CHOICES = ["10 apples", "12 apples", "14 apples", "none of them"]


# --- multiple choice ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "predicted",
    ["B", "(B)", "B.", "b)", "(b)", "[B]", "Option B", "option b.", "B: 12 apples", "(B) 12 apples",
     "The answer is B", "The answer is (B).", "Answer: B", "The correct option is B", "$B$", "\\text{B}",
     "12 apples", "12 Apples."],
)
def test_choice_letter_forms_all_mean_b(predicted):
    check = check_choice(predicted, "B", CHOICES)
    assert check == Check(True, 1.0, "choice_letter", "B vs B")


@pytest.mark.parametrize("predicted", ["C", "(C)", "14 apples", "A cat", "a", "E", "B and C", ""])
def test_choice_wrong_or_unreadable_fails(predicted):
    check = check_choice(predicted, "B", CHOICES)
    assert not check.passed and check.score == 0.0 and check.verifier == "choice_letter"


def test_choice_reference_may_be_written_like_a_prediction():
    assert check_choice("C", "(C)").passed
    assert check_choice("(c)", "C.").passed
    assert check_choice("14 apples", "14 apples", CHOICES).passed


def test_choice_letter_outside_the_options_is_not_a_letter():
    assert choice_letter("E", CHOICES) is None
    assert choice_letter("E") == "E"  # without choices any capital letter is allowed


def test_choice_reference_without_a_letter_fails_with_a_reason():
    check = check_choice("B", "twelve", CHOICES)
    assert not check.passed and "names no option letter" in check.detail


# --- numbers -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text, expected",
    [
        ("7", (7.0, False)), ("7.0", (7.0, False)), ("-3", (-3.0, False)), ("−3", (-3.0, False)),
        ("1,234", (1234.0, False)), ("1,234,567.5", (1234567.5, False)), (".5", (0.5, False)),
        ("3/4", (0.75, False)), ("-3 / 4", (-0.75, False)), ("\\frac{3}{4}", (0.75, False)),
        ("\\dfrac{1}{8}", (0.125, False)), ("50%", (50.0, True)), ("50\\%", (50.0, True)),
        ("12 cm", (12.0, False)), ("12cm", (12.0, False)), ("12 cm^2", (12.0, False)), ("90°", (90.0, False)),
        ("$12", (12.0, False)), ("$12$", (12.0, False)), ("x = 12", (12.0, False)), ("≈ 3.14", (3.14, False)),
        ("1e-3", (0.001, False)), ("seven", (7.0, False)), ("Seven", (7.0, False)),
    ],
)
def test_read_number(text, expected):
    assert read_number(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text", ["", "abc", "12 to 13", "3, 4", "12,5", "1/0", "\\sqrt{2}", "two apples and 3", "3x", "2 i", "12 - x"]
)
def test_read_number_refuses_non_numbers(text):
    assert read_number(text) is None


@pytest.mark.parametrize(
    "predicted, reference",
    [("7.0", "7"), ("7", "7.0"), ("3/4", "0.75"), ("1,234", "1234"), ("12 cm", "12"), ("-0.5", "-1/2"),
     ("50%", "50%"), ("50%", "50"), ("50%", "0.5"), ("0.5", "50%"), ("1000000", "1e6"), ("seven", "7")],
)
def test_numeric_matches(predicted, reference):
    check = check_numeric(predicted, reference)
    assert check.passed and check.score == 1.0 and check.verifier == "numeric"


@pytest.mark.parametrize(
    "predicted, reference",
    [("7.1", "7"), ("50", "0.5"), ("0.75", "3/5"), ("-7", "7"), ("abc", "7"), ("1.00001", "1")],
)
def test_numeric_mismatches(predicted, reference):
    assert not check_numeric(predicted, reference).passed


def test_numeric_tolerance_is_relative_with_an_absolute_floor():
    assert check_numeric("1.0000001", "1").passed                         # within 1e-6 relative
    assert not check_numeric("1.0001", "1").passed
    assert check_numeric("1.0001", "1", rel_tol=1e-3).passed
    assert check_numeric("0.0000000001", "0").passed                      # abs_tol 1e-9 near zero


def test_numeric_detail_names_both_values():
    assert check_numeric("7.5", "7").detail == "7.5 vs 7"
    assert "is not a number" in check_numeric("7", "seven apples and more").detail


# --- maths -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "predicted, reference",
    [("\\frac{1}{2}", "0.5"), ("(x+1)^2", "x^2+2x+1"), ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}"),
     ("$\\frac{3}{4}$", "0.75"), ("\\boxed{2\\pi}", "2\\pi"), ("x=3", "3"), ("\\{1,2\\}", "\\{2,1\\}")],
)
def test_math_equivalent(predicted, reference):
    check = check_math(predicted, reference)
    assert check.passed and check.verifier == "math_verify", check.detail


@pytest.mark.parametrize("predicted, reference", [("3", "4"), ("x^2", "x^3"), ("\\frac{1}{3}", "0.3")])
def test_math_not_equivalent(predicted, reference):
    check = check_math(predicted, reference)
    assert not check.passed and check.score == 0.0 and "not equivalent" in check.detail


def test_math_unparseable_is_a_failed_check_not_an_error():
    check = check_math("}}}{{{", "3")
    assert not check.passed and check.verifier == "math_verify"


def test_math_works_from_worker_threads():
    # Prefect runs tasks in worker threads; math-verify's signal-based timeouts would raise there.
    pairs = [("\\frac{1}{2}", "0.5"), ("(x+1)^2", "x^2+2x+1"), ("3", "4"), ("2\\pi", "6.283185307")] * 4
    with ThreadPoolExecutor(max_workers=4) as pool:
        checks = list(pool.map(lambda pair: check_math(*pair), pairs))
    assert [check.passed for check in checks] == [True, True, False, True] * 4
    assert not any("failed" in check.detail for check in checks)


def test_math_refuses_inputs_that_would_hang_sympy():
    for text in ["9^{9^9}", "9^9^9", "10^{10^{10}}", "9^{999999999}", "2**1000000", "(10^{10})!", "1234567!",
                 "1" * 1001]:
        assert too_costly_for_sympy(text) is not None, text
        start = time.perf_counter()
        check = check_math(text, "3")
        assert not check.passed and "could hang sympy" in check.detail
        assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize("text", ["2^{10}", "x^2 + 2^{3}", "e^{x^2}", "5!", "100!", "\\binom{10}{3}", "2^{100}"])
def test_ordinary_powers_and_factorials_are_tried(text):
    assert too_costly_for_sympy(text) is None


def test_math_verify_does_not_cancel_other_alarms_on_the_main_thread():
    # With timeouts on, math-verify would call signal.alarm(0) and silently disarm pytest-timeout.
    import signal

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "alarm"):
        pytest.skip("needs SIGALRM on the main thread")
    previous = signal.signal(signal.SIGALRM, lambda *_: None)
    try:
        signal.alarm(100)
        check_math("\\frac{1}{2}", "0.5")
        assert signal.alarm(0) > 0  # our alarm was still pending
    finally:
        signal.signal(signal.SIGALRM, previous)


# --- fill in the blank -------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text, expected",
    [("The Eiffel Tower.", "eiffel tower"), ("  A   red  CUBE!", "red cube"), ("seven", "7"),
     ("twenty-one", "21"), ("Twenty one", "21"), ("ninety", "90"), ("3.5 cm", "3.5 cm"), ("an apple, the pear", "apple pear"),
     ("$\\text{blue}$", "blue"), ("it's", "it s")],
)
def test_normalize_text(text, expected):
    assert normalize_text(text) == expected


@pytest.mark.parametrize(
    "predicted, reference",
    [("The cat", "cat"), ("an apple", "Apple."), ("seven", "7"), ("7", "Seven"), ("Blue!", "blue"),
     ("the  Eiffel   tower", "Eiffel Tower")],
)
def test_text_matches(predicted, reference):
    check = check_text(predicted, reference)
    assert check.passed and check.verifier == "exact_text"


@pytest.mark.parametrize("predicted, reference", [("red car", "car red"), ("cat", "cats"), ("", ""), ("the", "a")])
def test_text_mismatches(predicted, reference):
    assert not check_text(predicted, reference).passed


# --- boxes -------------------------------------------------------------------------------------

def test_read_box_forms():
    assert read_box("[10, 20, 30, 40]") == (10.0, 20.0, 30.0, 40.0)
    assert read_box("(10.5,20,30,40)") == (10.5, 20.0, 30.0, 40.0)
    assert read_box([1, 2, 3, 4]) == (1.0, 2.0, 3.0, 4.0)
    assert read_box("The dog (object 2) is at [1, 2, 3, 4].") == (1.0, 2.0, 3.0, 4.0)
    assert read_box("[1, 2, 3]") is None
    assert read_box("[3, 3, 1, 1]") is None  # corners swapped
    assert read_box(["a", 1, 2, 3]) is None
    assert read_box("no box") is None


def test_box_iou_exact_values():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 5)) == 0.5
    assert box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert box_iou((0, 0, 4, 4), (1, 1, 3, 3)) == pytest.approx(4 / 16)
    assert box_iou((0, 0, 1, 1), (1, 0, 2, 1)) == 0.0  # touching edges share no area
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0  # empty union


def test_check_iou_threshold_and_score():
    assert check_iou("[0, 0, 10, 10]", "[0, 0, 10, 5]") == Check(True, 0.5, "iou", "IoU 0.500 (min 0.5)")
    below = check_iou("[0, 0, 2, 2]", "[1, 1, 3, 3]")
    assert not below.passed and below.score == pytest.approx(1 / 7)
    assert check_iou("[0, 0, 2, 2]", "[1, 1, 3, 3]", min_iou=0.1).passed
    assert check_iou("nothing", "[0, 0, 1, 1]") == Check(False, 0.0, "iou", "no [x1, y1, x2, y2] box in 'nothing'")


# --- the router --------------------------------------------------------------------------------

def test_router_sends_each_type_to_its_verifier():
    assert check_answer("(C)", "C", "mc").verifier == "choice_letter"
    assert check_answer("7.0", "7", "num").verifier == "numeric"
    assert check_answer("seven", "7", "fib").verifier == "exact_text"
    assert check_answer("[0, 0, 1, 1]", "[0, 0, 1, 1]", "bbox").verifier == "iou"
    assert check_answer("a red ball", "a red ball", "des") is None


def test_router_uses_choices_for_mc():
    assert check_answer("12 apples", "B", "mc", choices=CHOICES).passed
    assert not check_answer("12 apples", "B", "mc").passed


def test_router_num_falls_back_to_math_verify_for_non_plain_numbers():
    check = check_answer("\\sqrt{2}", "1.41421356237", "num")
    assert check.passed and check.verifier == "math_verify"
    assert check_answer("2\\pi", "6.283185307179586", "num").passed


def test_router_num_keeps_the_tolerance_for_two_plain_numbers():
    check = check_answer("0.3333", "1/3", "num")
    assert not check.passed and check.verifier == "numeric"
    assert check_answer("0.3333", "1/3", "num", numeric_rel_tol=1e-3).passed


def test_router_num_failure_explains_every_attempt():
    check = check_answer("x^2", "9", "num")
    assert not check.passed and check.verifier == "numeric"
    assert "numeric:" in check.detail and "math_verify:" in check.detail


def test_router_fib_tries_text_then_numbers_then_maths():
    assert check_answer("The Eiffel Tower", "Eiffel Tower", "fib").verifier == "exact_text"
    assert check_answer("7.0", "7", "fib").verifier == "numeric"
    assert check_answer("3/4", "0.75", "fib").passed
    assert check_answer("1+x", "x+1", "fib").verifier == "math_verify"


def test_router_fib_does_not_read_a_variable_as_a_unit():
    assert not check_answer("12y", "12x", "fib").passed
    assert check_answer("12 m", "12", "fib").passed


def test_router_fib_does_not_let_math_verify_reorder_words():
    # math-verify reads "red car" as r·e·d·c·a·r, which equals "car red"
    assert not check_answer("car red", "red car", "fib").passed


def test_router_no_answer_names_the_verifier_it_would_have_used():
    for answer_type, verifier in [("mc", "choice_letter"), ("num", "numeric"), ("fib", "exact_text"), ("bbox", "iou")]:
        assert check_answer(None, "1", answer_type) == Check(False, 0.0, verifier, "no answer extracted")
    assert check_answer(None, "a dog", "des") is None


def test_router_unknown_type_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown answer_type 'essay'; known: mc, fib, num, des, bbox"):
        check_answer("x", "x", "essay")


# --- judge guard -------------------------------------------------------------------------------

QUESTION = "How many red cubes are left of the sphere?"


@pytest.mark.parametrize("attack", JUDGE_ATTACK_STRINGS)
def test_every_attack_string_is_degenerate(attack):
    assert is_degenerate_answer(attack, QUESTION)


@pytest.mark.parametrize(
    "reply",
    [None, "   ", "...", ":", "Thought process:", "Let me solve this", "Let's solve this problem step by step.",
     "I'll think about it.", "Solution:", "**Answer:**", QUESTION, QUESTION.upper(), f"Question: {QUESTION}",
     "how many red cubes are left"],
)
def test_degenerate_replies(reply):
    assert is_degenerate_answer(reply, QUESTION)


@pytest.mark.parametrize(
    "reply",
    ["Three.", "3", "There are three red cubes left of the sphere.", "red", "Let me solve this: there are 3.",
     "The answer is 3"],
)
def test_real_answers_are_not_degenerate(reply):
    assert not is_degenerate_answer(reply, QUESTION)


def test_short_answer_quoted_from_the_question_is_not_an_echo():
    assert not is_degenerate_answer("white", "Is the cube black or white?")
    assert not is_degenerate_answer("black or white", "Is the cube black or white?")
