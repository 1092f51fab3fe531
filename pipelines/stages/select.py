"""select: keep the questions a list of named rules all keep (pipelines/selectors.py); mark every row.

The rules are judged per (question, policy), each on the difficulty row of the method it reads
(group statistics, or the MCTS search), so `rules: [thinklite_online, mcts_hard]` asks both of one
question. A question is kept only if every rule keeps it. Every rule is asked, and each row it
concerns gets `selected`, a `reason` listing every rule's verdict ("dapo: reward std 0.350 > 0;
easyr1: pass rate 1.00 outside (0.01, 0.99)") and the verdicts as JSON under `detail.select`; a
weight a rule gives (mmr1's p(1−p)) goes to `weight`. A dropped row is also a reject naming the
first rule that dropped it, `select.<rule>`, with the rule's reason as detail; a rule that cannot
judge the row refuses it with a reason of its own, `select.<rule>.<why>` (`thinklite_sc` over fewer
than 50 rollouts: `select.thinklite_sc.too_few_rollouts`; no MCTS row for `mcts_hard`:
`select.mcts_hard.no_mcts_row`). Rows of methods no rule reads pass through unjudged.

A rule is a name, or a name with parameters: `rules: [dapo, {mcts_hard: {max_easy_iters: 8}}]`.
`rule: <name>` (one rule) still works, for recipes written before `rules`; set one of the two
(`--set select.rule=null` clears a recipe's `rule`). Scripts get the same decision from difficulty
row dicts with `kept_questions(rows, rules)`.
"""

import inspect
import json
from typing import Literal

import pyarrow as pa
from pydantic import TypeAdapter, ValidationError

from pipelines.selectors import READS, RULES, Verdict
from pipelines.stage import StageContext, StageResult, stage
from schemas.errors import did_you_mean

LINEAGE = ("run_id", "stage", "stage_version", "config_hash", "row_hash")
# The rule names as a type, so a recipe naming an unknown rule fails when it is loaded, before any work.
RuleName = Literal[tuple(RULES)]


@stage(reads={"difficulty": ["difficulty_id", "question_id", "policy_id", "method", "pass_rate", "reward_std"]},
       writes="difficulty", version=2, unit="difficulty row", sharded=False)  # 2: rule lists, every verdict recorded
def select(difficulty: pa.Table, ctx: StageContext, *, rules: list[RuleName | dict[RuleName, dict]] | None = None,
           rule: RuleName | None = None) -> StageResult:
    """`rules`: the rules a question must all pass (default [dapo]); `rule`: one rule, the older spelling."""
    chosen = parse_rules(rules, rule)
    rows = [{k: v for k, v in row.items() if k not in LINEAGE} for row in difficulty.to_pylist()]
    rejects = []
    for (question_id, _), (judged, verdicts) in decide(rows, chosen).items():
        kept = all(verdict.kept for _, verdict in verdicts)
        reason = "; ".join(f"{name}: {'refused: ' if v.kept is None else ''}{v.why}" for name, v in verdicts)
        weights = [v.weight for _, v in verdicts if v.weight is not None]
        for row in judged:  # the dicts in `rows`: annotated in place
            row.update(selected=kept, reason=reason, weight=weights[0] if weights else row.get("weight"),
                       detail=_with_verdicts(row.get("detail"), chosen, verdicts))
        if not kept:
            name, first = next((name, v) for name, v in verdicts if not v.kept)
            slug = f"select.{name}" if first.kept is False else f"select.{name}.{first.refused}"
            rejects += [ctx.reject(row["difficulty_id"], slug, f"question {question_id}: {first.why}") for row in judged]
    ctx.progress(difficulty.num_rows)
    return StageResult(ctx.rows("difficulty", rows), ctx.rejects(rejects))


def decide(rows: list[dict], chosen: list[tuple[str, dict]]) -> dict[tuple[str, str], tuple[list[dict], list[tuple[str, Verdict]]]]:
    """Per (question, policy): the rows the rules read, and every rule's verdict. Questions with no row any
    rule reads are left out (they pass through `select` unjudged). `chosen`: `parse_rules`' output."""
    needed = {READS[name] for name, _ in chosen}
    candidates: dict[tuple[str, str], dict[str, dict]] = {}
    for row in rows:
        candidates.setdefault((row["question_id"], row["policy_id"]), {})[row["method"]] = row
    return {key: ([row for method, row in by_method.items() if method in needed],
                  [(name, judge(name, params, by_method)) for name, params in chosen])
            for key, by_method in candidates.items() if needed & set(by_method)}


def kept_questions(rows: list[dict], rules: list[str | dict[str, dict]]) -> set[tuple[str, str]]:
    """(question_id, policy_id) pairs every rule keeps: `select`'s decision as a plain function of difficulty
    row dicts (e.g. `kept_questions(rows, ["mcts_hard"])` for the MCTS subset, `["thinklite_sc"]` for SC's)."""
    return {key for key, (_, verdicts) in decide(rows, parse_rules(rules, None)).items() if all(v.kept for _, v in verdicts)}


def judge(name: str, params: dict, by_method: dict[str, dict]) -> Verdict:
    """Rule `name`'s verdict on the row it reads among one question's rows (refused when that row is missing)."""
    method = READS[name]
    if method not in by_method:
        return Verdict(None, f"no {method} row for this question and policy (run the `{_stage_of(method)}` step first)",
                       refused=f"no_{method}_row")
    return RULES[name](by_method[method], **params)


def parse_rules(rules: list[str | dict[str, dict]] | None, rule: str | None) -> list[tuple[str, dict]]:
    """(name, parameters) per rule, every problem reported in one ValueError listing what is valid."""
    if rules is not None and rule is not None:
        raise ValueError(f"select: set `rules` or `rule`, not both (got rules={rules!r} and rule={rule!r}); "
                         f"`rules: [{rule}]` says the same as `rule: {rule}`")
    entries = rules if rules is not None else [rule or "dapo"]
    if not entries:
        raise ValueError(f"select: `rules` is empty; give at least one of: {', '.join(RULES)}")
    parsed, problems = [], []
    for entry in entries:
        if isinstance(entry, str):
            name, params = entry, {}
        elif len(entry) == 1:
            (name, params), = entry.items()
        else:
            problems.append(f"{entry!r}: a rule is a name, or one name with its parameters: {{mcts_hard: {{max_easy_iters: 8}}}}")
            continue
        if name not in RULES:
            problems.append(f"unknown selection rule {name!r}; rules: {', '.join(RULES)}.{did_you_mean(name, RULES)}")
        else:
            takes = {n: p for n, p in inspect.signature(RULES[name]).parameters.items() if n != "row"}
            for key, value in (params or {}).items():
                if key not in takes:
                    problems.append(f"rule {name} has no parameter {key!r}; it takes: {', '.join(takes) or 'no parameters'}."
                                    f"{did_you_mean(key, takes)}")
                    continue
                try:
                    TypeAdapter(takes[key].annotation).validate_python(value)
                except ValidationError as error:
                    problems.append(f"rule {name}: {key}={value!r}: {error.errors()[0]['msg']}")
            parsed.append((name, dict(params or {})))
    if problems:
        raise ValueError("; ".join(problems))
    return parsed


def _with_verdicts(detail: str | None, chosen: list[tuple[str, dict]], verdicts: list[tuple[str, Verdict]]) -> str:
    """The row's detail JSON with every rule's verdict under "select" (the method's own facts kept)."""
    facts = json.loads(detail) if detail else {}
    facts["select"] = [{"rule": name, "params": params, "verdict": _word(v), "why": v.why, **({"weight": v.weight} if v.weight is not None else {})}
                       for (name, params), (_, v) in zip(chosen, verdicts)]
    return json.dumps(facts, sort_keys=True)


def _word(verdict: Verdict) -> str:
    return {True: "kept", False: "dropped", None: f"refused: {verdict.refused}"}[verdict.kept]


def _stage_of(method: str) -> str:
    return {"group_stats": "difficulty"}.get(method, method)
