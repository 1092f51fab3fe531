"""RAP ("Truth in the Few", ALGORITHMS §4): keep the questions that make a policy reason *with* the image.

Three phases over one question pool and one policy, sharing `RapConfig`:

1. **CDE**, the causal discrepancy estimator: each question has M rollouts with the image and M with
   the image removed (the `rollouts` stage's `with_image: [true, false]`), each 0/1 correct.
   `cde_gap = pass_rate − pass_rate_text_only`. Two modes, because paper and released code disagree:
   - `paper` (the default): drop when `cde_gap < λ_c = 0.5`: the question is answerable from
     language priors. Default because it is the criterion the paper states and evaluates, it has one
     threshold, and a selection is a pure function of the rollouts (no random add-back).
   - `code`: exclude all-correct questions; keep when `cde_gap > 0.2` *and* the similarity gate
     `sim = 1 − (acc − mean)² / (1 − mean)²` ≥ 0.6, where `acc` is the question's accuracy with the
     image; then add back 10 % (seed 42) of the dropped questions with exactly one correct rollout.
     `mean` (`code_similarity_mean`): **"pool"** (default) = the with-image accuracy averaged over
     every question in the pool being filtered (all questions of this policy with enough rollouts);
     "text_only" = the question's own text-only accuracy. The authors' repository (Leo-ssl/RAP)
     had not released its code where we could read it (its README says "will be released soon"),
     so this definition follows ALGORITHMS.md, not their source; "pool" is the reading under which
     the gate, the all-correct exclusion and the right-1 add-back fit together (it keeps accuracies
     near the pool's typical level and buys back a few of the hardest). Switch it to compare.
2. **ACE**, the attention confidence estimator: the policy answers each CDE survivor once (greedy),
   and the engine returns its last-layer attention among the completion tokens (head-averaged;
   `Response.attentions`). For token j, `ψ_j = Π_{i=j..L} σ·A[i][j]` (σ = 2.0): how strongly the
   rest of the reasoning keeps attending to it. A is used as the engine gives it, not renormalised
   over the completion: a row's missing mass is the attention that token pays to the prompt. We
   compute `log ψ_j = Σ log(σ·A[i][j])`, divided by the number of terms when
   `ace_length_normalised` (default: an unnormalised product shrinks geometrically with the number
   of later tokens, so a fixed threshold would measure length, not bias). A question's `ace` is the
   mean of `log ψ_j` over its completion tokens; it is "attention-biased" (a few over-emphasised
   tokens take the attention the rest of the reasoning should carry) when `ace < log(λ_a)`,
   λ_a = 0.1. The comparison is made in log space, where the value is computed: exponentiating back
   would underflow to 0 for long unnormalised products and make every question fail. Engines that
   return no attentions (openai, vllm, scripted) skip ACE: the first request is a probe; if its
   answer has no attentions, no more are sent and every question records why in `detail` and keeps
   its CDE verdict.
3. **DRM**, difficulty-aware replacement: each trivial survivor (every rollout with the image
   correct) is replaced by the hardest dropped question that the policy still solves sometimes
   (0 < pass rate < 1), hardest first; never by one it never solves. Survivors beyond the number of
   candidates stay. Candidates come from every drop (CDE or ACE) and are not scored by ACE again.

Every phase is a plain function of `Evidence` and `Decision`s, so reports and tests call them alone;
`select_rap` runs all three.
"""

import math
import random
import statistics
from dataclasses import dataclass, field, replace
from typing import Callable

from pipelines.engines.base import Request, Response


@dataclass(frozen=True)
class RapConfig:
    """The parameters of all three phases (the `rap` stage's signature mirrors them)."""

    mode: str = "paper"                  # paper | code: which CDE rule
    min_cde_gap: float = 0.5             # paper: λ_c; drop when cde_gap < it
    code_min_cde_gap: float = 0.2        # code: keep when cde_gap > it
    code_min_similarity: float = 0.6     # code: keep when sim >= it
    code_similarity_mean: str = "pool"   # code: what `mean` is in the similarity gate (pool | text_only)
    code_right1_share: float = 0.1       # code: share of dropped right-1 questions added back
    code_right1_seed: int = 42
    ace: bool = True                     # run ACE (skipped anyway where the engine has no attentions)
    ace_sigma: float = 2.0               # σ
    min_ace: float = 0.1                 # λ_a, in ψ units; compared as log(λ_a)
    ace_length_normalised: bool = True
    ace_max_tokens: int = 48
    drm: bool = True


@dataclass(frozen=True)
class Evidence:
    """One question's rollouts for one policy: 0/1 correctness with the image and without it."""

    question_id: str
    correct_with_image: tuple[bool, ...]
    correct_text_only: tuple[bool, ...]
    rewards_with_image: tuple[float, ...] = ()

    @property
    def n_correct(self) -> int:
        return sum(map(bool, self.correct_with_image))

    @property
    def pass_rate(self) -> float:
        return accuracy(self.correct_with_image)

    @property
    def pass_rate_text_only(self) -> float:
        return accuracy(self.correct_text_only)

    @property
    def cde_gap(self) -> float:
        return cde_gap(self.pass_rate, self.pass_rate_text_only)


@dataclass(frozen=True)
class Decision:
    """What RAP decided for one question: kept, or dropped with a reject reason; `why` is for people."""

    question_id: str
    kept: bool
    reason: str | None  # "rap.<slug>" when dropped
    why: str
    facts: dict = field(default_factory=dict)  # numbers behind the decision, for the row's `detail`
    ace: float | None = None


# --- the maths ------------------------------------------------------------------------------------


def accuracy(correct) -> float:
    """Share of 0/1 outcomes that are correct.

    >>> accuracy([True, False, False, True])
    0.5
    """
    correct = list(correct)
    return sum(map(bool, correct)) / len(correct)


def cde_gap(pass_rate: float, pass_rate_text_only: float) -> float:
    """Causal discrepancy: how much the image adds to the policy's accuracy.

    >>> cde_gap(0.75, 0.25), cde_gap(0.5, 0.5)
    (0.5, 0.0)
    """
    return pass_rate - pass_rate_text_only


def similarity(accuracy_with_image: float, mean: float) -> float:
    """RAP code's gate: `1 − (acc − mean)² / (1 − mean)²`; 1 at acc = mean, 0 at a deviation of 1 − mean.

    Not clipped: an accuracy far below a mean above 0.5 scores below 0. With mean = 1 the formula
    has no value; every accuracy short of 1 then counts as maximally far (0).

    >>> similarity(0.5, 0.5), similarity(1.0, 0.5), similarity(0.25, 0.5)
    (1.0, 0.0, 0.75)
    >>> similarity(0.5, 1.0), similarity(1.0, 1.0)
    (0.0, 1.0)
    """
    if mean >= 1.0:
        return 1.0 if accuracy_with_image >= 1.0 else 0.0
    return 1.0 - (accuracy_with_image - mean) ** 2 / (1.0 - mean) ** 2


_FLOOR = 1e-30  # softmax weights are positive; this only guards an underflow to exactly 0


def token_log_confidences(attention: list[list[float]], *, sigma: float = 2.0,
                          length_normalised: bool = True) -> list[float]:
    """`log ψ_j = Σ_{i=j..L} log(σ·A[i][j])` for each completion token j (mean instead of sum when normalised).

    `attention[i][j]`: how much token i attends to token j (i ≥ j), last layer, heads averaged.

    >>> [round(x, 4) for x in token_log_confidences([[0.5, 0.0], [0.25, 0.5]], sigma=2.0, length_normalised=False)]
    [-0.6931, 0.0]
    >>> [round(x, 4) for x in token_log_confidences([[0.5, 0.0], [0.25, 0.5]], sigma=2.0)]
    [-0.3466, 0.0]
    """
    length = len(attention)
    out = []
    for j in range(length):
        terms = [math.log(sigma * max(attention[i][j], _FLOOR)) for i in range(j, length)]
        out.append(sum(terms) / len(terms) if length_normalised else sum(terms))
    return out


def attention_confidence(attention: list[list[float]], *, sigma: float = 2.0, length_normalised: bool = True) -> float | None:
    """A completion's ACE: the mean of `log ψ_j` over its tokens (log space); None for an empty completion.

    >>> round(attention_confidence([[0.5, 0.0], [0.25, 0.5]], sigma=2.0), 4)
    -0.1733
    """
    values = token_log_confidences(attention, sigma=sigma, length_normalised=length_normalised)
    return sum(values) / len(values) if values else None


def is_attention_biased(ace: float, min_ace: float) -> bool:
    """Below λ_a, compared in log space where `ace` lives: `ace < log(λ_a)`.

    >>> is_attention_biased(math.log(0.05), 0.1), is_attention_biased(math.log(0.2), 0.1)
    (True, False)
    """
    return ace < math.log(min_ace)


# --- phase 1: CDE ---------------------------------------------------------------------------------


def cde_paper(evidence: dict[str, Evidence], config: RapConfig) -> dict[str, Decision]:
    """Drop questions whose gap is below λ_c: the policy answers them as well without the image."""
    decisions = {}
    for question_id, item in evidence.items():
        gap, facts = item.cde_gap, {"cde_mode": "paper", "min_cde_gap": config.min_cde_gap}
        where = f"pass rate {item.pass_rate:.3f} with the image, {item.pass_rate_text_only:.3f} without"
        if gap < config.min_cde_gap:
            decisions[question_id] = Decision(question_id, False, "rap.language_prior",
                                              f"cde_gap {gap:.3f} < {config.min_cde_gap} ({where}): answerable from "
                                              "language priors", facts)
        else:
            decisions[question_id] = Decision(question_id, True, None, f"cde_gap {gap:.3f} >= {config.min_cde_gap}", facts)
    return decisions


def pool_mean(evidence: dict[str, Evidence]) -> dict[str, float]:
    """`mean` of the similarity gate, "pool": the with-image accuracy averaged over the whole pool."""
    mean = statistics.fmean(item.pass_rate for item in evidence.values()) if evidence else 0.0
    return {question_id: mean for question_id in evidence}


def text_only_mean(evidence: dict[str, Evidence]) -> dict[str, float]:
    """`mean` of the similarity gate, "text_only": each question's own accuracy without the image."""
    return {question_id: item.pass_rate_text_only for question_id, item in evidence.items()}


SIMILARITY_MEANS: dict[str, Callable[[dict[str, Evidence]], dict[str, float]]] = {
    "pool": pool_mean, "text_only": text_only_mean}


def cde_code(evidence: dict[str, Evidence], config: RapConfig) -> dict[str, Decision]:
    """Their released rule: no all-correct, gap > 0.2, similarity ≥ 0.6, then 10 % of right-1 back."""
    means = SIMILARITY_MEANS[config.code_similarity_mean](evidence)
    decisions = {}
    for question_id, item in evidence.items():
        gap, mean = item.cde_gap, means[question_id]
        sim = similarity(item.pass_rate, mean)
        facts = {"cde_mode": "code", "similarity": sim, "similarity_mean": mean,
                 "similarity_mean_kind": config.code_similarity_mean}
        if item.n_correct == len(item.correct_with_image):
            decision = Decision(question_id, False, "rap.all_correct",
                                f"all {item.n_correct} rollouts with the image correct: no learning signal", facts)
        elif gap <= config.code_min_cde_gap:
            decision = Decision(question_id, False, "rap.language_prior",
                                f"cde_gap {gap:.3f} <= {config.code_min_cde_gap} (pass rate {item.pass_rate:.3f} with the "
                                f"image, {item.pass_rate_text_only:.3f} without): answerable from language priors", facts)
        elif sim < config.code_min_similarity:
            decision = Decision(question_id, False, "rap.similarity_gate",
                                f"similarity {sim:.3f} < {config.code_min_similarity} (accuracy {item.pass_rate:.3f}, "
                                f"{config.code_similarity_mean} mean {mean:.3f})", facts)
        else:
            decision = Decision(question_id, True, None,
                                f"cde_gap {gap:.3f} > {config.code_min_cde_gap}, similarity {sim:.3f} >= "
                                f"{config.code_min_similarity}", facts)
        decisions[question_id] = decision
    return add_back_right1(decisions, evidence, share=config.code_right1_share, seed=config.code_right1_seed)


def add_back_right1(decisions: dict[str, Decision], evidence: dict[str, Evidence], *, share: float,
                    seed: int) -> dict[str, Decision]:
    """Keep again `int(share · n)` of the n dropped questions with exactly one correct rollout, drawn with `seed`.

    The candidates are sorted by id before the draw, so the choice does not depend on input order.
    """
    right1 = sorted(q for q, d in decisions.items() if not d.kept and evidence[q].n_correct == 1)
    chosen = random.Random(seed).sample(right1, int(share * len(right1)))
    out = dict(decisions)
    for question_id in chosen:
        before = decisions[question_id]
        out[question_id] = replace(before, kept=True, reason=None,
                                   why=f"right-1 add-back ({share:.0%} of {len(right1)}, seed {seed}); was {before.reason}",
                                   facts={**before.facts, "right1_added_back": True})
    return out


CDE_MODES: dict[str, Callable[[dict[str, Evidence], RapConfig], dict[str, Decision]]] = {"paper": cde_paper, "code": cde_code}


# --- phase 2: ACE ---------------------------------------------------------------------------------

ACE_PROMPT_VERSION = "rap-ace-v1"


def ace(engine, prompts: dict[str, list[dict]], decisions: dict[str, Decision], config: RapConfig, *,
        seed: int = 0) -> dict[str, Decision]:
    """Score each kept question's attention confidence; drop the attention-biased ones.

    `prompts`: question id -> the policy's chat (with its image). One greedy completion each, with
    `return_attentions`. Questions ACE cannot score keep their decision and say why in `facts`.
    """
    survivors = [q for q, d in decisions.items() if d.kept]
    requests = {q: Request(messages=prompts[q], n=1, temperature=0.0, max_tokens=config.ace_max_tokens, seed=seed,
                           prompt_version=ACE_PROMPT_VERSION, task="rap.ace", return_attentions=True)
                for q in survivors if q in prompts}
    responses, skipped_all = _probe_then_batch(engine, requests)
    out = dict(decisions)
    for question_id in survivors:
        skipped = skipped_all if question_id in prompts else "no prompt: its image is not in the dataset"
        out[question_id] = _ace_decision(decisions[question_id], responses.get(question_id), skipped, config)
    return out


def _ace_decision(before: Decision, response: Response | None, skipped: str | None, config: RapConfig) -> Decision:
    """A survivor's decision after ACE: kept with its score, dropped as attention-biased, or kept unscored (and why)."""
    def skip(why: str) -> Decision:
        return replace(before, facts={**before.facts, "ace_skipped": why})

    if response is None:
        return skip(skipped or "not scored")
    if response.error:
        return skip(f"the policy failed: {response.error}")
    if not response.attentions:
        return skip("the answer came without attentions")
    score = attention_confidence(response.attentions[0], sigma=config.ace_sigma, length_normalised=config.ace_length_normalised)
    if score is None:
        return skip("empty completion: no tokens to score")
    if is_attention_biased(score, config.min_ace):
        return replace(before, kept=False, reason="rap.attention_biased", ace=score,
                       why=f"ace {score:.3f} < log({config.min_ace}) = {math.log(config.min_ace):.3f}: a few "
                           "over-emphasised tokens carry the reasoning's attention")
    return replace(before, ace=score, why=f"{before.why}; ace {score:.3f} >= log({config.min_ace})")


def _probe_then_batch(engine, requests: dict[str, Request]) -> tuple[dict[str, Response], str | None]:
    """Send one request; if its answer has no attentions, send no more (the engine cannot give them).

    Returns the responses by question id, and the reason the questions without one were skipped.
    """
    responses: dict[str, Response] = {}
    pending = list(requests)
    while pending:
        question_id = pending.pop(0)
        (response,) = engine.generate([requests[question_id]])
        if response.error:  # this question's failure says nothing about the engine: probe with the next
            responses[question_id] = response
            continue
        if response.attentions is None:
            return responses, (f"engine {engine.name!r} ({engine.model}) returns no attentions; ACE needs one that "
                               "does (the hf engine)")
        responses[question_id] = response
        if pending:
            responses.update(zip(pending, engine.generate([requests[q] for q in pending])))
        return responses, None
    return responses, None


# --- phase 3: DRM ---------------------------------------------------------------------------------


def drm(decisions: dict[str, Decision], evidence: dict[str, Evidence]) -> dict[str, Decision]:
    """Replace each all-correct survivor by the hardest dropped question with 0 < pass rate < 1."""
    trivial = sorted(q for q, d in decisions.items() if d.kept and evidence[q].n_correct == len(evidence[q].correct_with_image))
    candidates = sorted((q for q, d in decisions.items() if not d.kept and 0.0 < evidence[q].pass_rate < 1.0),
                        key=lambda q: (evidence[q].pass_rate, q))
    out = dict(decisions)
    for survivor, harder in zip(trivial, candidates):
        item, other = evidence[survivor], evidence[harder]
        out[survivor] = replace(decisions[survivor], kept=False, reason="rap.replaced_by_harder",
                                why=f"all {item.n_correct} rollouts with the image correct (trivial for the policy): "
                                    f"replaced by {harder} (pass rate {other.pass_rate:.3f})",
                                facts={**decisions[survivor].facts, "replaced_by": harder})
        out[harder] = replace(decisions[harder], kept=True, reason=None,
                              why=f"drm: replaces trivial {survivor} (pass rate {other.pass_rate:.3f}); was "
                                  f"{decisions[harder].reason}",
                              facts={**decisions[harder].facts, "replaces": survivor, "dropped_as": decisions[harder].reason})
    return out


# --- all three ------------------------------------------------------------------------------------


def select_rap(evidence: dict[str, Evidence], config: RapConfig, *, engine=None,
               prompts: dict[str, list[dict]] | None = None, seed: int = 0) -> dict[str, Decision]:
    """CDE (by `config.mode`), then ACE on the survivors (when `config.ace` and an engine is given), then DRM."""
    if config.mode not in CDE_MODES:
        raise ValueError(f"unknown RAP mode {config.mode!r}; modes: {', '.join(CDE_MODES)}")
    if config.code_similarity_mean not in SIMILARITY_MEANS:
        raise ValueError(f"unknown code_similarity_mean {config.code_similarity_mean!r}; "
                         f"choose one of: {', '.join(SIMILARITY_MEANS)}")
    decisions = CDE_MODES[config.mode](evidence, config)
    if config.ace and engine is not None:
        decisions = ace(engine, prompts or {}, decisions, config, seed=seed)
    else:
        reason = "ace is off (ace: false)" if not config.ace else "no policy engine given"
        decisions = {q: replace(d, facts={**d.facts, "ace_skipped": reason}) if d.kept else d for q, d in decisions.items()}
    if config.drm:
        decisions = drm(decisions, evidence)
    return decisions
