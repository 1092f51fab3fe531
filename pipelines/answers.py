r"""Reading model text: the final answer, the response format, reflection counts, and JSON replies.

Everything here is a pure function of a string. Extraction follows ALGORITHMS.md §8: the last
`<answer>…</answer>` wins, then the last brace-balanced `\boxed{…}`, then an answer line
("Answer: …", "The answer is …", "### Final Answer: …"). Whether the extracted answer is *right*
is `pipelines.verification`'s job; how much it is worth is `pipelines.rewards`'.
"""

import json
import re

ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
BOXED_OPENER = re.compile(r"\\boxed\s*\{")
# "Answer: 5", "**Final Answer:** 5", "### Final Answer: The answer is: 5", "So the answer is 5."
ANSWER_LINE = re.compile(
    r"^\W*(?:final\s+)?answer\W*?[:：]\s*(?:the\s+(?:final\s+)?answer\s+is\s*:?\s*)?(?P<answer>.+)$"
    r"|the\s+(?:final\s+)?answer\s+is\s*:?\s*(?P<tail>.+)$",
    re.IGNORECASE,
)
THINK_THEN_ANSWER = re.compile(
    r"\s*<think>(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*", re.DOTALL
)
TAG = re.compile(r"</?(?:think|answer)>", re.IGNORECASE)

# Self-corrections counted as reflections (Vision-R1 counts "Wait"; the others are the same move in
# other words). Case-sensitive: "Wait," opens a sentence, while "wait for the bus" is not a
# reflection. One alternation, so "But wait" counts once, not twice.
REFLECTION_MARKERS = (
    r"\b[Bb]ut wait\b",              # "But wait, the bar is taller."
    r"\bWait\b",                     # "Wait, that is not right."
    r"\bHmm+\b",                     # "Hmm, let me look again."
    r"\b[Ll]et me re-?check\b",      # "Let me re-check the legend."
    r"\b[Ll]et me double[- ]check\b",
    r"\b[Oo]n second thought\b",
)
REFLECTION = re.compile("|".join(REFLECTION_MARKERS))

CODE_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)```", re.DOTALL)


def extract_answer(text: str) -> str | None:
    r"""The final answer in `text`, or None when it has none (an empty answer is no answer).

    >>> extract_answer("<think>2+2</think><answer>4</answer>")
    '4'
    >>> extract_answer(r"so it is \boxed{\frac{1}{2}}.")
    '\\frac{1}{2}'
    >>> extract_answer("Counting again.\nThe answer is 7.")
    '7'
    >>> extract_answer("<answer> </answer>") is None
    True
    >>> extract_answer("<answer>98, blue 31</think><answer>12</answer>")
    '12'
    """
    if not text:
        return None
    tags = ANSWER_TAG.findall(text)
    if tags:
        # The last tag is the model's final word: if it is empty, the model gave no answer, even
        # if an earlier tag or a boxed value in the reasoning had one. Only the text after the
        # last opening tag counts: in "<answer>98</think><answer>12</answer>" the answer is 12.
        inside = tags[-1].rsplit("<answer>", 1)[-1]
        if re.search(r"</?(think|answer)>", inside):
            return None  # a stray tag inside the answer: not an answer
        boxed = last_boxed(inside)
        return _clean(boxed if boxed is not None else inside)
    boxed = last_boxed(text)
    if boxed is not None:
        return _clean(boxed)
    return _clean(_answer_line(text))


def last_boxed(text: str) -> str | None:
    r"""Content of the last `\boxed{…}` whose braces balance; None if there is none.

    >>> last_boxed(r"\boxed{1} then \boxed{\frac{a}{\sqrt{b}}}")
    '\\frac{a}{\\sqrt{b}}'
    >>> last_boxed(r"\boxed{2} and a cut-off \boxed{3") # the truncated one is skipped
    '2'
    """
    for opener in reversed(list(BOXED_OPENER.finditer(text))):
        content = _balanced_content(text, opener.end())
        if content is not None:
            return content
    return None


def has_think_answer_format(text: str) -> bool:
    r"""True for exactly `<think>…</think><answer>…</answer>`, with a non-empty answer.

    Whitespace may surround and separate the two blocks; anything else outside them, a second tag
    or an empty answer fails. The reasoning itself may be empty: the format is about structure.

    >>> has_think_answer_format("<think>3 red cubes</think>\n<answer>3</answer>\n")
    True
    >>> has_think_answer_format("<think>x</think><answer>3</answer> Hope this helps!")
    False
    """
    match = THINK_THEN_ANSWER.fullmatch(text or "")
    if match is None:
        return False
    think, answer = match["think"], match["answer"]
    if TAG.search(think) or TAG.search(answer):
        return False
    return answer.strip() != ""


def has_boxed_format(text: str) -> bool:
    r"""True if `text` has a balanced, non-empty `\boxed{…}`.

    >>> has_boxed_format(r"so \boxed{12}"), has_boxed_format(r"\boxed{}")
    (True, False)
    """
    boxed = last_boxed(text or "")
    return boxed is not None and boxed.strip() != ""


def count_reflections(text: str) -> int:
    r"""Self-corrections in a reasoning trace: matches of `REFLECTION_MARKERS` (Vision-R1's "Wait" count).

    >>> count_reflections("Wait, 3 bars. Hmm, 4? But wait, the legend. We wait for nothing.")
    3
    """
    return len(REFLECTION.findall(text or ""))


def strip_code_fences(text: str) -> str:
    r"""The inside of the first ``` fenced block, or `text` unchanged if it has none.

    >>> strip_code_fences('Here:\n```json\n{"a": 1}\n```\nDone.')
    '{"a": 1}\n'
    """
    fenced = CODE_FENCE.search(text)
    return fenced.group(1) if fenced else text


def parse_json_object(text: str) -> dict:
    r"""The first JSON object in a model reply, allowing ```json fences and prose around it.

    Raises ValueError with a short message meant to be shown to the model on a retry: "no JSON
    object found …" or "invalid JSON at line L, column C: …". Trailing commas are not repaired.

    >>> parse_json_object('Sure! ```json\n{"question": "How many?", "answer": "3"}\n``` Anything else?')
    {'question': 'How many?', 'answer': '3'}
    >>> parse_json_object('{"answer": "3",}')
    Traceback (most recent call last):
    ...
    ValueError: invalid JSON at line 1, column 16: Expecting property name enclosed in double quotes
    """
    body = strip_code_fences(text or "")
    decoder = json.JSONDecoder()
    first_error = None
    # Prose before the object may hold a stray "{" (e.g. "use {x}"), so try each opening brace and
    # report the first failure: that is usually where the intended object starts.
    for opening in re.finditer(r"\{", body):
        try:
            value, _ = decoder.raw_decode(body, opening.start())
        except json.JSONDecodeError as error:
            first_error = first_error or error
            continue
        return value
    if first_error is not None:
        raise ValueError(
            f"invalid JSON at line {first_error.lineno}, column {first_error.colno}: {first_error.msg}"
        )
    raise ValueError("no JSON object found: reply with one object in braces, like {\"key\": \"value\"}")


def _balanced_content(text: str, start: int) -> str | None:
    r"""Text from `start` up to the brace that closes the one just before it; None if it never closes."""
    depth = 1
    for position in range(start, len(text)):
        character = text[position]
        if character == "{":
            depth += 1
        elif character == "}":
            depth -= 1
            if depth == 0:
                return text[start:position]
    return None


def _answer_line(text: str) -> str | None:
    r"""The answer on the last non-empty line, if that line states one."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    match = ANSWER_LINE.search(lines[-1].strip())
    if match is None:
        return None
    return match["answer"] if match["answer"] is not None else match["tail"]


def _clean(answer: str | None) -> str | None:
    r"""Strip whitespace, markdown bold and one trailing period; '' becomes None."""
    if answer is None:
        return None
    answer = answer.strip().strip("*").strip()
    if answer.endswith(".") and not answer.endswith(".."):
        answer = answer[:-1].rstrip()
    return answer or None
