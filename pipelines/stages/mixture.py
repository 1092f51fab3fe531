"""mixture: the domain mixture a selection produced, recorded as a `mixtures` row (method "observed").

Domains are the values of a declared question column (`category` by default: the synthetic
families, or a source's own labels). The row's weights are each domain's share of the selected
items, and `observed` is their mean pass rate for the policy that was scored, so later rounds can
compare the mixture they train on with what it yielded. MoDoMoDo's mixture search (seed mixtures, pilots, heuristics,
the quadratic surrogate) is the `modomodo` stage (pipelines/modomodo.py); this stage only observes.
"""

from collections import Counter

import pyarrow as pa

from pipelines.selectors import one_per_question
from pipelines.stage import StageContext, StageResult, stage
from schemas import make_id


@stage(reads={"difficulty": ["difficulty_id", "question_id", "method", "selected", "pass_rate"], "questions": ["question_id"]},
       writes="mixtures", version=2, unit="selected question", sharded=False)
def mixture(difficulty: pa.Table, questions: pa.Table, ctx: StageContext, *, domain_column: str = "category") -> StageResult:
    """`domain_column`: the question column whose values are the domains."""
    if domain_column not in questions.schema.names:
        raise ValueError(f"questions have no column {domain_column!r}; columns: {', '.join(questions.schema.names)}")
    domain_of = dict(zip(questions.column("question_id").to_pylist(), map(str, questions.column(domain_column).to_pylist())))
    chosen, duplicates = one_per_question([r for r in difficulty.to_pylist() if r["selected"]])
    rejects = [ctx.reject(r["difficulty_id"], "mixture.not_selected", "not in the selection") for r in difficulty.to_pylist()
               if not r["selected"]]
    rejects += [ctx.reject(r["difficulty_id"], "mixture.same_question", f"question {r['question_id']} counts once, "
                           f"through its {kept['method']} row") for r, kept in duplicates]
    if not chosen:
        return StageResult(ctx.empty("mixtures"), ctx.rejects(rejects), kept=[])
    counts = Counter(domain_of[r["question_id"]] for r in chosen)
    domains = sorted(counts)
    weights = [counts[d] / len(chosen) for d in domains]
    rates = [r["pass_rate"] for r in chosen if r["pass_rate"] is not None]  # MCTS rows have none
    observed = sum(rates) / len(rates) if rates else None
    row = {"mixture_id": make_id("mixture", domain_column, domains, weights, "observed"), "domain_column": domain_column,
           "domains": domains, "weights": weights, "method": "observed", "predicted": None, "observed": observed}
    return StageResult(ctx.rows("mixtures", [row]), ctx.rejects(rejects), kept=[r["difficulty_id"] for r in chosen])
