"""Cold-start SFT, then GRPO on TRL, on the tiny policy and counting scenes, on CPU.

The SFT tests check that the random model learns the answer format (the point of the cold start);
the GRPO test checks that TRL trains it against a real reward: rewards vary within groups, the
log has one entry per step, and the saved weights differ from the starting ones.
"""

import pytest

from pipelines.engines.base import Request, image_part, user
from pipelines.engines.hf import HFEngine
from pipelines.policy.grpo import mean_reward_last, train_grpo
from pipelines.policy.sft import chat_messages, sft
from pipelines.policy.tiny_llava import build_tiny_llava, weights_hash

from . import FORMAT, QUESTION, answer_of, corpus, counting_examples, formatted, one_thread

_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)
SFT_STEPS = 150  # about 6 s; 300 steps on 500 examples reach about 98 % formatted samples


@pytest.fixture(scope="module")
def examples():
    return counting_examples(300)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, examples):
    return build_tiny_llava(tmp_path_factory.mktemp("policy") / "base", corpus(examples))


@pytest.fixture(scope="module")
def sft_run(base_dir, examples):
    out_dir = base_dir.parent / "sft"
    return out_dir, sft(base_dir, examples, out_dir, steps=SFT_STEPS, batch_size=8, learning_rate=1e-3, seed=0)


@pytest.fixture(scope="module")
def held_out_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("held-out")
    paths = []
    for i, example in enumerate(counting_examples(8, seed=99)):
        example.image.save(folder / f"{i}.png")
        paths.append(str(folder / f"{i}.png"))
    return paths


def format_share(model_dir, image_paths) -> float:
    """Share of samples at temperature 1 in the exact <think>…</think><answer>…</answer> format."""
    engine = HFEngine(str(model_dir), batch_size=32)
    requests = [Request(messages=[user(image_part(path, str(i)), QUESTION)], n=4, temperature=1.0, seed=i, max_tokens=40)
                for i, path in enumerate(image_paths)]
    texts = [text for response in engine.generate(requests) for text in response.texts]
    return sum(map(formatted, texts)) / len(texts)


def test_sft_loss_drops_by_a_clear_margin(sft_run):
    _, metrics = sft_run
    assert metrics["steps"] == SFT_STEPS == len(metrics["losses"])
    assert metrics["final_loss"] < 0.25 * metrics["initial_loss"]
    assert metrics["seconds_per_step"] > 0


def test_sft_teaches_the_answer_format(base_dir, sft_run, held_out_images):
    sft_dir, _ = sft_run
    before, after = format_share(base_dir, held_out_images), format_share(sft_dir, held_out_images)
    assert before == 0.0
    assert after >= 0.6


def test_sft_is_deterministic_under_its_seed(tmp_path, base_dir, examples, sft_run):
    sft_dir, metrics = sft_run
    again = sft(base_dir, examples[:40], tmp_path / "a", steps=5, seed=3)
    same = sft(base_dir, examples[:40], tmp_path / "b", steps=5, seed=3)
    assert again["losses"] == same["losses"]
    assert weights_hash(tmp_path / "a") == weights_hash(tmp_path / "b")
    assert weights_hash(tmp_path / "a") != weights_hash(base_dir)


def format_reward(completions, **kwargs):
    return [1.0 if formatted(text) else 0.0 for text in completions]


def accuracy_reward(completions, solution, **kwargs):
    matches = [FORMAT.match(text.strip()) for text in completions]
    return [1.0 if m and m.group(1).strip() == answer else 0.0 for m, answer in zip(matches, solution)]


def test_grpo_trains_the_policy_against_a_real_reward(tmp_path, sft_run):
    sft_dir, _ = sft_run
    rows = [{"prompt": chat_messages(e), "image": e.image, "solution": answer_of(e), "answer_type": "num"}
            for e in counting_examples(16, seed=7)]
    logged = []
    metrics = train_grpo(sft_dir, rows, [format_reward, accuracy_reward], tmp_path / "grpo",
                         max_steps=4, num_generations=4, per_device_train_batch_size=8,
                         max_completion_length=32, learning_rate=1e-3, seed=0, log=logged.append)

    steps = metrics["log"]
    assert metrics["steps"] == 4
    assert [s["step"] for s in steps] == [1, 2, 3, 4] == [e["step"] for e in logged]
    assert all("rewards/format_reward/mean" in s and "rewards/accuracy_reward/mean" in s for s in steps)
    assert any(s["reward_std"] > 0 for s in steps)  # some group had different rewards: a real advantage
    assert any(s["rewards/format_reward/mean"] > 0 for s in steps)
    assert metrics["train_reward"] == mean_reward_last(steps)
    assert weights_hash(tmp_path / "grpo") != weights_hash(sft_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grpo"]  # no temporary folders left


def test_grpo_rejects_a_batch_that_does_not_hold_whole_groups(tmp_path, base_dir):
    with pytest.raises(ValueError, match="multiple of num_generations"):
        train_grpo(base_dir, [{"prompt": [], "image": None}], [format_reward], tmp_path / "x",
                   num_generations=3, per_device_train_batch_size=8)


def test_grpo_refuses_to_mix_rows_with_and_without_images(tmp_path, base_dir):
    example = counting_examples(1)[0]
    rows = [{"prompt": chat_messages(example), "image": example.image, "solution": "1"},
            {"prompt": [{"role": "user", "content": QUESTION}], "image": None, "solution": "1"}]
    with pytest.raises(ValueError, match="1 rows have an image and 1 do not"):
        train_grpo(base_dir, rows, [format_reward], tmp_path / "x")


def test_grpo_runs_on_text_only_rows(tmp_path, sft_run):
    sft_dir, _ = sft_run
    rows = [{"prompt": [{"role": "user", "content": QUESTION}], "image": None, "solution": answer_of(e)}
            for e in counting_examples(4, seed=3)]
    metrics = train_grpo(sft_dir, rows, [format_reward, accuracy_reward], tmp_path / "text",
                         max_steps=1, max_completion_length=24)
    assert metrics["steps"] == 1 and "rewards/accuracy_reward/mean" in metrics["log"][0]
