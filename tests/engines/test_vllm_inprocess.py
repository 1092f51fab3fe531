"""The in-process vLLM engine: what can run here (vLLM is a GPU extra) is checked; its absence is a clear error."""

import importlib.util
import types

import pytest

from pipelines.engines import build_engine
from pipelines.engines.base import Request, image_part, user
from pipelines.engines.vllm_inprocess import sampling_params
from schemas.errors import EngineUnavailable


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_without_vllm_the_profile_fails_with_what_to_do(tmp_path):
    with pytest.raises(EngineUnavailable) as caught:
        build_engine({"engine": "vllm", "model": "Qwen/Qwen2.5-VL-3B-Instruct"}, home=tmp_path)
    assert "pip install 'thinkmill[vllm]'" in str(caught.value) and "openai" in str(caught.value)


def test_sampling_params_carry_the_group_size_and_the_schema(monkeypatch):
    recorded = {}
    fake_vllm = types.SimpleNamespace(SamplingParams=lambda **kw: recorded.update(kw) or kw)
    structured = types.ModuleType("vllm.sampling_params")
    structured.StructuredOutputsParams = lambda **kw: ("structured", kw)
    monkeypatch.setitem(__import__("sys").modules, "vllm.sampling_params", structured)
    request = Request(messages=[user("hi")], n=8, temperature=1.0, max_tokens=64, seed=3, stop=("</answer>",),
                      response_schema={"type": "object"})
    sampling_params(fake_vllm, request)
    assert recorded["n"] == 8 and recorded["seed"] == 3 and recorded["stop"] == ["</answer>"]
    assert recorded["structured_outputs"] == ("structured", {"json": {"type": "object"}})


def test_images_become_data_urls_like_the_openai_engine(tmp_path):
    from PIL import Image

    from pipelines.engines.openai_compatible import chat_messages

    path = tmp_path / "x.png"
    Image.new("RGB", (8, 8), "red").save(path)
    (message,) = chat_messages([user(image_part(path, "abc"), "what colour?")])
    assert message["content"][0]["type"] == "image_url"
    assert message["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
