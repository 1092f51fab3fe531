r"""Did an extracted answer match the reference? One pure verifier per answer type, and a router.

Each verifier returns a `Check(passed, score, verifier, detail)`; `verifier` is the name stored in
`verdicts.verifier`. `check_answer` routes by `answer_type` (schemas.questions.ANSWER_TYPES):
mc → choice letter; num → numeric, then math-verify when a side is not a plain number; fib →
normalised text, then numeric, then math-verify for mathematical references; bbox → IoU; des →
None, because descriptive answers go to a model judge, which the caller runs. Before calling a
judge, the caller drops degenerate answers with `is_degenerate_answer` (ALGORITHMS.md §8: judges
are fooled by ":" or "Thought process:"; those must score 0 without a call).

math-verify and threads: its timeouts use SIGALRM, so with a timeout set, `parse` and `verify`
raise ValueError on any thread but the main one (Prefect runs tasks in worker threads), and on
the main thread they cancel any other pending alarm (pytest-timeout's, for one). `check_math`
therefore always turns them off, which makes a verdict the same on every thread. Without a
timeout a few inputs never return: exact powers or factorials whose values have billions of
digits (`9^{9^9}`, `9^{999999999}`, `(10^{10})!`) run in C, holding the GIL, so not even a
watchdog thread can stop them. `too_costly_for_sympy` refuses those shapes before math-verify sees
them. Slow but finite inputs remain slow: `(x+1)^{300}` vs `(x+2)^{300}` takes ~0.6 s. Measured
on the 2-core reference machine: a repeated pair ~0.4 ms (math-verify caches parses), new numbers
~5 ms, new symbolic pairs ~30 ms; the other verifiers take ~20 µs.
"""

import logging
import math
import re
from dataclasses import dataclass
from typing import Sequence

from math_verify import parse as math_parse
from math_verify import verify as math_verify

from schemas.questions import ANSWER_TYPES


@dataclass(frozen=True)
class Check:
    passed: bool
    score: float     # 0..1: 1.0/0.0 for exact checks, the IoU for boxes
    verifier: str    # choice_letter, numeric, math_verify, exact_text, iou
    detail: str      # why, for people reading verdicts and rejects


# ---------------------------------------------------------------------------------------------
# Multiple choice
# ---------------------------------------------------------------------------------------------

LETTER_PREFIX = re.compile(
    r"^(?:the\s+)?(?:correct\s+|final\s+)?(?:answer|option|choice)(?:\s+is)?\s*[:：]?\s*", re.IGNORECASE
)
# "B", "(B)", "[B]", "B.", "b)", "B: 12 apples", "(b) 12 apples". A lowercase letter needs
# punctuation, so that "a cat" is not read as option A...
LETTER = re.compile(r"^[(\[]?([A-Z])[)\]]?\.?$|^[(\[]([A-Za-z])[)\]]|^([A-Za-z])[.):](?:\s|$)")
# ...unless "Option"/"Answer:" came first and the letter is all that is left ("option b").
LONE_LETTER = re.compile(r"^[(\[]?([A-Za-z])[)\]]?\.?$")


def choice_letter(text: str, choices: Sequence[str] = ()) -> str | None:
    r"""The option letter `text` names ("B", "(b)", "Option B", "B: …", or a choice's text); None if none.

    >>> [choice_letter(t) for t in ["(C)", "b)", "Option B", "The answer is D.", "a cat"]]
    ['C', 'B', 'B', 'D', None]
    >>> choice_letter("12 apples", choices=["10 apples", "12 apples"])
    'B'
    """
    if choices:
        # The full text of an option wins over a letter reading: "A" could be both, but a choice
        # whose text is literally "A" is rarer than a reply that quotes the option it picked.
        wanted = normalize_text(text)
        for index, choice in enumerate(choices):
            if wanted and normalize_text(choice) == wanted:
                return _letter(index)
    unwrapped = _unwrap_latex(text).strip()
    stripped = unwrapped
    for _ in range(2):  # "Answer: Option B"
        stripped = LETTER_PREFIX.sub("", stripped, count=1).strip()
    match = LETTER.match(stripped)
    if match is None and stripped != unwrapped:
        match = LONE_LETTER.match(stripped)
    if match is None:
        return None
    letter = next(group for group in match.groups() if group).upper()
    if choices and ord(letter) - ord("A") >= len(choices):
        return None  # "E" with four options is not an option
    return letter


def check_choice(predicted: str, reference: str, choices: Sequence[str] = ()) -> Check:
    """Multiple choice: the normalised letters must be equal.

    >>> check_choice("(C)", "C")
    Check(passed=True, score=1.0, verifier='choice_letter', detail='C vs C')
    """
    reference_letter = choice_letter(reference, choices)
    if reference_letter is None:
        return Check(False, 0.0, "choice_letter", f"reference {reference!r} names no option letter")
    predicted_letter = choice_letter(predicted, choices)
    if predicted_letter is None:
        return Check(False, 0.0, "choice_letter", f"no option letter in {_short(predicted)}")
    passed = predicted_letter == reference_letter
    return Check(passed, float(passed), "choice_letter", f"{predicted_letter} vs {reference_letter}")


# ---------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------

NUMBER_WORDS = {
    word: value
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen".split()
    )
}
TENS_WORDS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
              "eighty": 80, "ninety": 90}

APPROXIMATELY = re.compile(r"^(?:[A-Za-z]\s*=|≈|~|about\b|approximately\b|approx\.?)\s*", re.IGNORECASE)
LATEX_FRACTION = re.compile(r"^(-?)\\frac\s*\{\s*([^{}]+?)\s*\}\s*\{\s*([^{}]+?)\s*\}(.*)$", re.DOTALL)
PLAIN_NUMBER = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|\.\d+"
NUMBER = re.compile(
    rf"^(?P<sign>[-+]?)\s*[$€£¥]?\s*(?P<number>{PLAIN_NUMBER})"
    rf"(?:\s*/\s*(?P<denominator>{PLAIN_NUMBER}))?\s*(?P<percent>%?)(?P<rest>.*)$",
    re.DOTALL,
)
# What may follow a number: a unit or a counted noun ("12 cm", "12 cm^2", "3 apples", "90°"), never
# another number ("12 to 13" is a range, not 12).
UNIT = re.compile(r"^(?:[^\W\d_]|[°µ'\"])[^\d]*(?:\^\{?[23]\}?|[²³])?$")
# A lone letter after a number is a variable ("3x", "2i") unless it is one of these SI-style units.
SINGLE_LETTER_UNITS = frozenset("mgsLlhKVAWNJt")


def read_number(text: str) -> tuple[float, bool] | None:
    r"""`(value, had_percent_sign)` for a number written alone or with a unit; None otherwise.

    Reads "1,234", "-12.0", "3/4", "\frac{3}{4}", "50%", "$12", "12 cm", "x = 12", "seven".

    >>> [read_number(t) for t in ["1,234", "3/4", "50%", "12 cm^2", "seven", "12 to 13"]]
    [(1234.0, False), (0.75, False), (50.0, True), (12.0, False), (7.0, False), None]
    """
    text = APPROXIMATELY.sub("", _unwrap_latex(text).strip().replace("−", "-")).strip()
    if text.lower() in NUMBER_WORDS:
        return float(NUMBER_WORDS[text.lower()]), False
    fraction = LATEX_FRACTION.match(text)
    if fraction:
        sign, numerator, denominator, rest = fraction.groups()
        text = f"{sign}{numerator}/{denominator}{rest}"
    match = NUMBER.match(text)
    if match is None:
        return None
    rest = match["rest"].strip()
    if (rest and not UNIT.match(rest)) or (len(rest) == 1 and rest.isalpha() and rest not in SINGLE_LETTER_UNITS):
        return None
    value = _to_float(match["number"])
    if match["denominator"]:
        denominator = _to_float(match["denominator"])
        if denominator == 0:
            return None
        value /= denominator
    if match["sign"] == "-":
        value = -value
    return value, match["percent"] == "%"


def numbers_match(predicted: float, reference: float, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> bool:
    """`math.isclose`, named for what it decides here.

    >>> numbers_match(7.0, 7), numbers_match(0.3333, 1 / 3)
    (True, False)
    """
    return math.isclose(predicted, reference, rel_tol=rel_tol, abs_tol=abs_tol)


def check_numeric(predicted: str, reference: str, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> Check:
    """Numbers equal within tolerance.

    Percent: when both sides or neither carry "%", the written values are compared. When only one
    side does, either reading passes: "50%" matches "50" (chart QA references often drop the sign)
    and "0.5" (the same quantity as a fraction). The price is that "0.5%" also matches "0.5".

    >>> check_numeric("12 cm", "12.0").passed, check_numeric("3/4", "0.75").passed
    (True, True)
    >>> check_numeric("50%", "0.5").passed, check_numeric("50%", "50").passed, check_numeric("50", "0.5").passed
    (True, True, False)
    """
    reference_number = read_number(reference)
    if reference_number is None:
        return Check(False, 0.0, "numeric", f"reference {_short(reference)} is not a number")
    predicted_number = read_number(predicted)
    if predicted_number is None:
        return Check(False, 0.0, "numeric", f"no number in {_short(predicted)}")
    (predicted_value, predicted_percent), (reference_value, reference_percent) = predicted_number, reference_number
    readings = [(predicted_value, reference_value)]
    if predicted_percent and not reference_percent:
        readings.append((predicted_value / 100, reference_value))
    elif reference_percent and not predicted_percent:
        readings.append((predicted_value, reference_value / 100))
    passed = any(numbers_match(p, r, rel_tol, abs_tol) for p, r in readings)
    detail = f"{_format_number(predicted_value, predicted_percent)} vs {_format_number(reference_value, reference_percent)}"
    return Check(passed, float(passed), "numeric", detail)


# ---------------------------------------------------------------------------------------------
# Maths (math-verify)
# ---------------------------------------------------------------------------------------------

MAX_MATH_CHARS = 1000  # a final answer is short; long strings are where parsing gets slow
# Shapes whose exact value has billions of digits: sympy computes them in C and never returns.
COSTLY_SHAPES = {
    "a power tower of numbers": re.compile(r"\d\s*(?:\^|\*\*)\s*\{?\s*\(?\s*\d[\d\s.]*\}?\s*(?:\^|\*\*)"),
    "an exponent of 6+ digits": re.compile(r"(?:\^|\*\*)\s*\{?\s*\(?\s*\d{6,}"),
    "a factorial of a power or a 6+ digit number": re.compile(r"(?:\d{6,}|[\^}])\s*\)?\s*!"),
}


class _DropTimeoutDisabledWarning(logging.Filter):
    # math-verify warns once per process that timeouts are off; we turn them off on purpose (see
    # the module docstring), so the warning would only mislead whoever reads the stage logs.
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _logger_name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_logger_name).addFilter(_DropTimeoutDisabledWarning())


def too_costly_for_sympy(text: str) -> str | None:
    r"""Why math-verify must not see `text` (it could run forever), or None if it is safe to try.

    >>> too_costly_for_sympy(r"9^{9^9}"), too_costly_for_sympy(r"2^{10} + x^2")
    ('a power tower of numbers', None)
    """
    if len(text) > MAX_MATH_CHARS:
        return f"longer than {MAX_MATH_CHARS} characters"
    for reason, shape in COSTLY_SHAPES.items():
        if shape.search(text):
            return reason
    return None


def check_math(predicted: str, reference: str) -> Check:
    r"""Mathematical equivalence by math-verify: `verify(parse(reference), parse(predicted))`.

    Bare answers are wrapped in `\boxed{}` first: math-verify extracts from model-style text, and
    a bare "(x+1)^2" would otherwise not be found. Safe on any thread (timeouts are off; see the
    module docstring); inputs that could hang are refused, not tried.

    >>> check_math(r"\frac{\sqrt{2}}{2}", r"\sqrt{2}/2").passed, check_math("(x+1)^2", "x^2+2x+1").passed
    (True, True)
    >>> check_math("3", "4").passed
    False
    """
    for side, text in (("prediction", predicted), ("reference", reference)):
        reason = too_costly_for_sympy(text)
        if reason is not None:
            return Check(False, 0.0, "math_verify", f"{side} not tried: {reason} could hang sympy")
    try:
        gold = math_parse(_for_math_verify(reference), parsing_timeout=None)
        if not gold:
            return Check(False, 0.0, "math_verify", f"could not parse reference {_short(reference)}")
        answer = math_parse(_for_math_verify(predicted), parsing_timeout=None)
        if not answer:
            return Check(False, 0.0, "math_verify", f"could not parse {_short(predicted)}")
        passed = math_verify(gold, answer, timeout_seconds=None)
    except Exception as error:  # math-verify wraps sympy; a crash on odd input is a failed check
        return Check(False, 0.0, "math_verify", f"math-verify failed: {type(error).__name__}: {error}"[:200])
    verdict = "equivalent" if passed else "not equivalent"
    return Check(passed, float(passed), "math_verify", f"{_short(predicted)} {verdict} to {_short(reference)}")


# ---------------------------------------------------------------------------------------------
# Fill in the blank
# ---------------------------------------------------------------------------------------------

ARTICLES = frozenset({"a", "an", "the"})
# Any punctuation, except a decimal point between digits ("3.5" stays one token).
PUNCTUATION = re.compile(r"[^\w\s.]|_|(?<!\d)\.|\.(?!\d)")


def normalize_text(text: str) -> str:
    r"""Lowercase, no punctuation, no articles, single spaces, number words as digits (0–99).

    >>> normalize_text("The  Twenty-one red cubes!")
    '21 red cubes'
    """
    words = PUNCTUATION.sub(" ", _unwrap_latex(text).lower()).split()
    words = [word for word in words if word not in ARTICLES]
    normalized: list[str] = []
    previous_was_tens = False
    for word in words:
        if previous_was_tens and 0 < NUMBER_WORDS.get(word, 0) < 10:
            normalized[-1] = str(int(normalized[-1]) + NUMBER_WORDS[word])  # "twenty one" from "twenty-one"
        elif word in NUMBER_WORDS or word in TENS_WORDS:
            normalized.append(str(NUMBER_WORDS.get(word, TENS_WORDS.get(word))))
        else:
            normalized.append(word)
        previous_was_tens = word in TENS_WORDS
    return " ".join(normalized)


def check_text(predicted: str, reference: str) -> Check:
    """Fill in the blank: equal after `normalize_text`.

    >>> check_text("The Eiffel Tower.", "eiffel tower").passed, check_text("seven", "7").passed
    (True, True)
    """
    predicted_text, reference_text = normalize_text(predicted), normalize_text(reference)
    passed = predicted_text != "" and predicted_text == reference_text
    return Check(passed, float(passed), "exact_text", f"{predicted_text!r} vs {reference_text!r}"[:200])


# ---------------------------------------------------------------------------------------------
# Boxes
# ---------------------------------------------------------------------------------------------

Box = tuple[float, float, float, float]
BOX_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
BRACKETED = re.compile(r"[\[(]([^\[\]()]*)[\])]")


def read_box(box: str | Sequence[float]) -> Box | None:
    """`(x1, y1, x2, y2)` from "[x1, y1, x2, y2]" or a sequence of four numbers; None otherwise.

    In text, the last bracketed group of four numbers wins ("object 2 is at [1, 2, 3, 4]").

    >>> read_box("[10, 20, 30.5, 40]"), read_box([1, 2, 3]), read_box("[5, 5, 1, 1]")
    ((10.0, 20.0, 30.5, 40.0), None, None)
    """
    if isinstance(box, str):
        groups = [BOX_NUMBER.findall(group) for group in BRACKETED.findall(box)]
        fours = [group for group in groups if len(group) == 4]
        numbers = [float(number) for number in (fours[-1] if fours else BOX_NUMBER.findall(box))]
    else:
        try:
            numbers = [float(number) for number in box]
        except (TypeError, ValueError):
            return None
    if len(numbers) != 4:
        return None
    x1, y1, x2, y2 = numbers
    if x2 < x1 or y2 < y1:
        return None  # corners in the wrong order: the model did not give a box
    return x1, y1, x2, y2


def box_iou(first: Box, second: Box) -> float:
    """Intersection over union of two `(x1, y1, x2, y2)` boxes; 0.0 when the union is empty.

    >>> box_iou((0, 0, 2, 2), (1, 1, 3, 3))  # 1 / (4 + 4 - 1)
    0.14285714285714285
    >>> box_iou((0, 0, 2, 2), (0, 0, 2, 2)), box_iou((0, 0, 1, 1), (2, 2, 3, 3))
    (1.0, 0.0)
    """
    width = max(0.0, min(first[2], second[2]) - max(first[0], second[0]))
    height = max(0.0, min(first[3], second[3]) - max(first[1], second[1]))
    intersection = width * height
    union = _area(first) + _area(second) - intersection
    return intersection / union if union > 0 else 0.0


def check_iou(predicted_box: str | Sequence[float], reference_box: str | Sequence[float], min_iou: float = 0.5) -> Check:
    """Boxes overlap enough: passed when IoU ≥ `min_iou`; the score is the IoU itself.

    >>> check_iou("[0, 0, 10, 10]", [0, 0, 10, 5])
    Check(passed=True, score=0.5, verifier='iou', detail='IoU 0.500 (min 0.5)')
    """
    reference = read_box(reference_box)
    if reference is None:
        return Check(False, 0.0, "iou", f"reference {_short(str(reference_box))} is not a box")
    predicted = read_box(predicted_box)
    if predicted is None:
        return Check(False, 0.0, "iou", f"no [x1, y1, x2, y2] box in {_short(str(predicted_box))}")
    iou = box_iou(predicted, reference)
    return Check(iou >= min_iou, iou, "iou", f"IoU {iou:.3f} (min {min_iou})")


# ---------------------------------------------------------------------------------------------
# The router
# ---------------------------------------------------------------------------------------------

# The verifier named in a failed Check when no answer was extracted. "des" is absent: a judge decides.
VERIFIER_FOR_TYPE = {"mc": "choice_letter", "num": "numeric", "fib": "exact_text", "bbox": "iou"}


def check_answer(
    predicted: str | None,
    reference: str,
    answer_type: str,
    *,
    choices: Sequence[str] = (),
    numeric_rel_tol: float = 1e-6,
) -> Check | None:
    """Check `predicted` the way its `answer_type` needs; None for "des" (a judge decides those).

    >>> check_answer("7.0", "7", "num").verifier, check_answer("seven", "7", "fib").passed
    ('numeric', True)
    >>> check_answer(None, "B", "mc")
    Check(passed=False, score=0.0, verifier='choice_letter', detail='no answer extracted')
    >>> check_answer("A red ball", "a ball", "des") is None
    True
    """
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"unknown answer_type {answer_type!r}; known: {', '.join(ANSWER_TYPES)}")
    if answer_type not in VERIFIER_FOR_TYPE:
        return None
    if predicted is None:
        return Check(False, 0.0, VERIFIER_FOR_TYPE[answer_type], "no answer extracted")
    return ROUTES[answer_type](predicted, reference, choices, numeric_rel_tol)


def _route_choice(predicted: str, reference: str, choices: Sequence[str], numeric_rel_tol: float) -> Check:
    return check_choice(predicted, reference, choices)


def _route_number(predicted: str, reference: str, choices: Sequence[str], numeric_rel_tol: float) -> Check:
    numeric = check_numeric(predicted, reference, rel_tol=numeric_rel_tol)
    if numeric.passed or _both_numbers(predicted, reference):
        return numeric  # two plain numbers: the tolerance decides; math-verify would only round
    return _first_pass_or_all_reasons([numeric, check_math(predicted, reference)])  # "\sqrt{2}", "2\pi"


def _route_fill_in(predicted: str, reference: str, choices: Sequence[str], numeric_rel_tol: float) -> Check:
    text = check_text(predicted, reference)
    if text.passed:
        return text
    if _both_numbers(predicted, reference):  # "7.0" for "7"
        return _first_pass_or_all_reasons([text, check_numeric(predicted, reference, rel_tol=numeric_rel_tol)])
    if _looks_mathematical(reference):  # "1+x" for "x+1"
        return _first_pass_or_all_reasons([text, check_math(predicted, reference)])
    return text


def _route_box(predicted: str, reference: str, choices: Sequence[str], numeric_rel_tol: float) -> Check:
    return check_iou(predicted, reference)


ROUTES = {"mc": _route_choice, "num": _route_number, "fib": _route_fill_in, "bbox": _route_box}


def same_answer(first: str, second: str, answer_type: str, *, choices: Sequence[str] = ()) -> bool:
    """Whether two extracted answers say the same thing, by the verifier of their type.

    Descriptive answers have no rule verifier: they are the same when equal after `normalize_text`.

    >>> same_answer("7.0", "7", "num"), same_answer("(b)", "B", "mc"), same_answer("A red ball.", "a red ball", "des")
    (True, True, True)
    """
    check = check_answer(first, second, answer_type, choices=choices)
    if check is None:
        return normalize_text(first) == normalize_text(second)
    return check.passed


def answer_clusters(answers: Sequence[str | None], answer_type: str, *, choices: Sequence[str] = ()) -> list[list[str]]:
    """The answers grouped by equivalence (`same_answer` with each cluster's first member), in order of
    first appearance. No-answers (None) are left out: the caller decides what they count as.

    Equivalence by the verifiers, not by string equality: "7", "7.0" and "seven" are one cluster for a
    number. Comparing with the first member keeps the result deterministic where a tolerance makes the
    relation intransitive.

    >>> answer_clusters(["7", "8", "7.0", None, "seven"], "num")
    [['7', '7.0', 'seven'], ['8']]
    """
    clusters: list[list[str]] = []
    for answer in answers:
        if answer is None:
            continue
        for cluster in clusters:
            if same_answer(answer, cluster[0], answer_type, choices=choices):
                cluster.append(answer)
                break
        else:
            clusters.append([answer])
    return clusters


# ---------------------------------------------------------------------------------------------
# Guarding a model judge
# ---------------------------------------------------------------------------------------------

# Replies known to make LLM judges say "correct" with no answer in them (Zhao et al. 2025, "One
# Token to Fool LLM-as-a-Judge"). A judge stage keeps these as a regression set: each must score 0.
JUDGE_ATTACK_STRINGS = (
    "",
    ":",
    ".",
    "Thought process:",
    "Let me solve this",
    "Let me solve this problem step by step.",
    "Let's solve this problem.",
    "Solution",
    "Answer:",
    "The answer is",
    "解",
)
# An opener with nothing after it, matched on `_words(reply)` (lowercase, punctuation gone: "let's"
# becomes "let s").
REASONING_OPENER = re.compile(
    r"^(?:thought process|solution|answer|the answer is|"
    r"(?:let me|let s|let us|i will|i ll)\s+(?:solve|think|work|look)(?:\s+(?:through|about|at))?"
    r"(?:\s+(?:this|it|the problem|this problem|the question))?(?:\s+step\s+by\s+step)?)$"
)


def is_degenerate_answer(predicted: str | None, question: str) -> bool:
    """True when a reply has no answer in it: empty, punctuation, a bare opener, or the question echoed.

    Such replies must score 0 without asking the judge. An echo is the question itself (give or
    take three words), or a stretch of five or more of its words; a short reply that happens to
    be in the question ("white", for "black or white?") is still an answer.

    >>> [is_degenerate_answer(text, "How many red cubes are there?") for text in
    ...  [":", "Thought process:", "how many red cubes are there", "Three red cubes."]]
    [True, True, True, False]
    """
    if predicted is None:
        return True
    reply = _words(predicted)
    if not reply:
        return True  # empty, or punctuation only (":", "...")
    if reply in {_words(attack) for attack in JUDGE_ATTACK_STRINGS} or REASONING_OPENER.match(reply):
        return True
    asked = _words(question)
    if not asked:
        return False
    echoes_whole_question = f" {asked} " in f" {reply} " and len(reply.split()) - len(asked.split()) <= 3
    echoes_part_of_it = len(reply.split()) >= 5 and f" {reply} " in f" {asked} "
    return echoes_whole_question or echoes_part_of_it


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

LATEX_TEXT_COMMAND = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
LATEX_SPACING = re.compile(r"\\[,;:! ]|~")
LATEX_COMMAND_NAME = re.compile(r"\\[A-Za-z]+")


def _unwrap_latex(text: str) -> str:
    r"""Drop math delimiters, `\text{}`-style wrappers, `\boxed{}`, spacing commands and `**` bold."""
    text = text.strip().replace("**", "")
    for opener, closer in (("$$", "$$"), ("$", "$"), (r"\(", r"\)"), (r"\[", r"\]")):
        if text.startswith(opener) and text.endswith(closer) and len(text) >= len(opener) + len(closer):
            text = text[len(opener) : len(text) - len(closer)].strip()
            break
    if text.startswith(r"\boxed{") and text.endswith("}"):
        text = text[len(r"\boxed{") : -1]
    text = LATEX_TEXT_COMMAND.sub(r"\1", text)
    text = LATEX_SPACING.sub(" ", text).replace(r"\%", "%").replace(r"\$", "$")
    return text.replace(r"\dfrac", r"\frac").replace(r"\tfrac", r"\frac").strip()


def _for_math_verify(text: str) -> str:
    """math-verify extracts answers from model-style text; hand it one it will find."""
    if any(marker in text for marker in ("\\boxed", "$", "\\(", "\\[")):
        return text
    return "\\boxed{" + text + "}"


def _both_numbers(predicted: str, reference: str) -> bool:
    return read_number(predicted) is not None and read_number(reference) is not None


def _looks_mathematical(text: str) -> bool:
    """Digits, operators or LaTeX, and no English words: "x+1", "\\frac{1}{2}", not "red car".

    math-verify reads words as products of symbols, so it would call "red car" and "car red" equal.
    """
    without_commands = LATEX_COMMAND_NAME.sub(" ", text)
    has_maths = bool(re.search(r"[\\^=+*/<>]|\d", text))
    has_words = bool(re.search(r"[A-Za-z]{2,}", without_commands))
    return has_maths and not has_words


def _first_pass_or_all_reasons(attempts: list[Check]) -> Check:
    """The first passing check; else the first check, with every verifier's reason in its detail."""
    for attempt in attempts:
        if attempt.passed:
            return attempt
    if len(attempts) == 1:
        return attempts[0]
    reasons = "; ".join(f"{attempt.verifier}: {attempt.detail}" for attempt in attempts)
    return Check(False, attempts[0].score, attempts[0].verifier, reasons)


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _to_float(number: str) -> float:
    return float(number.replace(",", ""))


def _format_number(value: float, percent: bool) -> str:
    return f"{value:g}{'%' if percent else ''}"


def _area(box: Box) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def _letter(index: int) -> str:
    return chr(ord("A") + index)


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")
