"""The hf engine on a tiny random LLaVA (and a tiny text-only Qwen2) built locally.

A random model writes noise, which is fine here: these tests are about batching, seeding, images,
stop strings and failures, not about answers.
"""

import random
import threading

import pytest
import torch
from PIL import Image, ImageDraw
from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

from pipelines.engines.base import Request, image_part, system, user
from pipelines.engines.hf import HFEngine
from pipelines.policy.tiny_llava import build_tiny_llava, build_tokenizer, weights_hash
from schemas.errors import EngineUnavailable

LINES = [f"How many circles? <think>There are {a} red circles and {b} blue ones.</think><answer>{a + b}</answer>"
         for a in range(6) for b in range(6)]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Tiny models on a shared 2-core machine: one torch thread is 10-40x faster than two.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_llava(tmp_path_factory.mktemp("hf") / "tiny-llava", LINES)


@pytest.fixture(scope="module")
def engine(model_dir):
    return HFEngine(str(model_dir), batch_size=4)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two images as different as can be: a blank white square and random noise with shapes."""
    folder = tmp_path_factory.mktemp("images")
    white = folder / "white.png"
    Image.new("RGB", (96, 64), "white").save(white)
    rng = random.Random(0)
    noisy = Image.effect_noise((80, 80), 80).convert("RGB")
    draw = ImageDraw.Draw(noisy)
    for _ in range(5):
        x, y = rng.randint(0, 70), rng.randint(0, 70)
        draw.rectangle([x, y, x + 10, y + 10], fill=(200, 20, 20))
    noise = folder / "noise.png"
    noisy.save(noise)
    return {"white": str(white), "noise": str(noise)}


def ask(image_path: str | None, text: str = "How many circles?", **sampling) -> Request:
    parts = [image_part(image_path, f"sha-of-{image_path}")] if image_path else []
    return Request(messages=[user(*parts, text)], **{"max_tokens": 12, **sampling})


def test_identity_and_revision(engine, model_dir):
    assert engine.name == "hf" and engine.model == str(model_dir)
    assert engine.revision == weights_hash(model_dir)
    request = ask(None)
    [response] = engine.generate([request])
    assert response.call_id == request.call_id("hf", str(model_dir), engine.revision)


def test_n_samples_per_request(engine, images):
    responses = engine.generate([ask(images["white"], n=5, temperature=1.0, seed=1), ask(None, n=2, temperature=1.0)])
    assert [len(r.texts) for r in responses] == [5, 2]
    assert len(set(responses[0].texts)) > 1  # five draws from a near-uniform model are not all equal
    assert responses[0].usage["completion_tokens"] > 0 and responses[0].usage["prompt_tokens"] > 0


def test_greedy_is_deterministic_and_ignores_the_seed(engine, images):
    first = engine.generate([ask(images["noise"], temperature=0.0, seed=1)])[0].texts
    again = engine.generate([ask(images["noise"], temperature=0.0, seed=2)])[0].texts
    assert first == again


def test_seed_reproduces_whatever_the_batch(engine, images):
    target = ask(images["white"], n=3, temperature=1.0, seed=7)
    alone = engine.generate([target])[0].texts
    # Other requests of other lengths share the batches now (batch_size=4 rows), and come first.
    crowd = [ask(None, "a much longer question about the number of circles in it", n=2, temperature=1.0, seed=3),
             ask(images["noise"], temperature=0.7, top_p=0.9, seed=4)]
    in_a_crowd = engine.generate([*crowd, target])[2].texts
    assert in_a_crowd == alone
    other_seed = engine.generate([ask(images["white"], n=3, temperature=1.0, seed=8)])[0].texts
    assert other_seed != alone


def test_the_image_changes_the_output_distribution(engine, images):
    # Same prompt, same seeded noise: only the pixels differ, so differing samples mean the
    # model reads the image (the prompt token count is equal: both images become 16 tokens).
    white, noise = engine.generate([ask(images["white"], n=8, temperature=1.0, seed=5),
                                    ask(images["noise"], n=8, temperature=1.0, seed=5)])
    assert white.usage["prompt_tokens"] == noise.usage["prompt_tokens"]
    assert sum(a != b for a, b in zip(white.texts, noise.texts)) >= 2


def test_missing_image_is_an_error_response_and_the_batch_is_still_answered(engine, images, tmp_path):
    missing = str(tmp_path / "gone.png")
    responses = engine.generate([ask(images["white"]), ask(missing), ask(None)])
    assert responses[1].texts == [] and "gone.png" in responses[1].error
    assert responses[0].error is None and responses[2].error is None
    assert len(responses[0].texts) == len(responses[2].texts) == 1


def test_text_only_request_with_a_system_message(engine):
    request = Request(messages=[system("Be brief."), user("What is two plus three?")], max_tokens=6)
    [response] = engine.generate([request])
    assert response.error is None and len(response.texts) == 1
    assert 0 < response.usage["completion_tokens"] <= 6


def test_stop_strings_cut_the_text(engine, images):
    sampling = {"temperature": 1.0, "seed": 11, "max_tokens": 24}
    full = engine.generate([ask(images["white"], **sampling)])[0]
    stop = full.text[10:12]
    assert len(stop) == 2, f"sample too short to test: {full.text!r}"
    # A long-running neighbour keeps the batch going after the stop: the count must not include it.
    neighbour = ask(None, "another question", temperature=1.0, seed=12, max_tokens=24)
    cut, _ = engine.generate([ask(images["white"], stop=(stop,), **sampling), neighbour])
    assert cut.text == full.text[:full.text.find(stop)]
    assert cut.usage["completion_tokens"] < full.usage["completion_tokens"]


def test_max_tokens_per_request_in_one_batch(engine):
    short, long = engine.generate([ask(None, max_tokens=3, temperature=1.0, seed=1),
                                   ask(None, max_tokens=9, temperature=1.0, seed=1)])
    assert short.usage["completion_tokens"] <= 3 < long.usage["completion_tokens"] <= 9


def test_concurrent_callers_get_what_a_lone_caller_gets(engine, images):
    requests = [ask(images["noise"], n=2, temperature=1.0, seed=s) for s in range(3)]
    expected = [r.texts for r in engine.generate(requests)]
    results = [None] * 3

    def call(i):
        results[i] = engine.generate([requests[i]])[0].texts

    threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == expected


def test_text_only_model_loads_and_rejects_images(tmp_path, images):
    tokenizer = build_tokenizer(LINES, vocab_size=400)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(tmp_path / "text")
    tokenizer.save_pretrained(tmp_path / "text")

    engine = HFEngine(str(tmp_path / "text"))
    assert not engine.with_vision
    with_text, with_image = engine.generate([ask(None), ask(images["white"])])
    assert with_text.error is None and len(with_text.texts) == 1
    assert "text-only" in with_image.error


def test_a_model_that_does_not_load_raises_engine_unavailable(tmp_path):
    with pytest.raises(EngineUnavailable, match="no-such-model"):
        HFEngine(str(tmp_path / "no-such-model"))


def test_logprobs_and_attentions_when_asked_for(engine, images):
    request = ask(images["noise"], temperature=1.0, seed=7, max_tokens=12)
    plain = engine.generate([request])[0]
    assert plain.token_logprobs is None and plain.attentions is None
    from dataclasses import replace

    detailed = engine.generate([replace(request, return_logprobs=True, return_attentions=True)])[0]
    assert detailed.texts == plain.texts  # asking for details does not change the sample
    (logprobs,), (attention,) = detailed.token_logprobs, detailed.attentions
    n = len(engine._tokenizer(detailed.texts[0], add_special_tokens=False)["input_ids"])
    assert len(logprobs) == n and all(lp <= 0 for lp in logprobs)
    assert len(attention) == n and all(len(row) == n for row in attention)
    for i, row in enumerate(attention):  # causal: nothing on later tokens; weights are probabilities
        assert all(w == 0 for w in row[i + 1:]) and 0 < sum(row[: i + 1]) <= 1 + 1e-5
    assert replace(request, return_logprobs=True).call_id("hf", "m", "r") != request.call_id("hf", "m", "r")


def test_several_images_in_one_request_each_get_their_tokens_and_batch_with_others(engine, images, tmp_path):
    # A video reaches a VLM as its frames in one prompt (pipelines/visuals.py): LLaVA expands one <image> per frame.
    frames = [image_part(images[name], f"sha-{name}") for name in ("white", "noise", "white")]
    video = Request(messages=[user(*frames, "What changes?")], max_tokens=12, n=3, temperature=1.0, seed=11)
    one = Request(messages=[user(frames[0], "What changes?")], max_tokens=12, n=3, temperature=1.0, seed=11)
    alone = engine.generate([video])[0]
    crowd = engine.generate([ask(images["noise"], n=2, temperature=1.0, seed=3), video, one])
    assert crowd[1].texts == alone.texts and not crowd[1].error  # the pixels of each row stay with it in a batch
    two = Request(messages=[user(*frames[:2], "What changes?")], max_tokens=12)
    per_image = engine.generate([two])[0].usage["prompt_tokens"] - crowd[2].usage["prompt_tokens"]
    assert per_image >= 16  # an image is at least its 16 patch tokens
    assert crowd[1].usage["prompt_tokens"] - crowd[2].usage["prompt_tokens"] == 2 * per_image
    # Order is part of what the model sees: the same completion scores differently after the frames are swapped.
    in_order, _ = engine.inspect(video.messages, alone.texts[0], attentions=False)
    swapped, _ = engine.inspect([user(frames[1], frames[0], frames[2], "What changes?")], alone.texts[0], attentions=False)
    assert in_order != pytest.approx(swapped)
