"""MoDoMoDo (ALGORITHMS §5): choose a training mixture over domains from a handful of short pilot runs.

Phases, each a plain function (the `modomodo` stage runs them in order; reports call them alone):

1. **Seed mixtures** (`seed_mixtures`): one-hot per domain, leave-one-out (uniform over the rest),
   uniform. With two domains a leave-one-out mixture *is* the other one-hot; pilots run once per
   distinct mixture.
2. **Pilot runs** (`pilot_run`): per seed mixture, MoDoMoDo's domain sampler
   (pipelines/domain_sampler.py) draws the training subset (a domain by weight, then an unseen item
   of it; stop when a drawn domain is empty, or at `steps × prompts per step` items), TRL's GRPO
   trains the policy on it for a few steps (`pipelines.policy.grpo.train_grpo`, as the grpo stage
   uses it), and the trained policy answers a held-out in-domain split and an out-of-domain split
   (greedy, one answer each). A split's score is the mean reward under `score_reward` (MoDoMoDo's
   2·accuracy + 1·format, zeroed without an answer, by default). The pilot checkpoint is then deleted.
3. **Heuristics** over the pilot runs (`heuristic_mixtures`):
   - `alpha`: min-max normalise the runs' in-domain and out-of-domain scores; credit each run's
     scores to its domains in proportion to their weight in it (domain i's credit is the
     weight-averaged normalised score of the runs that train on it); combine α·in + (1−α)·out;
     normalise.
   - `ridge_vif`: ridge regression (λ = 1e-3, no intercept) of the out-of-domain score on the
     runs' domain indicators (1 where a run trains on the domain), each coefficient divided by its
     VIF = diag((XᵀX + λI)⁻¹), clipped at 0, normalised.
   - `leave_one_out`: min-max the out-of-domain scores of the leave-one-out runs; s' = 0.2 − 0.1·ŝ;
     domain i gets the s' of the run without it (a run that does well without i says i matters
     little); normalised.
   Normalising all-zero credits gives the uniform mixture.
4. **Surrogate** (`fit_quadratic`, `gaussian_candidates`, `top_mixtures`): L̂(w) = a + bᵀw + wᵀCw,
   fitted by least squares on the features [1, w, w⊗w] (minimum-norm: on the simplex these
   features are collinear, and only predictions on the simplex matter); 5 random 80/20 splits of
   the runs, keeping the fit with the best test R² (R² against the training mean, so a one-point
   test split has a value too). One Gaussian is fitted to the observed mixtures, candidates are
   sampled from it, negative weights are clipped to 0 and each candidate renormalised onto the
   simplex; the surrogate predicts each, and the top k are returned. Scores are rewards: higher is
   better, so "top" is the highest predicted out-of-domain score.
"""

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pipelines.domain_sampler import domain_sample

# --- phase 1: seed mixtures -------------------------------------------------------------------------


def seed_mixtures(domains: list[str]) -> list[tuple[str, list[float]]]:
    """(kind, weights) for every seed mixture over `domains` (two or more), in a fixed order.

    >>> for kind, weights in seed_mixtures(["a", "b", "c"]):
    ...     print(kind, [round(w, 3) for w in weights])
    one_hot:a [1.0, 0.0, 0.0]
    one_hot:b [0.0, 1.0, 0.0]
    one_hot:c [0.0, 0.0, 1.0]
    leave_one_out:a [0.0, 0.5, 0.5]
    leave_one_out:b [0.5, 0.0, 0.5]
    leave_one_out:c [0.5, 0.5, 0.0]
    uniform [0.333, 0.333, 0.333]
    """
    if len(domains) < 2:
        raise ValueError(f"a mixture needs at least two domains; got {domains!r}")
    d = len(domains)
    one_hot = [(f"one_hot:{name}", [1.0 if j == i else 0.0 for j in range(d)]) for i, name in enumerate(domains)]
    leave_one_out = [(f"leave_one_out:{name}", [0.0 if j == i else 1.0 / (d - 1) for j in range(d)])
                     for i, name in enumerate(domains)]
    return one_hot + leave_one_out + [("uniform", [1.0 / d] * d)]


# --- phase 2: pilot runs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PilotItem:
    """A question as a pilot run trains on it or scores it: text, reference answer, domain, and the image file."""

    question_id: str
    domain: str
    question: str
    answer: str
    answer_type: str
    choices: tuple[str, ...]
    image_path: str
    image_sha256: str


@dataclass(frozen=True)
class PilotResult:
    in_domain: float
    out_of_domain: float | None  # None when there was no out-of-domain split to score
    trained_ids: tuple[str, ...]  # the training subset the domain sampler drew, in draw order
    steps: int
    train_reward: float | None


@dataclass(frozen=True)
class Splits:
    """Where each question goes: training pools per domain, the two scoring splits, and what was left out."""

    train: list[PilotItem]
    held_out: list[PilotItem]
    out_of_domain: list[PilotItem]
    too_few: dict[str, list[PilotItem]]  # training domains with fewer items than one GRPO step needs


def split_items(items: list[PilotItem], *, out_of_domain: list[str], held_out_share: float = 0.25,
                min_train_items: int = 2) -> Splits:
    """Out-of-domain: the items of the `out_of_domain` domains. Every other domain holds out
    `max(1, round(share · n))` of its n items (n ≥ 2) for the in-domain score, chosen by a hash of the
    question id (stable across runs and shard orders); the rest trains. A domain left with fewer than
    `min_train_items` training items cannot fill a GRPO step alone, so it sits out (`too_few`)."""
    from schemas.base import sha256_text

    by_domain: dict[str, list[PilotItem]] = {}
    for item in items:
        by_domain.setdefault(item.domain, []).append(item)
    train, held_out, ood, too_few = [], [], [], {}
    for domain in sorted(by_domain):
        pool = sorted(by_domain[domain], key=lambda item: sha256_text(item.question_id))
        if domain in out_of_domain:
            ood += pool
            continue
        n_held = max(1, round(held_out_share * len(pool))) if len(pool) >= 2 else 0
        if len(pool) - n_held < min_train_items:
            too_few[domain] = pool
            continue
        held_out += pool[:n_held]
        train += pool[n_held:]
    return Splits(train, held_out, ood, too_few)


def pilot_run(model_dir: Path, train: list[PilotItem], weights: dict[str, float], held_out: list[PilotItem],
              out_of_domain: list[PilotItem], work_dir: Path, *, steps: int = 4, num_generations: int = 2,
              batch_size: int = 4, max_completion_length: int = 32, learning_rate: float = 1e-3,
              rewards: tuple[str, ...] = ("format", "accuracy"), score_reward: str = "modomodo",
              score_max_tokens: int = 48, seed: int = 0, log: Callable[[dict], None] | None = None) -> PilotResult:
    """Train `model_dir` briefly on the subset `weights` draws from `train`; score it on the two splits.

    `batch_size` counts completions (TRL's per-device batch), so one step trains on
    `batch_size / num_generations` prompts; the sampler draws at most `steps` times that many.
    """
    prompts_per_step = batch_size // num_generations
    order = domain_sample([item.domain for item in train], weights, seed=seed, max_items=steps * prompts_per_step)
    if len(order) < prompts_per_step:
        raise ValueError(f"mixture {weights} drew {len(order)} training items before a domain ran out; a GRPO step "
                         f"needs {prompts_per_step} prompts. Give every domain at least {prompts_per_step} items.")
    return train_and_score(model_dir, [train[k] for k in order], held_out, out_of_domain, work_dir, steps=steps,
                           num_generations=num_generations, batch_size=batch_size,
                           max_completion_length=max_completion_length, learning_rate=learning_rate, rewards=rewards,
                           score_reward=score_reward, score_max_tokens=score_max_tokens, seed=seed, log=log)


def train_and_score(model_dir: Path, chosen: list[PilotItem], held_out: list[PilotItem], out_of_domain: list[PilotItem],
                    work_dir: Path, *, steps: int, num_generations: int, batch_size: int, max_completion_length: int,
                    learning_rate: float, rewards: tuple[str, ...], score_reward: str, score_max_tokens: int, seed: int,
                    log: Callable[[dict], None] | None = None) -> PilotResult:
    """Train a copy of `model_dir` with GRPO on `chosen` for `steps` steps; score it on both splits; delete it.

    Shared by the pilots and the fidelity report (pipelines/fidelity.py), so every arm of either trains
    and is scored the same way. An empty `out_of_domain` split scores None.
    """
    from pipelines.engines.hf import HFEngine
    from pipelines.policy.grpo import train_grpo
    from pipelines.policy.prompt import trl_prompt
    from pipelines.rewards import trl_reward
    from stores.media import open_image

    rows = [{"prompt": trl_prompt(item.question, item.answer_type, item.choices), "image": open_image(item.image_path),
             "solution": item.answer, "answer_type": item.answer_type, "choices": list(item.choices)} for item in chosen]
    trained_dir = Path(work_dir) / "policy"
    try:
        metrics = train_grpo(Path(model_dir), rows, [trl_reward(kind) for kind in rewards], trained_dir, max_steps=steps,
                             num_generations=num_generations, per_device_train_batch_size=batch_size,
                             max_completion_length=max_completion_length, learning_rate=learning_rate, seed=seed, log=log)
        engine = HFEngine(str(trained_dir), batch_size=64)
        in_domain = score_items(engine, held_out, reward=score_reward, max_tokens=score_max_tokens, seed=seed)
        out = (score_items(engine, out_of_domain, reward=score_reward, max_tokens=score_max_tokens, seed=seed)
               if out_of_domain else None)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)  # a pilot's policy is scored, not kept
    return PilotResult(in_domain, out, tuple(item.question_id for item in chosen), int(metrics.get("steps", steps)),
                       metrics.get("train_reward"))


def score_items(engine, items: list[PilotItem], *, reward: str = "modomodo", max_tokens: int = 48, seed: int = 0) -> float:
    """Mean reward of the policy's greedy answers to `items` (an answer the engine failed to give scores 0)."""
    from pipelines.engines.base import Request, image_part
    from pipelines.policy.prompt import policy_messages
    from pipelines.rewards import score

    if not items:
        raise ValueError("no items to score: a split is empty")
    requests = [Request(messages=policy_messages(item.question, item.answer_type, item.choices,
                                                 image=image_part(item.image_path, item.image_sha256)),
                        n=1, temperature=0.0, max_tokens=max_tokens, seed=seed, prompt_version="modomodo-pilot-v1",
                        task="modomodo.score") for item in items]
    total = 0.0
    for item, response in zip(items, engine.generate(requests)):
        if not response.error:
            total += float(score(response.text, item.answer, answer_type=item.answer_type, choices=item.choices,
                                 weights=reward)["overall"] or 0.0)
    return total / len(items)


# --- phase 3: heuristics ----------------------------------------------------------------------------


def min_max(values) -> np.ndarray:
    """(v − min) / (max − min); all zeros when every value is the same.

    >>> min_max([2.0, 4.0, 3.0]).tolist(), min_max([1.0, 1.0]).tolist()
    ([0.0, 1.0, 0.5], [0.0, 0.0])
    """
    values = np.asarray(values, dtype=float)
    spread = values.max() - values.min()
    return (values - values.min()) / spread if spread > 0 else np.zeros_like(values)


def normalise(values) -> list[float]:
    """Onto the simplex: divide by the sum; uniform when nothing is positive.

    >>> normalise([1.0, 3.0]), normalise([0.0, 0.0])
    ([0.25, 0.75], [0.5, 0.5])
    """
    values = np.asarray(values, dtype=float)
    total = values.sum()
    if total <= 0:
        return [1.0 / len(values)] * len(values)
    return (values / total).tolist()


def alpha_mixture(weights, in_domain, out_of_domain, *, alpha: float = 0.5) -> list[float]:
    """MoDoMoDo's alpha family. `weights`: runs × domains; the two score lists: one per run."""
    weights = np.asarray(weights, dtype=float)
    share = weights.sum(axis=0)
    share = np.where(share > 0, share, 1.0)  # a domain no run trains on gets credit 0, not 0/0
    credit_in = weights.T @ min_max(in_domain) / share
    credit_out = weights.T @ min_max(out_of_domain) / share
    return normalise(alpha * credit_in + (1 - alpha) * credit_out)


def ridge_vif_mixture(weights, out_of_domain, *, ridge: float = 1e-3) -> list[float]:
    """Ridge of the out-of-domain score on the runs' domain indicators, over VIF, clipped, normalised."""
    indicators = (np.asarray(weights, dtype=float) > 0).astype(float)
    gram_inverse = np.linalg.inv(indicators.T @ indicators + ridge * np.eye(indicators.shape[1]))
    coefficients = gram_inverse @ indicators.T @ np.asarray(out_of_domain, dtype=float)
    return normalise(np.clip(coefficients / np.diag(gram_inverse), 0.0, None))


def leave_one_out_mixture(weights, out_of_domain) -> list[float]:
    """Domain i gets 0.2 − 0.1·ŝ of the run trained on every domain but i (ŝ: min-max over those runs)."""
    weights = np.asarray(weights, dtype=float)
    d = weights.shape[1]
    without = []
    for i in range(d):
        target = np.array([0.0 if j == i else 1.0 / (d - 1) for j in range(d)])
        match = [r for r in range(len(weights)) if np.allclose(weights[r], target)]
        if not match:
            raise ValueError(f"no leave-one-out run without domain {i} (weights {target.tolist()}); "
                             "run the seed mixtures first")
        without.append(out_of_domain[match[0]])
    return normalise(0.2 - 0.1 * min_max(without))


def heuristic_mixtures(weights, in_domain, out_of_domain, *, alphas=(0.5,),
                       ridge: float = 1e-3) -> list[tuple[str, dict, list[float]]]:
    """(method, its parameters, weights) of every heuristic: one alpha mixture per alpha, ridge_vif, leave_one_out."""
    out = [("alpha", {"alpha": alpha}, alpha_mixture(weights, in_domain, out_of_domain, alpha=alpha)) for alpha in alphas]
    out.append(("ridge_vif", {"ridge": ridge}, ridge_vif_mixture(weights, out_of_domain, ridge=ridge)))
    out.append(("leave_one_out", {}, leave_one_out_mixture(weights, out_of_domain)))
    return out


# --- phase 4: the quadratic surrogate ---------------------------------------------------------------


def quadratic_features(weights) -> np.ndarray:
    """[1, w, w⊗w] per row: 1 + d + d² columns.

    >>> quadratic_features([[0.5, 0.5]]).tolist()
    [[1.0, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25]]
    """
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    outer = np.einsum("ni,nj->nij", weights, weights).reshape(len(weights), -1)
    return np.hstack([np.ones((len(weights), 1)), weights, outer])


@dataclass(frozen=True)
class Surrogate:
    """A fitted L̂(w): coefficients over `quadratic_features`, and the test R² of the split it came from."""

    coefficients: np.ndarray
    test_r2: float
    n_train: int
    n_test: int

    def predict(self, weights) -> np.ndarray:
        return quadratic_features(weights) @ self.coefficients


def out_of_sample_r2(observed, predicted, train_mean: float) -> float:
    """1 − SS_res / SS_tot, with SS_tot around the *training* mean (defined for one test point too).

    >>> out_of_sample_r2([1.0, 3.0], [1.0, 3.0], 2.0), out_of_sample_r2([1.0, 3.0], [2.0, 2.0], 2.0)
    (1.0, 0.0)
    """
    observed, predicted = np.asarray(observed, dtype=float), np.asarray(predicted, dtype=float)
    total = float(((observed - train_mean) ** 2).sum())
    residual = float(((observed - predicted) ** 2).sum())
    tolerance = 1e-12 * max(1.0, float((observed ** 2).sum()))  # float noise around a flat score is not a fit
    if total <= tolerance:
        return 1.0 if residual <= tolerance else -math.inf
    return 1.0 - residual / total


def fit_quadratic(weights, scores, *, splits: int = 5, test_share: float = 0.2, seed: int = 0) -> Surrogate:
    """Least squares on [1, w, w⊗w] over `splits` random train/test splits; the fit with the best test R²."""
    weights, scores = np.asarray(weights, dtype=float), np.asarray(scores, dtype=float)
    n = len(weights)
    if n < 2:
        raise ValueError(f"the surrogate needs at least 2 observed mixtures to fit and test; got {n}")
    n_test = min(n - 1, max(1, round(test_share * n)))
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(splits):
        order = rng.permutation(n)
        test, train = order[:n_test], order[n_test:]
        coefficients, *_ = np.linalg.lstsq(quadratic_features(weights[train]), scores[train], rcond=None)
        predicted = quadratic_features(weights[test]) @ coefficients
        r2 = out_of_sample_r2(scores[test], predicted, float(scores[train].mean()))
        if best is None or r2 > best.test_r2:
            best = Surrogate(coefficients, r2, len(train), n_test)
    return best


def gaussian_candidates(weights, *, n: int = 2000, seed: int = 0) -> np.ndarray:
    """Mixtures drawn from one Gaussian fitted to the observed ones, clipped at 0 and renormalised."""
    weights = np.asarray(weights, dtype=float)
    rng = np.random.default_rng(seed)
    # The observed mixtures lie on the simplex, so their covariance is singular: SVD sampling handles that.
    samples = rng.multivariate_normal(weights.mean(axis=0), np.cov(weights.T), size=n, method="svd", check_valid="ignore")
    samples = np.clip(samples, 0.0, None)
    samples = samples[samples.sum(axis=1) > 0]
    return samples / samples.sum(axis=1, keepdims=True)


def top_mixtures(surrogate: Surrogate, candidates, *, k: int = 3) -> list[tuple[list[float], float]]:
    """The k distinct candidates with the highest predicted score, best first, as (weights, predicted).

    Clipping piles many candidates onto the same corner or edge of the simplex; each mixture counts once.
    """
    candidates = np.asarray(candidates, dtype=float)
    predicted = surrogate.predict(candidates)
    top, seen = [], set()
    for i in np.argsort(-predicted, kind="stable"):
        key = tuple(np.round(candidates[i], 9))
        if key not in seen:
            seen.add(key)
            top.append((candidates[i].tolist(), float(predicted[i])))
        if len(top) == k:
            break
    return top

