"""End to end: `select-rap` as a real Prefect flow on a real DuckLake catalog, offline, at a tiny size.

Run once as shipped (paper mode), then again with CDE opened wide (`rap.min_cde_gap=-1`) so every
question reaches ACE and is scored from the tiny policy's real attentions. Checks read the lake with SQL.
"""

import json
import math

import pytest

from stores.lake import Lake

pytestmark = pytest.mark.slow

OVERRIDES = ["source.synthetic.scenes=8", "rollouts.group_size=4"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from flows.recipe_flow import run
    from stores.lake import dataset_root

    home = tmp_path_factory.mktemp("home")
    first = run("select-rap", OVERRIDES, home=home)
    wide = run("select-rap", OVERRIDES + ["rap.min_cde_gap=-1.0"], home=home)
    return {"root": dataset_root(home, "rap"), "first": first, "wide": wide}


def sql(built, query):
    with Lake.open(built["root"], read_only=True) as lake:
        return lake.sql(query).to_pylist()


def step(summary, stage):
    return next(s for s in summary["steps"] if s["stage"] == stage)


def test_every_question_with_rollouts_gets_a_rap_row_or_a_reason(built):
    rap, rollouts = step(built["first"], "rap"), step(built["first"], "rollouts")
    assert rap["n_in"] == rollouts["n_out"] > 0
    assert rap["n_in"] == rap["n_out"] + rap["n_rejected"]
    rows = sql(built, "SELECT * FROM difficulty AT (VERSION => 1) WHERE method = 'rap'")
    assert len(rows) == rap["n_in"]  # every question had 4 + 4 rollouts: each got a row
    rejects = {r["subject_id"]: r for r in sql(built, "SELECT * FROM rejects AT (VERSION => 1) WHERE stage = 'rap'")}
    for row in rows:
        assert row["selected"] == (row["question_id"] not in rejects)
        assert json.loads(row["detail"])["mode"] == "paper" and row["reason"].startswith("rap.paper: ")
        if not row["selected"]:
            reject = rejects[row["question_id"]]
            assert reject["reason"] in {"rap.language_prior", "rap.attention_biased", "rap.replaced_by_harder"}
            assert reject["detail"]
        if row["cde_gap"] < 0.5:  # paper mode: only DRM can bring one back
            assert not row["selected"] or "drm: replaces" in row["reason"]


def test_the_gap_is_the_rollouts_pass_rate_with_minus_without_the_image(built):
    expected = {r["question_id"]: r for r in sql(built, """
        SELECT question_id,
               avg(CASE WHEN correct THEN 1.0 ELSE 0.0 END) FILTER (WHERE with_image) AS with_image,
               avg(CASE WHEN correct THEN 1.0 ELSE 0.0 END) FILTER (WHERE NOT with_image) AS text_only
        FROM rollouts AT (VERSION => 1) GROUP BY question_id""")}
    for row in sql(built, "SELECT * FROM difficulty AT (VERSION => 1) WHERE method = 'rap'"):
        want = expected[row["question_id"]]
        assert row["pass_rate"] == pytest.approx(float(want["with_image"]))
        assert row["pass_rate_text_only"] == pytest.approx(float(want["text_only"]))
        assert row["cde_gap"] == pytest.approx(float(want["with_image"]) - float(want["text_only"]))


def test_with_cde_open_every_question_is_scored_by_ace_from_real_attentions(built):
    wide = built["wide"]
    assert wide["version"] == 2
    assert {s["stage"]: s["n_shards_cached"] for s in wide["steps"]}["rollouts"] == 1  # only rap re-ran
    rows = sql(built, "SELECT * FROM difficulty AT (VERSION => 2) WHERE method = 'rap'")
    assert rows and all(r["ace"] is not None and math.isfinite(r["ace"]) for r in rows)
    reasons = {r["subject_id"]: r["reason"] for r in sql(built, f"""SELECT subject_id, reason FROM rejects
                                                                    WHERE run_id = '{wide["run_id"]}'""")}
    for row in (r for r in rows if "drm: replaces" not in r["reason"]):  # DRM may bring a dropped one back
        biased = row["ace"] < math.log(0.1)
        assert (reasons.get(row["question_id"]) == "rap.attention_biased") == biased
