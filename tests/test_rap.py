"""RAP's phases on planted rollout evidence: CDE (paper and code), ACE's maths and its skip, DRM.

The stage, the real tiny policy's attentions and the openai engine are in tests/stages/test_rap.py.
"""

import math
import random

import pytest

from pipelines.engines.base import Request, Response
from pipelines.rap import (
    Decision,
    Evidence,
    RapConfig,
    ace,
    attention_confidence,
    cde_code,
    cde_paper,
    drm,
    select_rap,
    similarity,
    token_log_confidences,
)
from tests.stages.fixtures import FakeEngine


def planted(with_image: int, text_only: int, m: int = 8, question_id: str = "q") -> Evidence:
    """A question whose policy got `with_image` of m right with the image and `text_only` of m without."""
    return Evidence(question_id, tuple(i < with_image for i in range(m)), tuple(i < text_only for i in range(m)))


def pool(**counts: tuple[int, int]) -> dict[str, Evidence]:
    return {q: planted(w, t, question_id=q) for q, (w, t) in counts.items()}


# --- CDE ---------------------------------------------------------------------------------------------


def test_language_prior_items_have_no_gap_and_are_dropped_image_dependent_ones_are_kept():
    # "prior": the answer is in the question text, so the policy is as right without the image as with it.
    evidence = pool(prior_easy=(7, 7), prior_half=(4, 4), prior_slightly=(5, 4), needs_image=(6, 0), needs_image_2=(5, 1))
    assert [evidence[q].cde_gap for q in ("prior_easy", "prior_half")] == [0.0, 0.0]
    assert evidence["prior_slightly"].cde_gap == pytest.approx(0.125)
    decisions = cde_paper(evidence, RapConfig())
    assert {q for q, d in decisions.items() if d.kept} == {"needs_image", "needs_image_2"}
    for q in ("prior_easy", "prior_half", "prior_slightly"):
        assert decisions[q].reason == "rap.language_prior"
        assert "answerable from language priors" in decisions[q].why and "< 0.5" in decisions[q].why
    code = cde_code(evidence, RapConfig(mode="code"))
    assert all(code[q].reason == "rap.language_prior" for q in ("prior_easy", "prior_half", "prior_slightly"))


def test_paper_keeps_gap_at_lambda_and_drops_just_below():
    decisions = cde_paper(pool(at=(4, 0), below=(7, 4)), RapConfig())  # gaps 0.5 and 0.375
    assert decisions["at"].kept and not decisions["below"].kept


def test_similarity_gate_by_hand():
    # Pool mean of the with-image accuracies: (1 + 0.75 + 0.25 + 0.5) / 4 = 0.625.
    evidence = pool(all_right=(8, 0), three_quarters=(6, 0), quarter=(2, 0), half=(4, 1))
    decisions = cde_code(evidence, RapConfig(mode="code"))
    mean = 0.625
    expected = {q: 1 - (acc - mean) ** 2 / (1 - mean) ** 2 for q, acc in
                (("three_quarters", 0.75), ("quarter", 0.25), ("half", 0.5))}
    assert expected == pytest.approx({"three_quarters": 1 - 0.015625 / 0.140625, "quarter": 0.0,
                                      "half": 1 - 0.015625 / 0.140625})
    for q, sim in expected.items():
        assert decisions[q].facts["similarity"] == pytest.approx(sim)
        assert decisions[q].facts["similarity_mean"] == pytest.approx(mean)
    assert decisions["all_right"].reason == "rap.all_correct"       # excluded whatever its gap (1.0)
    assert decisions["three_quarters"].kept                          # gap 0.75 > 0.2, sim 0.889 >= 0.6
    assert decisions["quarter"].reason == "rap.similarity_gate"      # gap 0.25 > 0.2, but sim 0 < 0.6
    assert decisions["half"].kept                                    # gap 0.375, sim 0.889


def test_text_only_mean_is_the_other_reading_of_the_gate():
    evidence = pool(a=(6, 0), b=(7, 4))
    # mean = the question's own text-only accuracy: a: 1 - 0.75²/1 = 0.4375 < 0.6; b: 1 - (0.375/0.5)² = 0.4375.
    decisions = cde_code(evidence, RapConfig(mode="code", code_similarity_mean="text_only"))
    assert decisions["a"].facts["similarity"] == pytest.approx(0.4375)
    assert decisions["b"].facts["similarity"] == pytest.approx(0.4375)
    assert decisions["a"].reason == decisions["b"].reason == "rap.similarity_gate"
    assert similarity(0.75, 0.0) == pytest.approx(0.4375)


def test_paper_and_code_modes_differ_as_specified():
    evidence = pool(trivial=(8, 0), modest_gap=(5, 2), filler=(4, 1), filler_2=(3, 0))
    paper = cde_paper(evidence, RapConfig())
    code = cde_code(evidence, RapConfig(mode="code"))
    # All correct with the image, none without: the paper keeps it (gap 1.0); their code excludes it.
    assert paper["trivial"].kept and code["trivial"].reason == "rap.all_correct"
    # Gap 0.375: below the paper's 0.5, above the code's 0.2 (pool mean 0.625, accuracy 0.625, sim 1.0).
    assert paper["modest_gap"].reason == "rap.language_prior" and code["modest_gap"].kept
    assert code["modest_gap"].facts["similarity"] == pytest.approx(1.0)


def test_right1_add_back_takes_ten_percent_with_seed_42_whatever_the_order():
    counts = {f"right1-{i:02d}": (1, 1) for i in range(23)}  # gap 0: all dropped as language priors
    counts |= {f"none-{i}": (0, 0) for i in range(5)}
    evidence = pool(**counts)
    decisions = cde_code(evidence, RapConfig(mode="code"))
    added = sorted(q for q, d in decisions.items() if d.kept)
    assert len(added) == 2 == int(0.1 * 23)  # right-1 questions only; 0-correct ones never come back
    assert added == sorted(random.Random(42).sample(sorted(q for q in counts if q.startswith("right1")), 2))
    assert all(decisions[q].facts["right1_added_back"] and "was rap.language_prior" in decisions[q].why for q in added)
    shuffled = dict(random.Random(7).sample(sorted(evidence.items()), len(evidence)))
    again = cde_code(shuffled, RapConfig(mode="code"))
    assert sorted(q for q, d in again.items() if d.kept) == added
    other_seed = cde_code(evidence, RapConfig(mode="code", code_right1_seed=1))
    assert len([d for d in other_seed.values() if d.kept]) == 2


# --- ACE -------------------------------------------------------------------------------------------------


def spread(length: int) -> list[list[float]]:
    """Each token attends to every completion token so far equally, with half its weight (the rest on the prompt)."""
    return [[0.5 / (i + 1) if j <= i else 0.0 for j in range(length)] for i in range(length)]


def sink(length: int) -> list[list[float]]:
    """Every token pours its attention on the first one: an over-emphasised token."""
    return [[(0.9 if j == 0 else 0.1 / i) if j <= i else 0.0 for j in range(length)] if i else [1.0] + [0.0] * (length - 1)
            for i in range(length)]


def test_log_confidence_by_hand():
    attention = [[0.8, 0.0, 0.0], [0.3, 0.6, 0.0], [0.1, 0.2, 0.5]]
    sums = [math.log(1.6) + math.log(0.6) + math.log(0.2), math.log(1.2) + math.log(0.4), math.log(1.0)]
    assert token_log_confidences(attention, sigma=2.0, length_normalised=False) == pytest.approx(sums)
    assert token_log_confidences(attention, sigma=2.0) == pytest.approx([sums[0] / 3, sums[1] / 2, sums[2]])
    assert attention_confidence(attention) == pytest.approx((sums[0] / 3 + sums[1] / 2 + sums[2]) / 3)
    assert attention_confidence([]) is None


def test_an_over_emphasised_token_lowers_confidence_and_length_normalisation_removes_the_length_effect():
    assert attention_confidence(sink(12)) < math.log(0.1) < attention_confidence(spread(12))
    short, long = attention_confidence(spread(4), length_normalised=False), attention_confidence(spread(40), length_normalised=False)
    assert long < short - 5  # unnormalised, a longer reasoning alone sinks the product
    assert abs(attention_confidence(spread(40)) - attention_confidence(spread(4))) < abs(long - short)


def attention_engine(attentions: dict[str, list[list[float]]]) -> FakeEngine:
    """A policy instrument whose completion for question q comes with the attention planted for q."""
    def reply(request: Request) -> Response:
        question_id = request.messages[-1]["content"]
        return Response(["<think>x</think><answer>1</answer>"], request.call_id("fake", "fake-model", "fake-1"),
                        attentions=[attentions[question_id]])
    return FakeEngine(reply)


def test_ace_drops_attention_biased_survivors_and_scores_the_rest():
    evidence = pool(focused=(6, 0), biased=(6, 0), prior=(6, 6))
    prompts = {q: [{"role": "user", "content": q}] for q in evidence}
    engine = attention_engine({"focused": spread(10), "biased": sink(10)})
    decisions = select_rap(evidence, RapConfig(), engine=engine, prompts=prompts)
    assert decisions["focused"].kept and decisions["focused"].ace == pytest.approx(attention_confidence(spread(10)))
    assert decisions["biased"].reason == "rap.attention_biased" and decisions["biased"].ace < math.log(0.1)
    assert decisions["prior"].reason == "rap.language_prior" and decisions["prior"].ace is None
    assert sorted(r.messages[-1]["content"] for r in engine.requests) == ["biased", "focused"]  # CDE's rejects are not asked
    assert all(r.return_attentions and r.temperature == 0.0 for r in engine.requests)
    lenient = select_rap(evidence, RapConfig(min_ace=1e-40), engine=attention_engine({"focused": spread(10), "biased": sink(10)}),
                         prompts=prompts)
    assert lenient["biased"].kept


def test_an_engine_without_attentions_is_probed_once_and_ace_is_skipped_with_the_reason():
    evidence = pool(a=(6, 0), b=(7, 1), c=(5, 0))
    engine = FakeEngine(lambda request: "<think>x</think><answer>1</answer>", model="gpt-like")
    decisions = select_rap(evidence, RapConfig(), engine=engine, prompts={q: [{"role": "user", "content": q}] for q in evidence})
    assert len(engine.requests) == 1  # the probe: no more calls once the engine shows it has no attentions
    assert all(d.kept and d.ace is None for d in decisions.values())
    assert all("returns no attentions" in d.facts["ace_skipped"] and "'fake'" in d.facts["ace_skipped"]
               for d in decisions.values())


def test_a_failed_probe_does_not_decide_for_the_engine():
    evidence = pool(a=(6, 0), b=(6, 0))
    def reply(request):
        if request.messages[-1]["content"] == "a":
            return Response([], request.call_id("fake", "fake-model", "fake-1"), error="HTTP 500")
        return Response(["t"], request.call_id("fake", "fake-model", "fake-1"), attentions=[spread(5)])
    decisions = ace(FakeEngine(reply), {q: [{"role": "user", "content": q}] for q in evidence},
                    cde_paper(evidence, RapConfig()), RapConfig())
    assert decisions["a"].kept and decisions["a"].facts["ace_skipped"] == "the policy failed: HTTP 500"
    assert decisions["b"].ace == pytest.approx(attention_confidence(spread(5)))


# --- DRM ------------------------------------------------------------------------------------------------


def test_drm_replaces_trivial_survivors_by_the_hardest_rejects_with_some_success():
    evidence = pool(trivial_a=(8, 0), trivial_b=(8, 1), fine=(6, 0),
                    never=(0, 0), one=(1, 1), three=(3, 2), five=(5, 4), all_also=(8, 8))
    decisions = drm(cde_paper(evidence, RapConfig()), evidence)
    kept = {q for q, d in decisions.items() if d.kept}
    assert kept == {"fine", "one", "three"}
    assert decisions["trivial_a"].reason == decisions["trivial_b"].reason == "rap.replaced_by_harder"
    assert decisions["trivial_a"].facts["replaced_by"] == "one" and decisions["trivial_b"].facts["replaced_by"] == "three"
    assert decisions["one"].facts["dropped_as"] == "rap.language_prior" and "replaces trivial trivial_a" in decisions["one"].why
    assert not decisions["never"].kept  # accuracy 0: never a replacement, however "hard"
    assert not decisions["all_also"].kept  # all correct is not harder


def test_drm_never_uses_zero_accuracy_rejects_and_leaves_survivors_it_cannot_replace():
    evidence = pool(trivial_a=(8, 0), trivial_b=(8, 2), never=(0, 0), never_2=(0, 1), one=(1, 0))
    decisions = drm(cde_paper(evidence, RapConfig()), evidence)
    assert {q for q, d in decisions.items() if d.kept} == {"trivial_b", "one"}
    assert decisions["trivial_a"].facts["replaced_by"] == "one"
    assert not decisions["never"].kept and not decisions["never_2"].kept


def test_select_rap_names_the_modes_it_knows():
    with pytest.raises(ValueError, match="unknown RAP mode 'papers'; modes: paper, code"):
        select_rap(pool(a=(1, 0)), RapConfig(mode="papers"))
    decisions = select_rap(pool(a=(6, 0)), RapConfig(ace=False))
    assert decisions["a"].facts["ace_skipped"] == "ace is off (ace: false)"
    assert isinstance(decisions["a"], Decision)


def test_the_maths_examples_in_the_docstrings_hold():
    import doctest

    import pipelines.rap

    results = doctest.testmod(pipelines.rap)
    assert results.failed == 0 and results.attempted >= 8
