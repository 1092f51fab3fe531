"""The `openai` engine against real HTTP on loopback: a scripted fault server, never a mock client."""

import base64
import email.utils
import inspect
import threading
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from pipelines.engines import build_engine
from pipelines.engines.base import Request, image_part, user
from pipelines.engines.openai_compatible import (
    OpenAICompatibleEngine,
    backoff_s,
    parse_completion,
    retry_after_s,
)
from schemas.errors import EngineUnavailable, RecipeError
from tests.servers import fault_server as faults
from tests.servers.fault_server import (
    closed_port_url,
    echo_answer,
    empty,
    hang,
    malformed,
    no_choices,
    ok,
    status,
)

# Fixtures: one fault server per module (and a second one for load balancing), reset for each test.
fault_server_module, fault_server = faults.fault_server_module, faults.fault_server
fault_server_b_module, fault_server_b = faults.fault_server_b_module, faults.fault_server_b


@pytest.fixture
def make_engine():
    engines = []

    def make(base_url, **options):
        options = {"max_concurrency": 4, "timeout_s": 5.0, "backoff_base_s": 0.05, "backoff_max_s": 0.5, **options}
        engine = OpenAICompatibleEngine(base_url=base_url, **options)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


def ask(*prompts: str, **sampling) -> list[Request]:
    return [Request([user(p)], **sampling) for p in prompts]


def echo(prompt: str, k: int = 0) -> str:
    return echo_answer({"messages": [{"role": "user", "content": prompt}]}, k)


# --- retries, pauses, timeouts --------------------------------------------------------------------------


def test_two_500s_then_ok_is_answered_after_two_backoffs(fault_server, make_engine):
    engine = make_engine(fault_server.url, backoff_base_s=0.2, jitter=lambda: 1.0)  # no jitter: delays 0.2 s, 0.4 s
    fault_server.script(status(500), status(500), ok())
    [response] = engine.generate(ask("q"))
    assert response.error is None and response.texts == [echo("q")]
    arrivals = [r.arrived_s for r in fault_server.requests]
    assert len(arrivals) == 3
    assert arrivals[1] - arrivals[0] >= 0.2 and arrivals[2] - arrivals[1] >= 0.4
    assert engine.stats()["retries"] == 2


def test_backoff_is_full_jitter_under_a_doubling_cap():
    assert [backoff_s(k, 0.5, 30, 1.0) for k in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff_s(3, 0.5, 30, 0.0) == 0.0
    assert backoff_s(3, 0.5, 30, 0.25) == 1.0
    assert backoff_s(10_000, 0.5, 30, 0.5) == 15.0  # no overflow


def test_retry_after_reads_seconds_milliseconds_and_http_dates():
    now = 1_000_000.0
    assert retry_after_s({"retry-after": "3"}, now) == 3.0
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "3"}, now) == 0.25
    assert retry_after_s({"retry-after": email.utils.formatdate(now + 7, usegmt=True)}, now) == pytest.approx(7.0)
    assert retry_after_s({"retry-after": email.utils.formatdate(now - 60, usegmt=True)}, now) == 0.0
    assert retry_after_s({}, now) is None and retry_after_s({"retry-after": "soon"}, now) is None


def test_429_pauses_every_worker_of_the_endpoint_until_retry_after(fault_server, make_engine):
    fault_server.reset(latency_s=0.3)
    fault_server.script(status(429, retry_after="1", latency_s=0.15))  # answered once all 4 first sends are in
    engine = make_engine(fault_server.url, max_concurrency=4)
    prompts = [f"q{i}" for i in range(8)]
    responses = engine.generate(ask(*prompts))
    assert [r.texts for r in responses] == [[echo(p)] for p in prompts]
    [limited] = [r for r in fault_server.requests if r.status == 429]
    later = [r.arrived_s for r in fault_server.requests if r.arrived_s > limited.answered_s]
    assert len(later) == 8 - 3  # the retried one and 4 not yet sent; 3 were in flight when the 429 came
    assert min(later) >= limited.answered_s + 1.0
    stats = engine.stats()
    assert stats["rate_limited"] == 1 and stats["retries"] == 0 and len(fault_server.requests) == 9


def test_rate_limit_retries_are_bounded_apart_from_error_retries(fault_server, make_engine):
    engine = make_engine(fault_server.url, max_rate_limit_retries=2, max_retries=0)
    fault_server.script(*[status(429, retry_after="0.05")] * 3)
    [response] = engine.generate(ask("q"))
    assert response.error.startswith("HTTP 429 from ") and "still after 2 waits" in response.error
    assert response.transient and len(fault_server.requests) == 3


def test_hang_past_the_timeout_is_retried_then_a_timeout_error(fault_server, make_engine):
    engine = make_engine(fault_server.url, timeout_s=0.3, max_retries=1)
    fault_server.script(hang(), hang())
    started = time.monotonic()
    [response] = engine.generate(ask("q"))
    assert response.texts == [] and response.error.startswith(f"timeout after 0.3 s from {fault_server.url} after 1 retries")
    assert response.transient
    assert len(fault_server.requests) == 2 and 0.6 <= time.monotonic() - started < 3


def test_malformed_json_is_an_error_carrying_the_raw_body(fault_server, make_engine):
    engine = make_engine(fault_server.url)
    fault_server.script(malformed('{"choices": [{"message": {"content": "cut sh'))
    [response] = engine.generate(ask("q"))
    assert response.error == (f'malformed response (no JSON with choices) from {fault_server.url}: '
                              '{"choices": [{"message": {"content": "cut sh')
    assert len(fault_server.requests) == 1  # not retried


def test_missing_choices_and_empty_content_are_errors_never_empty_answers(fault_server, make_engine):
    engine = make_engine(fault_server.url, max_concurrency=1)
    fault_server.script(no_choices(), empty(), empty(finish_reason="length"))
    missing, blank, truncated = engine.generate(ask("a", "b", "c"))
    assert missing.error.startswith("malformed response (no JSON with choices)") and '"model"' in missing.error
    assert blank.error == f"empty completion (choice 0 of 1, finish_reason=stop) from {fault_server.url}"
    assert not blank.transient and blank.texts == []
    assert "finish_reason=length" in truncated.error
    assert len(fault_server.requests) == 3


def test_a_400_is_not_retried_and_is_replayable(fault_server, make_engine):
    engine = make_engine(fault_server.url)
    fault_server.script(status(400, body='{"error": {"message": "max_tokens is too large"}}'))
    [response] = engine.generate(ask("q"))
    assert response.error == f'HTTP 400 from {fault_server.url}: {{"error": {{"message": "max_tokens is too large"}}}}'
    assert response.transient is False and len(fault_server.requests) == 1


def test_every_request_ends_answered_or_failed_exactly_once(fault_server, make_engine):
    engine = make_engine(fault_server.url, max_concurrency=3)
    fault_server.reset(latency_s=0.01)
    fault_server.script(status(500), ok(), status(503), status(429, retry_after="0.1"), malformed(), status(400),
                        ok(), status(502), empty())
    prompts = [f"question {i}" for i in range(20)]
    responses = engine.generate(ask(*prompts))
    answered = [r for r in responses if r.error is None]
    failed = [r for r in responses if r.error is not None]
    assert len(answered) == 17 and len(failed) == 3  # malformed, 400, empty
    for prompt, response in zip(prompts, responses):  # each answer went with its own request
        assert response.error is not None or response.texts == [echo(prompt)]
    # 20 first sends + 3 retried errors (500, 503, 502) + 1 wait on a 429; nothing lost or sent twice
    assert len(fault_server.requests) == 24
    answered_bodies = [echo_answer(r.body) for r in fault_server.requests if r.outcome == "ok"]
    assert sorted(answered_bodies) == sorted(r.texts[0] for r in answered)


# --- concurrency and load balancing ---------------------------------------------------------------------


def test_concurrency_bound_holds_per_endpoint_and_both_endpoints_get_traffic(fault_server, fault_server_b, make_engine):
    for server in (fault_server, fault_server_b):
        server.reset(latency_s=0.05)
    engine = make_engine([fault_server.url, fault_server_b.url], max_concurrency=3)
    prompts = [f"q{i}" for i in range(60)]
    responses = engine.generate(ask(*prompts))
    assert [r.texts for r in responses] == [[echo(p)] for p in prompts]
    assert fault_server.max_in_flight == fault_server_b.max_in_flight == 3  # used, never exceeded
    assert len(fault_server.requests) + len(fault_server_b.requests) == 60
    assert min(len(fault_server.requests), len(fault_server_b.requests)) >= 20


def test_a_server_over_capacity_answering_429_gets_everything_done(fault_server, make_engine):
    fault_server.reset(latency_s=0.05, capacity=2, over_capacity="429", over_capacity_retry_after="0.05")
    engine = make_engine(fault_server.url, max_concurrency=6)
    prompts = [f"q{i}" for i in range(12)]
    responses = engine.generate(ask(*prompts))
    assert [r.texts for r in responses] == [[echo(p)] for p in prompts]
    refused = [r for r in fault_server.requests if r.status == 429]
    assert refused and engine.stats()["rate_limited"] == len(refused)
    assert len(fault_server.requests) == 12 + len(refused)


def test_an_endpoint_down_at_start_gets_no_traffic(fault_server, make_engine):
    dead = closed_port_url()
    engine = make_engine([dead, fault_server.url])
    responses = engine.generate(ask(*[f"q{i}" for i in range(12)]))
    assert all(r.error is None for r in responses)
    assert len(fault_server.requests) == 12
    stats = engine.stats()["endpoints"]
    assert stats[dead]["calls"] == 0 and stats[dead]["down"]


def test_all_endpoints_down_at_start_is_engine_unavailable_naming_them(make_engine):
    dead, also_dead = closed_port_url(), closed_port_url()
    with pytest.raises(EngineUnavailable) as caught:
        make_engine([dead, also_dead])
    message = str(caught.value)
    assert dead in message and also_dead in message and "unreachable" in message and "vllm serve" in message


def test_429_on_one_endpoint_sends_the_retry_to_the_other(fault_server, fault_server_b, make_engine):
    fault_server.script(status(429, retry_after="5"))
    engine = make_engine([fault_server.url, fault_server_b.url], max_concurrency=1)
    started = time.monotonic()
    [response] = engine.generate(ask("q"))
    assert response.error is None and time.monotonic() - started < 2
    assert [r.status for r in fault_server.requests] == [429] and len(fault_server_b.requests) == 1


def test_generate_from_two_threads_at_once(fault_server, make_engine):
    fault_server.reset(latency_s=0.02)
    engine = make_engine(fault_server.url, max_concurrency=4)
    results = {}

    def run(name):
        prompts = [f"{name} {i}" for i in range(25)]
        results[name] = (prompts, engine.generate(ask(*prompts)))

    threads = [threading.Thread(target=run, args=(name,)) for name in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for prompts, responses in results.values():
        assert [r.texts for r in responses] == [[echo(p)] for p in prompts]
    assert len(results) == 2 and len(fault_server.requests) == 50
    assert fault_server.max_in_flight == 4  # one bound shared by both callers


# --- what is sent ---------------------------------------------------------------------------------------


def test_a_group_of_g_is_one_request_with_n(fault_server, make_engine):
    engine = make_engine(fault_server.url)
    [response] = engine.generate(ask("roll", n=8, temperature=1.0))
    assert response.texts == [echo("roll", k) for k in range(8)]
    [sent] = fault_server.requests
    assert sent.body["n"] == 8


def test_sampling_parameters_and_extra_body_are_sent(fault_server, make_engine):
    engine = make_engine(fault_server.url, extra_body={"top_k": 20}, max_tokens_param="max_completion_tokens")
    engine.generate(ask("q", temperature=0.7, top_p=0.9, max_tokens=33, seed=5, stop=("</answer>",)))
    [sent] = fault_server.requests
    assert {k: sent.body[k] for k in ("model", "temperature", "top_p", "max_completion_tokens", "seed", "stop", "top_k")} == {
        "model": "fault-model", "temperature": 0.7, "top_p": 0.9, "max_completion_tokens": 33, "seed": 5,
        "stop": ["</answer>"], "top_k": 20}
    assert "n" not in sent.body and "max_tokens" not in sent.body
    assert sent.headers["authorization"] == "Bearer EMPTY"


def test_images_are_sent_as_data_urls_of_the_file_bytes(fault_server, make_engine, tmp_path):
    png, jpeg = tmp_path / "a.png", tmp_path / "b.jpg"
    Image.new("RGB", (8, 6), (200, 10, 10)).save(png)
    Image.new("RGB", (8, 6), (10, 10, 200)).save(jpeg)
    engine = make_engine(fault_server.url)
    request = Request([user(image_part(png, "sha-a"), image_part(jpeg, "sha-b"), "What colour?")])
    [response] = engine.generate([request])
    assert response.texts == [echo("What colour?")]
    parts = fault_server.requests[0].body["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    for part, path, mime in ((parts[0], png, "image/png"), (parts[1], jpeg, "image/jpeg")):
        head, data = part["image_url"]["url"].split(",", 1)
        assert head == f"data:{mime};base64" and base64.b64decode(data) == path.read_bytes()


def test_an_unreadable_image_fails_that_request_only(fault_server, make_engine, tmp_path):
    engine = make_engine(fault_server.url)
    bad = Request([user(image_part(tmp_path / "missing.png", "sha-x"), "q")])
    good, broken = engine.generate([Request([user("fine")]), bad])
    assert good.texts == [echo("fine")]
    assert broken.error.startswith("image not readable") and "missing.png" in broken.error
    assert len(fault_server.requests) == 1


SCHEMA = {"title": "Answer", "type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


@pytest.mark.parametrize("mode", ["response_format", "vllm", "off"])
def test_guided_json_is_sent_in_the_configured_shape(fault_server, make_engine, mode):
    engine = make_engine(fault_server.url, guided_json=mode)
    engine.generate([Request([user("q")], response_schema=SCHEMA), Request([user("free")])])
    guided, free = sorted(fault_server.requests, key=lambda r: r.body["messages"][0]["content"][0]["text"] != "q")
    expected = {
        "response_format": {"response_format": {"type": "json_schema", "json_schema": {"name": "Answer", "schema": SCHEMA}}},
        "vllm": {"structured_outputs": {"json": SCHEMA}},
        "off": {},
    }[mode]
    assert {k: guided.body[k] for k in ("response_format", "structured_outputs") if k in guided.body} == expected
    assert "response_format" not in free.body and "structured_outputs" not in free.body


def test_auto_guidance_falls_back_once_per_endpoint(fault_server, make_engine):
    engine = make_engine(fault_server.url, guided_json="auto", max_concurrency=1)
    fault_server.script(status(400, body='{"error": {"message": "response_format json_schema is not supported"}}'))
    responses = engine.generate([Request([user(f"q{i}")], response_schema=SCHEMA) for i in range(3)])
    assert all(r.error is None for r in responses)
    assert ["response_format" in r.body for r in fault_server.requests] == [True, False, False, False]
    assert engine.stats()["guided_fallbacks"] == 1


# --- identity, accounting, limits, profiles -------------------------------------------------------------


def test_model_revision_usage_latency_and_stats(fault_server, make_engine):
    fault_server.reset(latency_s=0.05)
    engine = make_engine(fault_server.url)
    assert (engine.name, engine.model, engine.revision) == ("openai", "fault-model", "fault-org/fault-model")
    [response] = engine.generate(ask("how many"))
    assert response.usage["completion_tokens"] == 4 and response.usage["prompt_tokens"] > 0
    assert 0.05 <= response.latency_s < 1
    assert response.call_id == ask("how many")[0].call_id("openai", "fault-model", "fault-org/fault-model")
    stats = engine.stats()
    assert {k: stats[k] for k in ("requests", "answered", "failed", "calls")} == {"requests": 1, "answered": 1,
                                                                                 "failed": 0, "calls": 1}
    assert stats["completion_tokens"] == 4


def test_a_model_the_server_does_not_serve_is_refused_at_start(fault_server, make_engine):
    with pytest.raises(EngineUnavailable, match="does not serve model 'other'.*it serves: fault-model"):
        make_engine(fault_server.url, model="other")


def test_rpm_spaces_requests(fault_server, make_engine):
    engine = make_engine(fault_server.url, rpm=240)  # 4 a second, bursts of 4
    engine.generate(ask(*[f"q{i}" for i in range(8)]))
    arrivals = sorted(r.arrived_s for r in fault_server.requests)
    assert arrivals[-1] - arrivals[0] >= 0.9  # the second 4 waited ~1 s for the bucket


def test_profile_builds_the_engine_and_lists_unknown_options(fault_server, monkeypatch, tmp_path):
    monkeypatch.setenv("FAULT_KEY", "sk-secret-123")
    engine = build_engine({"engine": "openai", "options": {"base_url": fault_server.url, "api_key_env": "FAULT_KEY"}},
                          home=tmp_path)
    try:
        engine.generate(ask("q"))
        assert fault_server.requests[0].headers["authorization"] == "Bearer sk-secret-123"
        assert "sk-secret" not in repr(engine) and "sk-secret" not in str(engine.stats())
    finally:
        engine.close()
    with pytest.raises(RecipeError, match="unknown option 'max_concurency'.*Did you mean 'max_concurrency'"):
        build_engine({"engine": "openai", "options": {"base_url": fault_server.url, "max_concurency": 4}}, home=tmp_path)
    monkeypatch.delenv("FAULT_KEY")
    with pytest.raises(EngineUnavailable, match="FAULT_KEY"):
        build_engine({"engine": "openai", "options": {"base_url": fault_server.url, "api_key_env": "FAULT_KEY"}},
                     home=tmp_path)


def test_parse_completion_orders_choices_by_index():
    body = b'{"choices": [{"index": 1, "message": {"content": "b"}}, {"index": 0, "message": {"content": "a"}}]}'
    assert parse_completion(body, 2).texts == ["a", "b"]
    assert parse_completion(body, 3).error == "malformed response (2 choices, asked for 3)"


def test_the_aiohttp_transport_keeps_the_fault_behaviour(fault_server, make_engine):
    pytest.importorskip("aiohttp")
    engine = make_engine([closed_port_url(), fault_server.url], http_client="aiohttp", timeout_s=0.3, max_retries=2,
                         jitter=lambda: 0.0)
    fault_server.script(status(503), hang(), malformed(), status(429, retry_after="0.2", latency_s=0.05))
    responses = engine.generate(ask(*[f"q{i}" for i in range(8)]))
    failed = [r.error for r in responses if r.error]
    assert len(failed) == 1 and failed[0].startswith("malformed response")
    assert len(fault_server.requests) == 8 + 3  # the 503, the hang and the 429 each asked again
    stats = engine.stats()
    assert (stats["retries"], stats["timeouts"], stats["rate_limited"]) == (2, 1, 1)


def test_aiohttp_without_aiohttp_is_a_clear_profile_error(fault_server, make_engine, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "aiohttp" else real(name, *a))
    with pytest.raises(RecipeError, match=r'pip install "openai\[aiohttp\]"'):
        make_engine(fault_server.url, http_client="aiohttp")


@pytest.mark.parametrize("path", sorted(Path("configs/models").glob("openai-*.yaml")), ids=lambda p: p.stem)
def test_shipped_openai_profiles_name_only_known_options(path):
    known = set(inspect.signature(OpenAICompatibleEngine).parameters) - {"model", "jitter"}
    profile = yaml.safe_load(path.read_text())
    assert profile["engine"] == "openai" and "base_url" in profile["options"]
    assert set(profile["options"]) <= known


def test_a_videos_frames_go_as_image_url_parts_in_time_order_each_after_its_time(fault_server, make_engine, tmp_path):
    from pipelines.visuals import Visuals

    colours = [(200, 10, 10), (10, 200, 10), (10, 10, 200)]
    rows = [{"asset_id": "v", "kind": "video", "media_uri": "v.mp4", "sha256": "sha-v", "parent_asset_id": None}]
    for k, colour in reversed(list(enumerate(colours))):  # frames listed out of order: time order is restored
        Image.new("RGB", (8, 6), colour).save(tmp_path / f"f{k}.png")
        rows.append({"asset_id": f"f{k}", "kind": "frame", "media_uri": f"f{k}.png", "sha256": f"sha-{k}",
                     "parent_asset_id": "v", "frame_ts": 1.5 * k})
    visuals = Visuals.of(rows)
    engine = make_engine(fault_server.url)
    [response] = engine.generate([Request([user(*visuals.parts(visuals.items[0], lambda uri: tmp_path / uri), "What changes?")])])
    assert not response.error
    parts = fault_server.requests[0].body["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["text"] + ["text", "image_url"] * 3 + ["text"]
    assert [p["text"] for p in parts if p["type"] == "text"] == [
        "Frames of a video, in time order:", "t = 0 s", "t = 1.5 s", "t = 3 s", "What changes?"]
    sent = [base64.b64decode(p["image_url"]["url"].split(",", 1)[1]) for p in parts if p["type"] == "image_url"]
    assert sent == [(tmp_path / f"f{k}.png").read_bytes() for k in range(3)]
