"""mcts: ThinkLite-VL's difficulty: how many MCTS iterations the policy needs to solve each question.

For every question the policy (role `policy`) searches for a solution step by step, and the judge
(role `judge`) says whether a finished solution is right (pipelines/mcts.py has the phases and how
prefixes are reused). Each question gets a `difficulty` row for the policy, method "mcts":
`mcts_iters` is the iteration that solved it (from 1), `mcts_path` the solving steps as JSON; an
unsolved question is KEPT, with `mcts_iters` None and `detail.solved` false (ThinkLite's released
script drops those, but they are the hardest items: `select`'s `mcts_hard` keeps them). `detail`
records the parameters, the calls the search made and how the prefix was sent. Defaults are the
paper's; on a CPU, recipes lower `max_iterations` and `max_step_tokens` (see build-thinklite).

`open_ended: true` asks multiple-choice questions without their options and grades the answer
against the correct option's text, as ThinkLite-VL rewrote its MC sources before estimating
difficulty (with the options shown, a policy can guess). Questions whose image is missing are
rejected (`mcts.missing_image`), and so are searches a model call broke off (`mcts.engine_error`).
"""

import json
from typing import Literal

import pyarrow as pa

from pipelines.mcts import MCTSConfig, Problem, run_searches, step_prompt
from pipelines.policy.prompt import question_text
from pipelines.stage import StageContext, StageResult, stage
from pipelines.stages.rollouts import policy_id_of
from pipelines.visuals import Visuals
from schemas import make_id


@stage(reads={"questions": ["question_id", "question", "answer", "answer_type", "choices", "asset_ids"],
              "assets": ["asset_id", "kind", "media_uri", "sha256", "scene", "parent_asset_id", "frame_ts"]},
       writes="difficulty", version=1, unit="question", engines=("policy", "judge"))
def mcts(questions: pa.Table, assets: pa.Table, ctx: StageContext, *, k: int = 3, temperature: float = 0.5,
         top_p: float = 0.9, max_steps: int = 10, max_iterations: int = 50, c: float = 1.0,
         selection: Literal["ucb1", "puct"] = "ucb1", max_step_tokens: int = 256, open_ended: bool = False) -> StageResult:
    """`k`: child steps per expansion; `max_iterations`: budget before an item counts as unsolved; `selection`:
    ucb1 (ThinkLite's code) or puct (the paper); `open_ended`: hide multiple-choice options."""
    config = MCTSConfig(k=k, temperature=temperature, top_p=top_p, max_steps=max_steps, max_iterations=max_iterations,
                        c=c, selection=selection, max_step_tokens=max_step_tokens, seed=ctx.seed)
    policy, judge = ctx.engine("policy"), ctx.engine("judge")
    visuals = Visuals.of(assets.to_pylist())
    asset_by_id = {a["asset_id"]: a for a in visuals.items}
    problems, rejects = [], []
    for q in questions.to_pylist():
        asset = asset_by_id.get(q["asset_ids"][0])
        if asset is None:
            rejects.append(ctx.reject(q["question_id"], "mcts.missing_image", f"its image {q['asset_ids'][0]} is not in the dataset"))
        else:
            problems.append(problem_of(q, visuals.policy_part(asset, ctx.root), open_ended=open_ended))
    results = run_searches(problems, policy=policy, judge_engine=judge, config=config, on_done=lambda result: ctx.progress(1))
    policy_id, rows = policy_id_of(policy), []
    prefix = "continued" if getattr(policy, "continues_assistant_prefix", False) else "rendered"
    for result in results:
        if result.error:
            rejects.append(ctx.reject(result.problem_id, "mcts.engine_error", result.error))
            continue
        facts = {**{name: getattr(config, name) for name in ("k", "temperature", "top_p", "max_steps", "max_iterations", "c",
                                                              "selection", "max_step_tokens", "seed")},
                 "open_ended": open_ended, "solved": result.solved, "iterations_run": result.iterations_run,
                 "n_nodes": result.n_nodes, "prefix": prefix, "judge_reply": result.judge_reply, **result.counts}
        rows.append({"difficulty_id": make_id("difficulty", result.problem_id, policy_id, "mcts"), "question_id": result.problem_id,
                     "policy_id": policy_id, "method": "mcts", "mcts_iters": result.iterations,
                     "mcts_path": json.dumps(list(result.solution)) if result.solution else None,
                     "detail": json.dumps(facts, sort_keys=True)})
    return StageResult(ctx.rows("difficulty", rows), ctx.rejects(rejects))


def problem_of(question: dict, image: dict | None, *, open_ended: bool = False) -> Problem:
    """The search problem for a question row: the prompt the policy sees, and what the judge is told."""
    choices = tuple(question["choices"] or ())
    answer, answer_type = question["answer"], question["answer_type"]
    if answer_type == "mc" and open_ended and _option(answer, choices) is not None:
        shown = f"{question['question']}\nAnswer in a few words."
        return Problem(question["question_id"], step_prompt(shown, image=image), question["question"],
                       _option(answer, choices), "fib")
    shown = question_text(question["question"], answer_type, choices)
    return Problem(question["question_id"], step_prompt(shown, image=image), shown, answer, answer_type, choices)


def _option(letter: str, choices: tuple) -> str | None:
    index = ord(letter.strip().upper()[:1] or "?") - ord("A")
    return choices[index] if 0 <= index < len(choices) else None
