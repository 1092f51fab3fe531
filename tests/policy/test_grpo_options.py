"""GRPO's options on the real tiny policy, on CPU: LoRA, checkpoints, DAPO's dynamic sampling, PTST, the device.

Rows are questions of the synthetic world (images rendered from scene graphs, exact answers), put to
the locally built `tiny-llava` policy (cold-started on the world's train split, so it answers in the
<think>/<answer> format and sometimes right). Every run is a few steps: about 0.3 s each.
"""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipelines.policy.dynamic_sampling import concat_batches, informative_groups, take_rows
from pipelines.policy.grpo import LoraSettings, device_settings, train_grpo
from pipelines.policy.local import ensure_local_model
from pipelines.policy.prompt import trl_prompt
from pipelines.policy.ptst import Phase, check_schedule, train_phases
from pipelines.policy.tiny_llava import weights_hash
from pipelines.rewards import trl_reward
from pipelines.world import knowledge_of
from pipelines.world.render import render
from pipelines.world.scenes import make_scene

from . import one_thread

_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)
REWARDS = [trl_reward("format"), trl_reward("accuracy")]


@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> Path:
    return ensure_local_model("tiny-llava", tmp_path_factory.mktemp("home"))  # built once per machine (THINKMILL_MODELS)


def world_rows(n: int, seed: int = 500) -> list[dict]:
    """`n` GRPO rows: counting and arithmetic scenes, one short-answer question each."""
    rows = []
    for index in range(n):
        scene = make_scene(("counting", "arithmetic")[index % 2], seed + index)
        item = next(i for i in knowledge_of(scene).qa_items(scene) if i.answer_type in ("num", "mc", "fib"))
        rows.append({"prompt": trl_prompt(item.question, item.answer_type, item.choices), "image": render(scene),
                     "solution": item.answer, "answer_type": item.answer_type, "choices": list(item.choices),
                     "question_id": f"q{index}"})
    return rows


class Recorder:
    """A reward that records each call TRL makes (one call per generation batch) and scores with `score`."""

    def __init__(self, score=lambda texts, columns: [1.0] * len(texts)):
        self.score, self.calls = score, []
        self.__name__ = "recorded"

    def __call__(self, completions, **columns):
        self.calls.append({"n": len(completions), "question_ids": list(columns["question_id"])})
        return self.score(completions, columns)


def changed_tensors(before: Path, after: Path) -> set[str]:
    first, second = load_file(before / "model.safetensors"), load_file(after / "model.safetensors")
    assert set(first) == set(second)
    return {name for name in first if not torch.equal(first[name], second[name])}


# --- LoRA and checkpoints ---------------------------------------------------------------------------

def test_a_lora_run_trains_adapters_and_saves_the_merged_policy(tmp_path, policy):
    lora = LoraSettings(rank=4, alpha=8, target_modules=("q_proj", "v_proj"))
    metrics = train_grpo(policy, world_rows(8), REWARDS, tmp_path / "lora", max_steps=2, per_device_train_batch_size=16,
                         max_completion_length=24, learning_rate=2e-2, lora=lora)
    assert any(step["reward_std"] > 0 for step in metrics["log"])  # something to learn from
    changed = changed_tensors(policy, tmp_path / "lora")
    assert changed and all(name.endswith(("q_proj.weight", "v_proj.weight")) for name in changed)  # only the adapted layers
    assert (tmp_path / "lora" / "lora-adapter" / "adapter_model.safetensors").exists()
    assert json.loads((tmp_path / "lora" / "lora-adapter" / "adapter_config.json").read_text())["r"] == 4
    assert weights_hash(tmp_path / "lora") != weights_hash(policy)  # the policy id follows the merged weights
    assert metrics["lora"] == {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "saved": "merged"}


def test_checkpoints_are_saved_every_save_steps_without_pickles(tmp_path, policy):
    metrics = train_grpo(policy, world_rows(4), REWARDS, tmp_path / "policy", max_steps=2, max_completion_length=24,
                         learning_rate=1e-3, save_steps=1, checkpoint_dir=tmp_path / "checkpoints")
    assert metrics["checkpoints"] == [str(tmp_path / "checkpoints" / f"checkpoint-{step}") for step in (1, 2)]
    for folder in map(Path, metrics["checkpoints"]):
        names = {p.name for p in folder.iterdir()}
        assert {"model.safetensors", "config.json", "trainer_state.json", "training_args.json", "tokenizer.json"} <= names
        assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl"))]  # no pickles on disk
    state = json.loads((tmp_path / "checkpoints" / "checkpoint-1" / "trainer_state.json").read_text())
    assert state["global_step"] == 1
    assert weights_hash(tmp_path / "checkpoints" / "checkpoint-2") == weights_hash(tmp_path / "policy")  # the last one is the policy


def test_checkpoints_need_somewhere_to_go(tmp_path, policy):
    with pytest.raises(ValueError, match="save_steps needs a checkpoint_dir"):
        train_grpo(policy, world_rows(2), REWARDS, tmp_path / "p", save_steps=1)


# --- DAPO's dynamic sampling ----------------------------------------------------------------------

def test_dynamic_sampling_stops_at_its_bound_when_no_group_has_a_reward_spread(tmp_path, policy):
    constant = Recorder()  # every group: all rewards equal, so nothing is informative
    metrics = train_grpo(policy, world_rows(6), [constant], tmp_path / "p", max_steps=2, max_completion_length=16,
                         online_filter="dapo", max_extra_generation_batches=2)
    assert len(constant.calls) == 2 * (1 + 2)  # per step: the batch, then exactly 2 extra generation batches
    assert all(call["n"] == 8 for call in constant.calls)
    for step in metrics["log"]:
        assert step["dynamic_sampling/generation_batches"] == 3
        assert step["dynamic_sampling/bound_hit"] == 1.0 and step["dynamic_sampling/kept_groups"] == 0


def test_dynamic_sampling_fills_the_batch_with_groups_that_have_a_spread(tmp_path, policy):
    generator = torch.Generator().manual_seed(0)
    spread_for = {"q1", "q4"}  # only these questions get rewards that differ within a group

    def score(texts, columns):
        return [torch.rand(1, generator=generator).item() if q in spread_for else 0.0 for q in columns["question_id"]]

    recorder = Recorder(score)
    metrics = train_grpo(policy, world_rows(6), [recorder], tmp_path / "p", max_steps=3, max_completion_length=16,
                         online_filter="dapo", max_extra_generation_batches=20)
    assert all(step["dynamic_sampling/kept_groups"] == 2 and step["dynamic_sampling/bound_hit"] == 0 for step in metrics["log"])
    assert len(recorder.calls) == sum(step["dynamic_sampling/generation_batches"] for step in metrics["log"])
    assert len(recorder.calls) > 3  # some batches had no informative group and were generated again
    assert all(step["loss"] != 0 for step in metrics["log"])  # every step trained on informative groups only


def test_group_surgery_keeps_rows_and_pads_to_the_widest():
    group_size = 2
    assert informative_groups(torch.tensor([0.0, 0.0, 1.0, -1.0]), group_size) == [False, True]
    first = {"prompt_ids": torch.tensor([[0, 5], [0, 6]]), "prompt_mask": torch.tensor([[0, 1], [0, 1]]),
             "completion_ids": torch.tensor([[7], [8]]), "completion_mask": torch.tensor([[1], [1]]),
             "advantages": torch.tensor([1.0, -1.0]), "num_images": [1, 1], "pixel_values": [torch.zeros(1, 3), torch.ones(1, 3)],
             "num_items_in_batch": torch.tensor(99)}
    second = {"prompt_ids": torch.tensor([[4, 5, 6], [4, 5, 6], [1, 2, 3], [1, 2, 3]]), "prompt_mask": torch.ones(4, 3, dtype=torch.long),
              "completion_ids": torch.tensor([[9, 9, 0], [9, 9, 9], [1, 0, 0], [2, 0, 0]]),
              "completion_mask": torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 0, 0]]),
              "advantages": torch.tensor([0.0, 0.0, 0.5, -0.5]), "num_images": [1, 1, 1, 1],
              "pixel_values": [torch.full((1, 3), float(i)) for i in range(4)], "num_items_in_batch": torch.tensor(99)}
    kept = take_rows(second, [2, 3])
    joined = concat_batches([first, kept], pad_token_id=0)
    assert joined["prompt_ids"].tolist() == [[0, 0, 5], [0, 0, 6], [1, 2, 3], [1, 2, 3]]  # left-padded
    assert joined["prompt_mask"].tolist() == [[0, 0, 1], [0, 0, 1], [1, 1, 1], [1, 1, 1]]
    assert joined["completion_ids"].tolist() == [[7, 0, 0], [8, 0, 0], [1, 0, 0], [2, 0, 0]]  # right-padded
    assert joined["advantages"].tolist() == [1.0, -1.0, 0.5, -0.5]
    assert [p[0, 0].item() for p in joined["pixel_values"]] == [0.0, 1.0, 2.0, 3.0] and joined["num_images"] == [1] * 4
    assert joined["num_items_in_batch"].item() == 4  # completion tokens of the kept rows, recounted


# --- PTST -----------------------------------------------------------------------------------------

def test_ptst_runs_its_phases_with_their_lengths_and_group_sizes(tmp_path, policy):
    recorder = Recorder(lambda texts, columns: [float(len(t)) for t in texts])  # longer is better: always a spread
    phases = check_schedule([(12, 4), (24, 2)])
    metrics = train_phases(policy, world_rows(4), [recorder], tmp_path / "final", phases=phases, prompts_per_step=2,
                           phase_dir=tmp_path / "phases", max_steps=2, learning_rate=1e-3)
    first, second = metrics["phases"]
    assert (first["max_completion_length"] * first["num_generations"], second["max_completion_length"] * second["num_generations"]) == (48, 48)
    # G really used: each reward call holds 2 prompts, each repeated G times
    group_sizes = [call["n"] // len(set(call["question_ids"])) for call in recorder.calls]
    assert group_sizes == [4, 4, 2, 2] and [call["n"] for call in recorder.calls] == [8, 8, 4, 4]
    # lengths really used: phase 1 is cut at 12 tokens, phase 2 lets answers run past it
    assert all(step["completions/max_length"] <= 12 for step in first["log"])
    assert all(step["completions/max_length"] <= 24 for step in second["log"])
    assert max(step["completions/max_length"] for step in second["log"]) > 12
    # each phase starts from the previous one's weights
    assert first["started_from"] == str(policy) and second["started_from"] == str(tmp_path / "phases" / "phase-1")
    assert len({weights_hash(policy), weights_hash(tmp_path / "phases" / "phase-1"), weights_hash(tmp_path / "final")}) == 3
    assert metrics["steps"] == 4 and [s["step"] for s in metrics["log"]] == [1, 2, 3, 4]
    assert [s["phase"] for s in metrics["log"]] == [1, 1, 2, 2]


@pytest.mark.parametrize("schedule, message", [
    ([(32, 8), (64, 2)], "stage 1: 32 × 8 = 256, stage 2: 64 × 2 = 128"),
    ([(32, 8), (64, 4), (128, 1)], "stage 3: G = 1"),
    ([(32,)], r"stage 1: expected \[max_completion_length, G\]"),
    ([], "the schedule is empty"),
])
def test_an_inconsistent_ptst_schedule_is_an_error_naming_its_stages(schedule, message):
    with pytest.raises(ValueError, match=message):
        check_schedule(schedule)


def test_vision_r1_schedule_is_consistent():
    assert check_schedule([[4096, 16], [8192, 8], [16384, 4]]) == [Phase(4096, 16), Phase(8192, 8), Phase(16384, 4)]


# --- the device -----------------------------------------------------------------------------------

def test_device_settings_for_each_machine():
    assert device_settings(cuda=False, vllm_installed=True) == {"use_cpu": True, "bf16": False, "gradient_checkpointing": False,
                                                                "use_vllm": False}
    assert device_settings(cuda=True, vllm_installed=False) == {"use_cpu": False, "bf16": True, "gradient_checkpointing": True,
                                                                "use_vllm": False}
    assert device_settings(cuda=True, vllm_installed=True, vllm_mode="off")["use_vllm"] is False
    assert device_settings(cuda=True, vllm_installed=True) == {
        "use_cpu": False, "bf16": True, "gradient_checkpointing": True, "use_vllm": True, "vllm_mode": "colocate",
        "vllm_gpu_memory_utilization": 0.3}
    assert device_settings(cuda=True, vllm_installed=True, vllm_mode="server", vllm_server_base_url="http://h:8000") == {
        "use_cpu": False, "bf16": True, "gradient_checkpointing": True, "use_vllm": True, "vllm_mode": "server",
        "vllm_server_base_url": "http://h:8000"}
    with pytest.raises(ValueError, match="needs vllm_server_base_url"):
        device_settings(cuda=True, vllm_installed=True, vllm_mode="server")
    with pytest.raises(ValueError, match="unknown vllm_mode 'remote'; known: colocate, server, off"):
        device_settings(cuda=True, vllm_installed=True, vllm_mode="remote")


@pytest.mark.parametrize("mode, url", [("colocate", None), ("server", "http://127.0.0.1:8000")])
def test_the_gpu_settings_are_grpo_config_fields_it_accepts(tmp_path, mode, url):
    from trl import GRPOConfig

    settings = device_settings(cuda=True, vllm_installed=True, vllm_mode=mode, vllm_server_base_url=url)
    assert set(settings) <= {field.name for field in dataclasses.fields(GRPOConfig)}
    # No GPU here: bf16 would be refused, so check the vLLM fields with the CPU's precision.
    config = GRPOConfig(output_dir=str(tmp_path), report_to="none", **{**settings, "use_cpu": True, "bf16": False})
    assert config.gradient_checkpointing is True
    assert (config.use_vllm, config.vllm_mode, config.vllm_server_base_url) == (True, mode, url)


# --- training order -------------------------------------------------------------------------------

def test_without_shuffling_trl_trains_in_the_given_order(tmp_path, policy):
    rows = world_rows(4)
    recorder = Recorder(lambda texts, columns: [float(len(t)) for t in texts])
    train_grpo(policy, [rows[3], rows[1], rows[2], rows[0]], [recorder], tmp_path / "p", max_steps=2,
               max_completion_length=8, shuffle=False)
    assert [call["question_ids"] for call in recorder.calls] == [["q3"] * 4 + ["q1"] * 4, ["q2"] * 4 + ["q0"] * 4]
