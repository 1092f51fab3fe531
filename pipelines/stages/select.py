"""select: keep the difficulty rows a named rule likes (ALGORITHMS §7); mark every row, reject the rest.

A rule is a function of one difficulty row returning (selected, why). Rules:
- `dapo`: reward std > 0 — a group whose answers all scored the same gives GRPO no signal.
- `easyr1`: 0.01 < pass rate < 0.99, on accuracy (not the format-weighted reward).
- `thinklite_online`: 0 < pass rate < 0.9.
Each row gets `selected` and `reason`; unselected rows are also rejects (`select.<rule>`), so the
accounting holds and `GROUP BY reason` shows what each rule cost. Only `group_stats` rows of the
given policy (or of every policy) are judged; other rows pass through unchanged.
"""

from typing import Callable

import pyarrow as pa

from pipelines.stage import StageContext, StageResult, stage
from schemas.errors import did_you_mean


def dapo(row: dict) -> tuple[bool, str]:
    std = row["reward_std"] or 0.0
    return std > 0, f"reward std {std:.3f} {'>' if std > 0 else '='} 0"


def easyr1(row: dict) -> tuple[bool, str]:
    rate = row["pass_rate"]
    return 0.01 < rate < 0.99, f"pass rate {rate:.2f} {'inside' if 0.01 < rate < 0.99 else 'outside'} (0.01, 0.99)"


def thinklite_online(row: dict) -> tuple[bool, str]:
    rate = row["pass_rate"]
    return 0 < rate < 0.9, f"pass rate {rate:.2f} {'inside' if 0 < rate < 0.9 else 'outside'} (0, 0.9)"


RULES: dict[str, Callable[[dict], tuple[bool, str]]] = {"dapo": dapo, "easyr1": easyr1, "thinklite_online": thinklite_online}


@stage(reads={"difficulty": ["difficulty_id", "question_id", "policy_id", "method", "pass_rate", "reward_std"]},
       writes="difficulty", version=1, unit="difficulty row", sharded=False)
def select(difficulty: pa.Table, ctx: StageContext, *, rule: str = "dapo") -> StageResult:
    """`rule`: dapo, easyr1 or thinklite_online."""
    if rule not in RULES:
        raise ValueError(f"unknown selection rule {rule!r}; rules: {', '.join(RULES)}.{did_you_mean(rule, RULES)}")
    rows, rejects = [], []
    for row in difficulty.to_pylist():
        if row["method"] == "group_stats":
            selected, why = RULES[rule](row)
            row = {**row, "selected": selected, "reason": f"{rule}: {why}"}
            if not selected:
                rejects.append(ctx.reject(row["difficulty_id"], f"select.{rule}", f"question {row['question_id']}: {why}"))
        rows.append({k: v for k, v in row.items() if k not in ("run_id", "stage", "stage_version", "config_hash", "row_hash")})
    ctx.progress(difficulty.num_rows)
    return StageResult(ctx.rows("difficulty", rows), ctx.rejects(rejects))
