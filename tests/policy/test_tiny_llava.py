"""The tiny policy builds from a config, loads offline through the Auto classes, and is reproducible."""

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from pipelines.policy.tiny_llava import REASONING_TAGS, TinyLlavaConfig, build_tiny_llava, weights_hash

from . import corpus, counting_examples, one_thread

CONFIG = TinyLlavaConfig()
_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


@pytest.fixture(scope="module")
def lines():
    return corpus(counting_examples(60))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, lines):
    return build_tiny_llava(tmp_path_factory.mktemp("tiny") / "base", lines, CONFIG)


def test_loads_offline_with_auto_classes(model_dir):
    processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, local_files_only=True)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert model.config.text_config.hidden_size == CONFIG.text_hidden_size
    # vocab = tokenizer size: a bigger vocab would let a random model sample undecodable ids
    assert model.config.text_config.vocab_size == len(processor.tokenizer)


def test_chat_template_renders_image_and_expands_it(model_dir, lines):
    processor = AutoProcessor.from_pretrained(model_dir)
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many?"}]},
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == ("<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\n"
                    "<|vision_start|><|image_pad|><|vision_end|>How many?<|im_end|>\n<|im_start|>assistant\n")
    image = counting_examples(1)[0].image
    encoded = processor(text=text, images=[image], return_tensors="pt")
    n_image_tokens = (CONFIG.image_size // CONFIG.patch_size) ** 2
    assert (encoded["input_ids"] == processor.image_token_id).sum().item() == n_image_tokens
    assert encoded["pixel_values"].shape == (1, 3, CONFIG.image_size, CONFIG.image_size)


def test_reasoning_tags_are_single_tokens_that_survive_decoding(model_dir):
    tokenizer = AutoProcessor.from_pretrained(model_dir).tokenizer
    text = "<think>There are 3 red circles.</think><answer>3</answer>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    for tag in REASONING_TAGS:
        assert len(tokenizer(tag, add_special_tokens=False)["input_ids"]) == 1
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_same_corpus_and_config_give_the_same_weights(tmp_path, model_dir, lines):
    again = build_tiny_llava(tmp_path / "again", lines, CONFIG)
    assert weights_hash(again) == weights_hash(model_dir)
    assert (again / "tokenizer.json").read_bytes() == (model_dir / "tokenizer.json").read_bytes()
    other_seed = build_tiny_llava(tmp_path / "other", lines, TinyLlavaConfig(seed=1))
    assert weights_hash(other_seed) != weights_hash(model_dir)


def test_rebuild_replaces_the_folder_and_leaves_no_temporaries(tmp_path, lines):
    target = tmp_path / "policy"
    build_tiny_llava(target, lines, CONFIG)
    build_tiny_llava(target, lines, TinyLlavaConfig(seed=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]
    assert AutoModelForImageTextToText.from_pretrained(target) is not None


def test_config_hash_tracks_fields():
    assert TinyLlavaConfig().config_hash() == TinyLlavaConfig().config_hash()
    assert TinyLlavaConfig(seed=1).config_hash() != TinyLlavaConfig().config_hash()


def test_random_model_generates_with_an_image(model_dir):
    processor = AutoProcessor.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    images = [e.image for e in counting_examples(2)]
    inputs = processor(text=[text, text], images=images, return_tensors="pt", padding=True)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape == (2, inputs["input_ids"].shape[1] + 4)
