"""What one round of the loop changed: pass-rate distributions, their shift, items that became easy or hard.

Free functions over plain numbers (`flow report loop` and the run's artifact feed them the lake's
difficulty rows). A round compares the policy it trained with the policy it started from, on the
questions both have a `group_stats` pass rate for ("paired"): comparing means over different
question sets would mix a change of policy with a change of questions.

Defaults: a question is *easy* for a policy at pass rate ≥ 0.9 (ThinkLite-VL's online filter drops
p ≥ 0.9 as no longer informative) and *hard* at ≤ 0.1 (about one success in ten samples or fewer).
"""

from statistics import fmean

MIN_EASY_PASS_RATE = 0.9
MAX_HARD_PASS_RATE = 0.1
# Histogram bins: exactly 0 (never solved), four quarters, exactly 1 (always solved). GRPO learns
# nothing from the two end bins (every reward in the group is equal), so they get their own.
BINS = ("0", "(0, .25]", "(.25, .5]", "(.5, .75]", "(.75, 1)", "1")


def pass_rate_histogram(pass_rates: list[float]) -> list[int]:
    """Counts per bin of `BINS`.

    >>> pass_rate_histogram([0.0, 0.0, 0.125, 0.5, 0.875, 1.0, 1.0])
    [2, 1, 1, 0, 1, 2]
    """
    counts = [0] * len(BINS)
    for rate in pass_rates:
        counts[_bin(rate)] += 1
    return counts


def _bin(rate: float) -> int:
    if rate <= 0:
        return 0
    if rate >= 1:
        return 5
    return 1 + min(3, int((rate - 1e-12) // 0.25))


def became_easy(before: float, after: float, *, min_easy_pass_rate: float = MIN_EASY_PASS_RATE) -> bool:
    """Below the easy mark before, at or above it after.

    >>> became_easy(0.5, 0.9), became_easy(0.9, 1.0), became_easy(0.5, 0.75)
    (True, False, False)
    """
    return before < min_easy_pass_rate <= after


def became_hard(before: float, after: float, *, max_hard_pass_rate: float = MAX_HARD_PASS_RATE) -> bool:
    """Above the hard mark before, at or below it after.

    >>> became_hard(0.5, 0.0), became_hard(0.0, 0.0), became_hard(0.5, 0.25)
    (True, False, False)
    """
    return before > max_hard_pass_rate >= after


def round_shift(before: dict[str, float], after: dict[str, float], *, min_easy_pass_rate: float = MIN_EASY_PASS_RATE,
                max_hard_pass_rate: float = MAX_HARD_PASS_RATE) -> dict:
    """Pass rates (question id → rate) of the starting policy (`before`) and the trained one (`after`),
    compared on the questions both were scored on.

    >>> shift = round_shift({"a": 0.25, "b": 0.5, "c": 1.0}, {"a": 1.0, "b": 0.0, "d": 0.5})
    >>> shift["n_paired"], shift["mean_pass_rate_before"], shift["mean_pass_rate"], shift["pass_rate_shift"]
    (2, 0.375, 0.5, 0.125)
    >>> shift["n_became_easy"], shift["n_became_hard"], shift["histogram"]
    (1, 1, [1, 0, 0, 0, 0, 1])
    """
    paired = sorted(set(before) & set(after))
    old, new = [before[q] for q in paired], [after[q] for q in paired]
    mean_before, mean_after = (fmean(old), fmean(new)) if paired else (None, None)
    return {
        "n_paired": len(paired),
        "mean_pass_rate_before": mean_before,
        "mean_pass_rate": mean_after,
        "pass_rate_shift": None if not paired else mean_after - mean_before,
        "histogram_before": pass_rate_histogram(old),
        "histogram": pass_rate_histogram(new),
        "n_became_easy": sum(became_easy(b, a, min_easy_pass_rate=min_easy_pass_rate) for b, a in zip(old, new)),
        "n_became_hard": sum(became_hard(b, a, max_hard_pass_rate=max_hard_pass_rate) for b, a in zip(old, new)),
    }
