"""One small dataset made by `loop-grpo` with two rounds, through the real flow, shared by the loop and export tests."""

import pytest

# Small on purpose: 8 scenes, G = 4, two GRPO steps of two prompts per round. The held-out share is
# raised so that a few of the ~14 questions are set aside.
LOOP_OVERRIDES = ["rounds=2", "source.synthetic.scenes=8", "rollouts.group_size=4", "rescore.group_size=4",
                  "grpo.max_steps=2", "grpo.num_generations=2", "grpo.batch_size=4", "holdout.held_out_share=0.25"]


@pytest.fixture(scope="session")
def looped(tmp_path_factory):
    from flows.recipe_flow import run
    from stores.lake import dataset_root

    home = tmp_path_factory.mktemp("loop-home")
    summary = run("loop-grpo", LOOP_OVERRIDES, home=home)
    return {"home": home, "root": dataset_root(home, "loop"), "summary": summary}


@pytest.fixture
def sql(looped):
    """Read-only SQL over the loop dataset, the way a user would query it."""
    from stores.lake import Lake

    with Lake.open(looped["root"], read_only=True) as lake:
        yield lambda text: lake.sql(text).to_pylist()
