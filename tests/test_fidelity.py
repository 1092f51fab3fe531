"""`flow report fidelity` on a version the `fidelity` recipe built through the real flow, checked against SQL."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.fidelity import choose_arms
from stores.lake import Lake, dataset_root

pytestmark = pytest.mark.slow
OVERRIDES = ["source.synthetic.scenes=12", "mcts.max_iterations=3", "mcts.max_steps=2", "modomodo.pilot_steps=2"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from flows.recipe_flow import run

    home = tmp_path_factory.mktemp("home")
    run("fidelity", OVERRIDES, home=home)
    env = {**os.environ, "THINKMILL_HOME": str(home)}
    flow = Path(sys.executable).parent / "flow"
    done = subprocess.run([str(flow), "report", "fidelity", "--dataset", "fidelity", "--steps", "2", "--format", "json"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    table = subprocess.run([str(flow), "report", "fidelity", "--dataset", "fidelity", "--steps", "2", "--no-observe-mixture"],
                           env=env, capture_output=True, text=True, timeout=600)
    assert table.returncode == 0, table.stderr
    return json.loads(done.stdout), table.stdout, Lake.open(dataset_root(home, "fidelity"), read_only=True)


def ids(lake, query) -> set[str]:
    return {r["question_id"] for r in lake.sql(query).to_pylist()}


TRAINING = """SELECT q.question_id FROM questions q JOIN splits s USING (question_id)
              WHERE s.split = 'train' AND q.reward_route = 'rule'
              AND q.question_id IN (SELECT question_id FROM difficulty WHERE policy_id = '{policy}')"""


def test_every_arm_is_the_selection_sql_gives_and_trains_the_same_way(report):
    result, _, lake = report
    arms = {a["name"]: a for a in result["arms"]}
    assert list(arms) == ["base", "mcts", "random", "self_consistency", "full"]
    policy = result["policy_id"]
    pool = ids(lake, TRAINING.format(policy=policy))
    mcts = ids(lake, f"""SELECT question_id FROM difficulty WHERE method = 'mcts' AND policy_id = '{policy}'
                         AND (mcts_iters IS NULL OR mcts_iters > 5)""") & pool
    sc = ids(lake, f"""SELECT question_id FROM difficulty WHERE method = 'group_stats' AND policy_id = '{policy}'
                       AND n_rollouts >= 50 AND pass_rate < 0.2""") & pool
    assert arms["full"]["n_train"] == len(pool) == result["n_training_pool"]
    assert arms["mcts"]["n_train"] == len(mcts) > 0 and arms["random"]["n_train"] == len(mcts)
    assert arms["self_consistency"]["n_train"] == len(sc)
    for name in ("mcts", "random", "self_consistency", "full"):
        arm = arms[name]
        if arm["n_train"] >= 2:
            assert arm["steps"] == 2 and 0.0 <= arm["held_out_reward"] <= 1.0
        assert set(arm["trained_ids"]) <= pool  # nothing held out ever trains
    assert set(arms["mcts"]["trained_ids"]) <= mcts
    assert result["held_out"]["n"] == len(ids(lake, "SELECT question_id FROM splits WHERE split = 'held_out'") &
                                          ids(lake, "SELECT question_id FROM questions WHERE reward_route = 'rule'"))
    assert arms["base"]["held_out_reward"] is not None


def test_rap_and_mixture_sections_match_the_version(report):
    result, text, lake = report
    rap, mixture = result["rap"], result["mixture"]
    counts = lake.sql(f"SELECT count(*) FILTER (WHERE selected) AS selected, count(*) AS scored FROM difficulty "
                      f"WHERE method = 'rap' AND policy_id = '{result['policy_id']}'").to_pylist()[0]
    selected, scored = counts["selected"], counts["scored"]
    assert (rap["n_selected"], rap["n_scored"]) == (selected, scored) and scored > 0
    gaps = lake.sql("SELECT count(*) AS n FROM difficulty WHERE method = 'group_stats' AND cde_gap IS NOT NULL").to_pylist()[0]["n"]
    assert sum(count for _, _, count in rap["cde_gap_histogram"]) == rap["n_with_gap"] == gaps
    uniform = lake.sql("SELECT weights, observed FROM mixtures WHERE method = 'seed' AND detail LIKE '%\"uniform\"%'").to_pylist()[0]
    assert mixture["uniform"]["weights"] == pytest.approx(uniform["weights"])
    assert mixture["surrogate"]["observed"] is not None  # one pilot ran on the surrogate's best mixture
    assert "CDE gap" in text and "│ mcts " in text and "│ full " in text
    surrogate_line = next(line for line in text.splitlines() if line.strip().startswith("surrogate ("))
    assert "observed -" in surrogate_line  # --no-observe-mixture: predicted only


def test_self_consistency_is_refused_on_groups_smaller_than_50():
    rows = [{"question_id": "q", "policy_id": "p", "method": "group_stats", "n_rollouts": 8, "pass_rate": 0.0,
             "n_correct": 0, "reward_std": 0.0}]
    arms = {a.name: a for a in choose_arms(rows, ["q"], policy_id="p")}
    assert arms["self_consistency"].question_ids == [] and "50 rollouts" in arms["self_consistency"].chosen_by
    assert arms["mcts"].question_ids == [] and "`mcts` step" in arms["mcts"].chosen_by
