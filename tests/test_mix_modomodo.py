"""End to end: `mix-modomodo` as a real Prefect flow on a real DuckLake catalog, offline, at a tiny size.

Two training families and one out-of-domain family, so three distinct pilot runs of the tiny policy
(with two domains a leave-one-out mixture is the other one-hot). Checks read the lake with SQL.
"""

import json

import pytest

from stores.lake import Lake

pytestmark = pytest.mark.slow

OVERRIDES = ["source.synthetic.scenes=9", "source.synthetic.families=[counting, arithmetic, bar_chart]"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from flows.recipe_flow import run
    from stores.lake import dataset_root

    home = tmp_path_factory.mktemp("home")
    summary = run("mix-modomodo", OVERRIDES, home=home)
    return {"root": dataset_root(home, "modomodo"), "summary": summary}


def sql(built, query):
    with Lake.open(built["root"], read_only=True) as lake:
        return lake.sql(query).to_pylist()


def test_every_verified_question_takes_part_or_is_rejected_with_its_reason(built):
    steps = {s["stage"]: s for s in built["summary"]["steps"]}
    stage = steps["modomodo"]
    assert stage["n_in"] == steps["verify"]["n_out"] > 0
    assert stage["n_in"] == stage["n_out"] + stage["n_rejected"]
    rejected = sql(built, "SELECT subject_id, reason FROM rejects WHERE stage = 'modomodo'")
    assert {r["reason"] for r in rejected} <= {"modomodo.model_judged", "modomodo.too_few_items", "modomodo.missing_image"}
    judged = sql(built, """SELECT question_id FROM questions WHERE reward_route = 'model' AND question_id NOT IN
                           (SELECT subject_id FROM rejects WHERE stage <> 'modomodo')""")
    assert {r["subject_id"] for r in rejected if r["reason"] == "modomodo.model_judged"} == {r["question_id"] for r in judged}
    assert not list((built["root"] / "policies").glob(".pilot-*"))  # pilot checkpoints are scored, then deleted


def test_seed_heuristic_and_surrogate_mixtures_are_written(built):
    rows = sql(built, "SELECT * FROM mixtures")
    by_method: dict[str, list] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)
        assert row["domain_column"] == "category" and row["domains"] == ["arithmetic", "counting"]
        assert min(row["weights"]) >= 0 and sum(row["weights"]) == pytest.approx(1.0)
        assert row["predicted"] is not None
    assert {m: len(r) for m, r in by_method.items()} == {"seed": 5, "alpha": 3, "ridge_vif": 1, "leave_one_out": 1,
                                                         "surrogate": 3}
    seeds = {json.loads(r["detail"])["kind"]: r for r in by_method["seed"]}
    assert seeds["one_hot:arithmetic"]["weights"] == [1.0, 0.0] and seeds["uniform"]["weights"] == [0.5, 0.5]
    for row in seeds.values():
        detail = json.loads(row["detail"])
        assert row["observed"] == detail["out_of_domain"] and 0 <= detail["in_domain"] <= 3
        assert detail["trained_items"] > 0 and detail["steps"] == 4
    # With two domains, leaving one out trains on the other alone: the same pilot, the same score.
    assert seeds["leave_one_out:counting"]["observed"] == seeds["one_hot:arithmetic"]["observed"]
    assert all(r["observed"] is None for m in ("alpha", "ridge_vif", "leave_one_out", "surrogate") for r in by_method[m])
    ranks = sorted(by_method["surrogate"], key=lambda r: json.loads(r["detail"])["rank"])
    assert [r["predicted"] for r in ranks] == sorted((r["predicted"] for r in ranks), reverse=True)
