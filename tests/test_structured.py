"""`ask`: parse each reply, retry unusable ones with the parse error as feedback, and say why when it gives up."""

import pytest

from pipelines.engines.base import Request, Response, user
from pipelines.structured import Answer, ask, with_feedback
from tests.stages.fixtures import FakeEngine, attempt


def number(text: str) -> int:
    if not text.strip().isdigit():
        raise ValueError(f"expected a whole number, got {text!r}")
    return int(text)


def request(text: str = "How many circles?") -> Request:
    return Request(messages=[user(text)], task="test")


def test_a_usable_reply_is_parsed_on_the_first_call():
    engine = FakeEngine(lambda r: "7")
    (answer,) = ask(engine, [request()], number, max_retries=3)
    assert (answer.value, answer.raw, answer.error, answer.attempts, answer.ok) == (7, "7", None, 1, True)
    assert answer.call_id == request().call_id("fake", "fake-model", "fake-1")
    assert len(engine.requests) == 1


def test_a_malformed_reply_is_retried_with_the_output_and_the_parse_error_appended():
    engine = FakeEngine(lambda r: "seven" if attempt(r) == 0 else "7")
    (answer,) = ask(engine, [request()], number, max_retries=1)
    assert (answer.value, answer.raw, answer.attempts, answer.ok) == (7, "7", 2, True)
    first, retry = engine.requests
    assert retry.messages[:1] == first.messages
    assert retry.messages[1] == {"role": "assistant", "content": "seven"}
    assert retry.messages[2]["role"] == "user"
    assert "That answer could not be used: expected a whole number, got 'seven'" in retry.messages[2]["content"]
    # Same task and sampling: only the chat grew, so the call id (and a scripted teacher's draw) changes.
    assert (retry.task, retry.max_tokens, retry.temperature) == (first.task, first.max_tokens, first.temperature)
    assert answer.call_id == retry.call_id("fake", "fake-model", "fake-1") != first.call_id("fake", "fake-model", "fake-1")


@pytest.mark.parametrize("max_retries", [0, 1, 3])
def test_a_reply_that_never_parses_is_tried_exactly_max_retries_more_times(max_retries):
    engine = FakeEngine(lambda r: f"not a number (try {attempt(r)})")
    (answer,) = ask(engine, [request()], number, max_retries=max_retries)
    assert len(engine.requests) == answer.attempts == max_retries + 1
    assert [attempt(r) for r in engine.requests] == list(range(max_retries + 1))
    assert answer.ok is False and answer.value is None and answer.engine_failed is False
    # The last output and the last parse error, for the reject's raw and detail.
    assert answer.raw == f"not a number (try {max_retries})"
    assert answer.error == f"expected a whole number, got 'not a number (try {max_retries})'"


def test_an_engine_error_is_not_retried_and_is_marked_as_the_engine_failing():
    engine = FakeEngine(lambda r: Response([], "call-x", error="HTTP 503: overloaded"))
    (answer,) = ask(engine, [request()], number, max_retries=3)
    assert len(engine.requests) == 1
    assert (answer.ok, answer.engine_failed, answer.error, answer.raw, answer.call_id) == (False, True, "HTTP 503: overloaded", "", "call-x")


def test_an_empty_reply_is_a_parse_failure_with_feedback_not_a_value():
    engine = FakeEngine(lambda r: "")
    (answer,) = ask(engine, [request()], number, max_retries=1)
    assert len(engine.requests) == 2
    assert answer.ok is False and answer.engine_failed is False
    assert answer.error == "expected a whole number, got ''"
    engine = FakeEngine(lambda r: [])  # no completion at all: Response.text is ""
    (answer,) = ask(engine, [request()], number, max_retries=0)
    assert answer.error == "expected a whole number, got ''" and answer.raw == ""


def test_a_parse_error_without_a_message_still_gives_a_reason():
    def silent(text):
        raise ValueError()

    (answer,) = ask(FakeEngine(lambda r: "x"), [request()], silent, max_retries=0)
    assert answer.error == "output could not be used"


def test_only_the_unusable_replies_of_a_batch_are_asked_again():
    replies = {"a": "1", "b": "two", "c": "3"}
    engine = FakeEngine(lambda r: replies[r.messages[0]["content"][0]["text"]] if attempt(r) == 0 else "2")
    answers = ask(engine, [request("a"), request("b"), request("c")], number, max_retries=2)
    assert [a.value for a in answers] == [1, 2, 3]
    assert [a.attempts for a in answers] == [1, 2, 1]
    assert [r.messages[0]["content"][0]["text"] for r in engine.requests] == ["a", "b", "c", "b"]


def test_other_exceptions_from_the_parser_are_bugs_and_propagate():
    def broken(text):
        raise KeyError("oops")

    with pytest.raises(KeyError):
        ask(FakeEngine(lambda r: "x"), [request()], broken)


def test_with_feedback_leaves_the_original_request_untouched():
    original = request()
    again = with_feedback(original, "bad", "why")
    assert len(original.messages) == 1 and len(again.messages) == 3
    assert again.messages[2]["content"] == "That answer could not be used: why\nReply again, following the required format exactly."


def test_an_answer_without_a_value_always_has_a_reason():
    assert Answer(error="x").ok is False
    assert Answer(value=0).ok is True


def test_an_engine_that_drops_a_response_does_not_produce_an_ok_answer_without_a_value():
    class Short:
        name, model, revision = "short", "m", "r"

        def generate(self, requests):
            return [Response(["1"], "call-1")][: len(requests) - 1]

    answers = ask(Short(), [request("a"), request("b")], number, max_retries=0)
    assert all(a.ok == (a.value is not None) for a in answers)
