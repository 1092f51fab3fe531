"""holdout: set a seeded share of questions aside, never to be selected or trained on, to measure policies on.

Every question gets one `splits` row, `train` or `held_out`, and is kept (in = kept: setting aside
is not refusing). A question is held out when a hash of (seed, question id) falls below
`held_out_share`, so its split depends on nothing else: adding questions never moves one. A split
already committed to the lake wins over the hash, so changing the share later never turns a question
a policy was measured on into training data. A loop run (`loop:` in a recipe, flows/loop.py) hands
its rounds only the training questions' difficulty rows; `rescore` re-runs every question, held out
or not, so each round's policy gets a held-out reward (`flow report loop`).
"""

import pyarrow as pa

from pipelines.stage import StageContext, StageResult, stage
from schemas import make_id
from schemas.base import sha256_text


@stage(reads={"questions": ["question_id"], "lake.splits": ["question_id", "split", "held_out_share", "seed"]},
       writes="splits", version=1, unit="question")
def holdout(questions: pa.Table, committed: pa.Table, ctx: StageContext, *, held_out_share: float = 0.2) -> StageResult:
    """`held_out_share`: share of questions (0–1) set aside; the recipe's `seed` picks which."""
    if not 0 <= held_out_share <= 1:
        raise ValueError(f"holdout: held_out_share must be between 0 and 1, got {held_out_share}")
    earlier = {r["question_id"]: r for r in committed.to_pylist()}
    rows = []
    for question_id in questions.column("question_id").to_pylist():
        if question_id in earlier:  # committed before: keep it, whatever the share is now
            row = earlier[question_id]
            split, share, seed = row["split"], row["held_out_share"], row["seed"]
        else:
            split = "held_out" if is_held_out(question_id, share=held_out_share, seed=ctx.seed) else "train"
            share, seed = held_out_share, ctx.seed
        rows.append({"split_id": make_id("split", question_id), "question_id": question_id, "split": split,
                     "held_out_share": share, "seed": seed})
    ctx.progress(questions.num_rows)
    return StageResult(ctx.rows("splits", rows), ctx.rejects([]))


def hash_fraction(question_id: str, seed: int) -> float:
    """A number in [0, 1) fixed by (seed, question id): uniform over ids, independent of everything else.

    >>> hash_fraction("question-1", 0) == hash_fraction("question-1", 0) != hash_fraction("question-1", 1)
    True
    """
    return int(sha256_text(f"holdout/{seed}/{question_id}")[:15], 16) / 16**15


def is_held_out(question_id: str, *, share: float, seed: int) -> bool:
    """Whether a question is set aside: about `share` of all ids are.

    >>> is_held_out("question-1", share=0.0, seed=0), is_held_out("question-1", share=1.0, seed=0)
    (False, True)
    >>> sum(is_held_out(f"question-{i}", share=0.2, seed=0) for i in range(10_000)) / 10_000
    0.2008
    """
    return hash_fraction(question_id, seed) < share
