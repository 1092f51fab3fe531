"""MoDoMoDo's phases: seed mixtures, the heuristics against hand-computed values on three domains, the
quadratic surrogate against a known optimum, the splits, and real pilot runs of the tiny policy."""

from pathlib import Path

import numpy as np
import pytest

from pipelines.modomodo import (
    PilotItem,
    alpha_mixture,
    fit_quadratic,
    gaussian_candidates,
    heuristic_mixtures,
    leave_one_out_mixture,
    pilot_run,
    ridge_vif_mixture,
    seed_mixtures,
    split_items,
    top_mixtures,
)
from tests.policy import one_thread
from tests.stages.fixtures import context, ingest_scenes, true_questions

_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)

# Seven seed runs over domains (a, b, c): one-hot a, b, c; leave-one-out a, b, c; uniform.
WEIGHTS = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]]
IN = [0.2, 0.6, 0.4, 0.5, 0.3, 0.7, 0.4]
OUT = [0.5, 0.3, 0.1, 0.2, 0.4, 0.6, 0.35]


def test_seed_mixtures_are_one_hot_leave_one_out_and_uniform():
    seeds = seed_mixtures(["a", "b", "c"])
    assert [kind for kind, _ in seeds] == ["one_hot:a", "one_hot:b", "one_hot:c", "leave_one_out:a", "leave_one_out:b",
                                           "leave_one_out:c", "uniform"]
    assert np.allclose([w for _, w in seeds], WEIGHTS)
    with pytest.raises(ValueError, match="at least two domains"):
        seed_mixtures(["only"])


def test_alpha_family_by_hand():
    # min-max: in 0.2..0.7 -> [0, .8, .4, .6, .2, 1, .4]; out 0.1..0.6 -> [.8, .4, 0, .2, .6, 1, .5]
    # Each domain's total weight over the runs: 1 + 0.5 + 0.5 + 1/3 = 7/3.
    total = 7 / 3
    credit_in = {"a": (0 + 0.5 * 0.2 + 0.5 * 1 + 0.4 / 3) / total,
                 "b": (0.8 + 0.5 * 0.6 + 0.5 * 1 + 0.4 / 3) / total,
                 "c": (0.4 + 0.5 * 0.6 + 0.5 * 0.2 + 0.4 / 3) / total}
    credit_out = {"a": (0.8 + 0.5 * 0.6 + 0.5 * 1 + 0.5 / 3) / total,
                  "b": (0.4 + 0.5 * 0.2 + 0.5 * 1 + 0.5 / 3) / total,
                  "c": (0 + 0.5 * 0.2 + 0.5 * 0.6 + 0.5 / 3) / total}
    for alpha in (0.0, 0.5, 1.0):
        combined = {d: alpha * credit_in[d] + (1 - alpha) * credit_out[d] for d in "abc"}
        expected = [combined[d] / sum(combined.values()) for d in "abc"]
        assert alpha_mixture(WEIGHTS, IN, OUT, alpha=alpha) == pytest.approx(expected)
    assert alpha_mixture(WEIGHTS, IN, OUT, alpha=0.5) == pytest.approx([0.36232, 0.42029, 0.21739], abs=1e-5)


def test_ridge_over_vif_by_hand():
    # Indicators: XᵀX = 2I + 2J (each domain in 4 runs, each pair in 2), so with λ: A = aI + bJ, a = 2.001, b = 2,
    # and A⁻¹ = (I − b/(a + 3b)·J) / a. Xᵀy = out-scores summed over each domain's runs.
    lam, a, b = 1e-3, 2.001, 2.0
    xty = {"a": 0.5 + 0.4 + 0.6 + 0.35, "b": 0.3 + 0.2 + 0.6 + 0.35, "c": 0.1 + 0.2 + 0.4 + 0.35}
    shrink = b / (a + 3 * b)
    beta = {d: (xty[d] - shrink * sum(xty.values())) / a for d in "abc"}
    vif = (1 - shrink) / a
    clipped = {d: max(beta[d] / vif, 0.0) for d in "abc"}
    assert clipped["c"] == 0.0  # c's coefficient is negative: clipped away
    expected = [clipped[d] / sum(clipped.values()) for d in "abc"]
    assert ridge_vif_mixture(WEIGHTS, OUT, ridge=lam) == pytest.approx(expected)
    assert expected == pytest.approx([0.67774, 0.32226, 0.0], abs=1e-5)


def test_leave_one_out_by_hand():
    # Runs without a, b, c scored 0.2, 0.4, 0.6 -> min-max 0, 0.5, 1 -> s' = 0.2, 0.15, 0.1 -> / 0.45.
    assert leave_one_out_mixture(WEIGHTS, OUT) == pytest.approx([0.2 / 0.45, 0.15 / 0.45, 0.1 / 0.45])
    with pytest.raises(ValueError, match="no leave-one-out run without domain 0"):
        leave_one_out_mixture(WEIGHTS[:3], OUT[:3])


def test_heuristics_are_listed_with_their_parameters():
    listed = heuristic_mixtures(WEIGHTS, IN, OUT, alphas=[0.0, 1.0])
    assert [(m, p) for m, p, _ in listed] == [("alpha", {"alpha": 0.0}), ("alpha", {"alpha": 1.0}),
                                              ("ridge_vif", {"ridge": 1e-3}), ("leave_one_out", {})]
    assert all(sum(w) == pytest.approx(1.0) and min(w) >= 0 for _, _, w in listed)


def test_equal_scores_give_the_uniform_mixture():
    flat = [0.3] * 7
    assert alpha_mixture(WEIGHTS, flat, flat) == pytest.approx([1 / 3] * 3)
    assert leave_one_out_mixture(WEIGHTS, flat) == pytest.approx([1 / 3] * 3)


OPTIMUM = np.array([0.5, 0.3, 0.2])
CURVATURE = np.array([[3.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 4.0]])


def planted_score(weights) -> np.ndarray:
    """A known concave quadratic with its maximum at OPTIMUM, inside the simplex."""
    delta = np.atleast_2d(weights) - OPTIMUM
    return 1.0 - np.einsum("ni,ij,nj->n", delta, CURVATURE, delta)


def test_the_surrogate_recovers_the_optimum_of_a_known_quadratic():
    rng = np.random.default_rng(3)
    observed = rng.dirichlet([1, 1, 1], size=40)
    scores = planted_score(observed) + rng.normal(0, 0.002, len(observed))
    surrogate = fit_quadratic(observed, scores, splits=5, test_share=0.2, seed=0)
    assert surrogate.test_r2 > 0.99 and (surrogate.n_train, surrogate.n_test) == (32, 8)
    candidates = gaussian_candidates(observed, n=4000, seed=0)
    best, predicted = top_mixtures(surrogate, candidates, k=3)[0]
    assert np.abs(np.array(best) - OPTIMUM).max() < 0.03
    assert predicted == pytest.approx(1.0, abs=0.01)
    ranked = [p for _, p in top_mixtures(surrogate, candidates, k=3)]
    assert ranked == sorted(ranked, reverse=True)


def test_a_linear_fit_cannot_find_an_interior_optimum():
    # Why a quadratic: the best of a linear fit on the simplex is always a corner, far from OPTIMUM.
    rng = np.random.default_rng(3)
    observed = rng.dirichlet([1, 1, 1], size=40)
    coefficients, *_ = np.linalg.lstsq(np.hstack([np.ones((40, 1)), observed]), planted_score(observed), rcond=None)
    candidates = gaussian_candidates(observed, n=4000, seed=0)
    linear_best = candidates[np.argmax(np.hstack([np.ones((len(candidates), 1)), candidates]) @ coefficients)]
    assert np.abs(linear_best - OPTIMUM).max() > 0.2


def test_the_best_of_five_splits_is_kept():
    rng = np.random.default_rng(0)
    observed = rng.dirichlet([1, 1, 1], size=10)
    scores = planted_score(observed) + rng.normal(0, 0.05, 10)
    # The same seed draws the same first split: five splits can only do as well or better than that one.
    best, first = fit_quadratic(observed, scores, splits=5, seed=1), fit_quadratic(observed, scores, splits=1, seed=1)
    assert best.test_r2 >= first.test_r2 and (best.n_train, best.n_test) == (8, 2)


def test_top_mixtures_are_distinct_and_a_flat_table_fits_without_noise():
    observed = np.array(WEIGHTS)
    surrogate = fit_quadratic(observed, planted_score(observed), seed=0)
    corner = [[0.0, 0.0, 1.0]] * 10 + [[0.5, 0.3, 0.2], [0.4, 0.4, 0.2], [0.1, 0.1, 0.8]]
    top = top_mixtures(surrogate, corner, k=3)
    assert len({tuple(w) for w, _ in top}) == 3 and top[0][0] == pytest.approx([0.5, 0.3, 0.2])
    flat = fit_quadratic(observed, [1.111] * 7, seed=0)  # every pilot scored the same
    assert flat.test_r2 == 1.0 and np.allclose(flat.predict(observed), 1.111)


def test_candidates_lie_on_the_simplex():
    candidates = gaussian_candidates(WEIGHTS, n=500, seed=0)
    assert len(candidates) > 400 and (candidates >= 0).all()
    assert np.allclose(candidates.sum(axis=1), 1.0)
    assert np.array_equal(candidates, gaussian_candidates(WEIGHTS, n=500, seed=0))


def item(question_id: str, domain: str) -> PilotItem:
    return PilotItem(question_id, domain, "?", "1", "num", (), "/none.png", "sha")


def test_splits_hold_out_by_hash_and_keep_the_out_of_domain_apart():
    items = [item(f"{d}-{i}", d) for d in ("a", "b", "chart") for i in range(8)] + [item("tiny-0", "tiny"), item("tiny-1", "tiny")]
    splits = split_items(items, out_of_domain=["chart"], held_out_share=0.25, min_train_items=2)
    assert {i.domain for i in splits.out_of_domain} == {"chart"} and len(splits.out_of_domain) == 8
    assert len(splits.held_out) == 4 and len(splits.train) == 12  # 2 of each 8 held out
    assert set(splits.too_few) == {"tiny"}  # 1 held out, 1 left: not a GRPO step of 2
    again = split_items(list(reversed(items)), out_of_domain=["chart"], held_out_share=0.25, min_train_items=2)
    assert {i.question_id for i in again.held_out} == {i.question_id for i in splits.held_out}


@pytest.fixture(scope="module")
def pilot_data(tmp_path_factory):
    """Rendered scenes of three families, their true questions as pilot items; bar_chart is out of domain."""
    root = tmp_path_factory.mktemp("modomodo")
    assets = ingest_scenes(root, scenes=9, families=["counting", "relations", "bar_chart"])
    ctx = context("modomodo", root)
    questions = true_questions(ctx, assets, types=("mc", "num", "fib"), per_asset=2).to_pylist()
    by_id = {a["asset_id"]: a for a in assets.to_pylist()}
    items = [PilotItem(q["question_id"], q["category"], q["question"], q["answer"], q["answer_type"], tuple(q["choices"]),
                       str(root / by_id[q["asset_ids"][0]]["media_uri"]), by_id[q["asset_ids"][0]]["sha256"]) for q in questions]
    return root, split_items(items, out_of_domain=["bar_chart"], held_out_share=0.25, min_train_items=2)


def test_pilot_runs_train_the_tiny_policy_on_the_mixture_and_score_both_splits(pilot_data, tmp_path):
    from pipelines.policy.local import ensure_local_model

    root, splits = pilot_data
    model = ensure_local_model("tiny-llava", tmp_path)  # built once per machine (THINKMILL_MODELS)
    domain_of = {i.question_id: i.domain for i in splits.train}
    results = {}
    for kind, weights in [("one_hot:counting", [1.0, 0.0]), ("uniform", [0.5, 0.5])]:
        work = tmp_path / kind.replace(":", "-")
        results[kind] = pilot_run(model, splits.train, dict(zip(["counting", "relations"], weights)), splits.held_out,
                                  splits.out_of_domain, work, steps=2, num_generations=2, batch_size=4,
                                  max_completion_length=16, seed=0)
        assert not work.exists()  # a pilot's checkpoint is deleted once scored
    one_hot, uniform = results["one_hot:counting"], results["uniform"]
    assert {domain_of[q] for q in one_hot.trained_ids} == {"counting"}  # the sampler never draws a weight-0 domain
    assert len(one_hot.trained_ids) == 4 and one_hot.steps == 2
    assert set(uniform.trained_ids) <= set(domain_of)
    for result in results.values():
        assert 0.0 <= result.in_domain <= 3.0 and 0.0 <= result.out_of_domain <= 3.0  # MoDoMoDo reward: 2·acc + 1·format
        assert result.train_reward is not None
    with pytest.raises(ValueError, match="a GRPO step needs 2 prompts"):
        pilot_run(model, splits.train[:1], {splits.train[0].domain: 1.0}, splits.held_out, splits.out_of_domain,
                  tmp_path / "never", steps=1, num_generations=2, batch_size=4)
    assert Path(model).exists()


def test_the_maths_examples_in_the_docstrings_hold():
    import doctest

    import pipelines.modomodo

    results = doctest.testmod(pipelines.modomodo)
    assert results.failed == 0 and results.attempted >= 5
