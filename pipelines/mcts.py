r"""MCTS difficulty (ThinkLite-VL, ALGORITHMS §3): how many search iterations a policy needs to solve a question.

The policy writes a solution one step at a time (few-shot prompt: `### StepN: … <end>`, then
`### Final Answer: The answer is: \boxed{…}`); a state is the steps so far. One iteration runs the
phases in order, each a function below:

1. `select`: from the root, descend to a leaf by the selection rule (`ucb1`: value + c·sqrt(ln N/n),
   unvisited children first, as ThinkLite's code; `puct`: value + c·sqrt(N)/(1 + n), as the paper);
2. `expand`: a non-terminal leaf gets k child steps (prior 1/k each) from ONE policy request with
   n = k; the search moves to one child at random;
3. `simulate`: from there, the policy writes one step at a time until a terminal state (a step
   holding "Final Answer:", or `max_steps` steps);
4. `judge`: the judge is told the question, the ground truth and the solution, and answers in one
   sentence; reward 1 if "true" is in that first sentence. Reward 1: solved at this iteration;
5. `backpropagate`: otherwise visits and value go up the path to the root.

`mcts_iters` is the 1-based number of the solving iteration (a geometric count: mean 1/p for a
policy that solves each attempt with probability p); None when `max_iterations` pass unsolved.
ThinkLite's released code reports its 0-based loop index instead (see `selectors.mcts_hard`), only
ever sees reward 0 in backpropagation (it stops at the first 1), and ends a path only after 10 steps
(its terminal test looks for "The final answer is:", which its own prompt never produces); here a
"Final Answer:" step ends it, as the paper says. Since a search stops at its first reward 1, every
value backpropagated is 0, and both selection rules then reduce to "fewest visits first" (ties to
the first child): with a 0/1 judge, ucb1 and puct search alike. They part once values do (a graded
judge, or a value model).

Each search is a generator that yields the model calls it needs (`Ask`) and receives the answers,
so `run_searches` advances many questions in lockstep and sends each round's calls as one batch per
engine. Prefix reuse and repeated states:
- Expanding a node is one request with n = k continuing the same prefix. Engines that can continue
  the assistant's unfinished turn (`continues_assistant_prefix`) get the steps so far as a final
  assistant message with `continue_final_message`: vLLM and SGLang servers (openai profiles with
  `continue_final_message: true`) then find the question, image and earlier steps in their prefix
  cache and encode only the new tokens; the hf engine renders the same chat with the template's
  continuation, and batches the k rows (transformers keeps no cache between calls, so its saving is
  one batched call instead of k). Other engines (hosted APIs, the in-process vLLM engine here) get
  the steps rendered at the end of the user turn; the prompt is append-only, so an automatic prefix
  cache still matches everything before the newest step.
- Within a search, a state already asked about is not sent again: its proposals and its verdict are
  remembered (`Memo`). Across runs the call cache replays: requests are seeded by their state.
"""

import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Generator

from pipelines.engines.base import Request, Response
from schemas.base import sha256_text

PROMPT_VERSION = "mcts-v1"
STEP_END = "<end>"
FINAL_MARK = "Final Answer:"

FEW_SHOT = r"""Answer the question step by step and give the final answer at the end. Start each step with "### StepN:" and end it with <end>. Finish with the line "### Final Answer: The answer is: \boxed{...}". Two examples:
Question: A shop sells 4 boxes of 6 pencils and 3 loose pencils. How many pencils does it sell?
### Step1: Four boxes of 6 pencils hold 4 x 6 = 24 pencils. <end>
### Step2: With the 3 loose pencils that makes 24 + 3 = 27 pencils. <end>
### Final Answer: The answer is: \boxed{27}.
Question: How many blue circles are in the figure?
### Step1: The figure shows red and blue shapes, some circles and some squares. <end>
### Step2: Two shapes are both blue and round: one at the top left, one at the bottom. <end>
### Final Answer: The answer is: \boxed{2}.
Remember to answer step by step. Here is your question:
"""

JUDGE_PROMPT = """Please judge whether the generated answer and its rationale are correct.
Question: {question}
Ground truth answer: {reference}
Generated rationale and answer: {solution}
Your output should be one sentence only: the generated answer is true or false."""


@dataclass(frozen=True)
class MCTSConfig:
    """The search's parameters; defaults are ThinkLite-VL's (paper and code)."""

    k: int = 3                    # child steps per expansion
    temperature: float = 0.5
    top_p: float = 0.9
    max_steps: int = 10           # a path ends after this many steps
    max_iterations: int = 50      # then the item is unsolved
    c: float = 1.0                # exploration constant
    selection: str = "ucb1"       # ucb1 (their code) or puct (the paper)
    max_step_tokens: int = 256    # per step (theirs: 2048); a step normally ends at <end> first
    judge_max_tokens: int = 64
    seed: int = 0

    def check(self) -> None:
        problems = []
        if self.selection not in SELECTION_RULES:
            problems.append(f"unknown selection rule {self.selection!r}; rules: {', '.join(SELECTION_RULES)}")
        problems += [f"{name} must be at least 1, got {getattr(self, name)}" for name in
                     ("k", "max_steps", "max_iterations", "max_step_tokens") if getattr(self, name) < 1]
        if problems:
            raise ValueError("mcts: " + "; ".join(problems))


@dataclass(frozen=True)
class Problem:
    """One question as the search sees it: the policy's chat, and what the judge is told."""

    problem_id: str
    prompt: list[dict]           # system + user turn (image and few-shot question), without steps
    question: str                # as shown to the judge
    reference: str               # the ground truth, as shown to the judge
    answer_type: str = "fib"     # how the reference is graded (for the scripted judge's hints)
    choices: tuple = ()


@dataclass
class Node:
    steps: tuple[str, ...]
    parent: "Node | None" = None
    children: list["Node"] = field(default_factory=list)
    visits: int = 0
    value_sum: float = 0.0
    prior: float = 1.0
    terminal: bool = False

    @property
    def value(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0


@dataclass(frozen=True)
class Ask:
    """A model call a search needs: which engine role, and the request."""

    role: str                    # "policy" or "judge"
    request: Request


@dataclass
class SearchResult:
    problem_id: str
    iterations: int | None       # the solving iteration, from 1; None: unsolved
    iterations_run: int
    solution: tuple[str, ...] | None
    judge_reply: str | None
    n_nodes: int
    counts: dict                 # policy_requests, policy_samples, judge_requests, repeated_states
    error: str | None = None     # a model call failed: the search stopped there

    @property
    def solved(self) -> bool:
        return self.iterations is not None


class CallFailed(Exception):
    """A model call of a search came back with an error; the search cannot go on."""


@dataclass
class Memo:
    """What one search already asked, by state: a repeated state is answered from here, not re-sent."""

    proposals: dict = field(default_factory=dict)   # (steps, n) -> texts
    verdicts: dict = field(default_factory=dict)    # solution steps -> (reward, reply)
    counts: Counter = field(default_factory=Counter)


# ---- maths: the selection rules and the reward ------------------------------------------------------------

def ucb1(parent_visits: int, child_visits: int, child_value: float, c: float) -> float:
    """value + c·sqrt(ln N_parent / N_child); +inf for an unvisited child (ThinkLite-VL's code).

    >>> round(ucb1(8, 2, 0.0, 1.0), 4), ucb1(8, 0, 0.0, 1.0)
    (1.0197, inf)
    """
    if child_visits == 0:
        return math.inf
    return child_value + c * math.sqrt(math.log(max(parent_visits, 1)) / child_visits)


def puct(parent_visits: int, child_visits: int, child_value: float, c: float) -> float:
    """value + c·sqrt(N_parent) / (1 + N_child) (the paper's PUCT-like rule; every prior is 1/k, so it is left out).

    >>> round(puct(8, 2, 0.0, 1.0), 4), round(puct(8, 0, 0.0, 1.0), 4)
    (0.9428, 2.8284)
    """
    return child_value + c * math.sqrt(parent_visits) / (1 + child_visits)


SELECTION_RULES: dict[str, Callable[[int, int, float, float], float]] = {"ucb1": ucb1, "puct": puct}


def judge_reward(reply: str) -> float:
    """1.0 if "true" is in the judge's first sentence, else 0.0 (ThinkLite-VL's rule, case-insensitive).

    >>> judge_reward("The generated answer is true."), judge_reward("The generated answer is false.")
    (1.0, 0.0)
    >>> judge_reward("Let me check the steps first. The generated answer is true.")
    0.0
    """
    return 1.0 if "true" in reply.strip().split(".")[0].lower() else 0.0


def is_terminal(steps: tuple[str, ...], max_steps: int) -> bool:
    """A path ends at a step holding "Final Answer:" or after `max_steps` steps.

    >>> is_terminal(("### Step1: 2 + 2 = 4.",), 10), is_terminal(("### Final Answer: The answer is: \\\\boxed{4}.",), 10)
    (False, True)
    """
    return len(steps) >= max_steps or (bool(steps) and FINAL_MARK in steps[-1])


def render_steps(steps: tuple[str, ...]) -> str:
    """The steps as the policy writes them: each ended by <end> and a newline, the final answer last.

    >>> render_steps(("### Step1: 2 + 2 = 4.", "### Final Answer: The answer is: 4."))
    '### Step1: 2 + 2 = 4. <end>\\n### Final Answer: The answer is: 4.\\n'
    """
    return "".join(f"{step}\n" if FINAL_MARK in step else f"{step} {STEP_END}\n" for step in steps)


def clean_step(text: str) -> str:
    """A generated step without its <end> marker (engines cut at the stop string; some do not) and outer space."""
    return text.split(STEP_END)[0].strip()


# ---- the phases --------------------------------------------------------------------------------------------

def select(root: Node, *, rule: str, c: float) -> Node:
    """Descend from the root by the selection rule to a terminal node or one without children (ties: first child)."""
    score = SELECTION_RULES[rule]
    node = root
    while not node.terminal and node.children:
        node = max(node.children, key=lambda child: score(node.visits, child.visits, child.value, c))
    return node


def expand(node: Node, step_texts: list[str], *, max_steps: int) -> list[Node]:
    """Give `node` one child per proposed step, each with prior 1/k."""
    node.children = [Node(node.steps + (clean_step(text),), parent=node, prior=1 / len(step_texts))
                     for text in step_texts]
    for child in node.children:
        child.terminal = is_terminal(child.steps, max_steps)
    return node.children


def simulate(problem: Problem, steps: tuple[str, ...], config: MCTSConfig, memo: Memo, *,
             continue_prefix: bool) -> Generator[Ask, Response, tuple[str, ...]]:
    """Let the policy write one step at a time from `steps` until the path is terminal; the finished path."""
    while not is_terminal(steps, config.max_steps):
        (text,) = yield from propose(problem, steps, 1, config, memo, continue_prefix=continue_prefix)
        steps = steps + (clean_step(text),)
    return steps


def judge(problem: Problem, solution: tuple[str, ...], config: MCTSConfig, memo: Memo) -> Generator[Ask, Response, tuple[float, str]]:
    """The judge's reward for a finished path (0 or 1) and its reply; a path judged before is not asked again."""
    if solution in memo.verdicts:
        memo.counts["repeated_states"] += 1
        return memo.verdicts[solution]
    response = yield Ask("judge", judge_request(problem, solution, config))
    if response.error:
        raise CallFailed(f"the judge failed: {response.error}")
    memo.counts["judge_requests"] += 1
    memo.verdicts[solution] = judge_reward(response.text), response.text
    return memo.verdicts[solution]


def backpropagate(node: Node, reward: float) -> None:
    """Add a visit and the reward to `node` and every ancestor."""
    while node is not None:
        node.visits += 1
        node.value_sum += reward
        node = node.parent


def propose(problem: Problem, steps: tuple[str, ...], n: int, config: MCTSConfig, memo: Memo, *,
            continue_prefix: bool) -> Generator[Ask, Response, list[str]]:
    """n next steps after `steps`: one policy request with n samples, unless this state was asked before."""
    key = (steps, n)
    if key in memo.proposals:
        memo.counts["repeated_states"] += 1
        return memo.proposals[key]
    response = yield Ask("policy", step_request(problem, steps, n, config, continue_prefix=continue_prefix))
    if response.error:
        raise CallFailed(f"the policy failed: {response.error}")
    memo.counts["policy_requests"] += 1
    memo.counts["policy_samples"] += n
    memo.proposals[key] = list(response.texts)
    return memo.proposals[key]


# ---- one search, and many in lockstep ----------------------------------------------------------------------

def search(problem: Problem, config: MCTSConfig, *, continue_prefix: bool = False) -> Generator[Ask, Response, SearchResult]:
    """The search for one problem: yields the calls it needs, returns its result."""
    rng = random.Random(_seed(config.seed, problem.problem_id, "child"))
    memo = Memo()
    root = Node(steps=())
    for iteration in range(1, config.max_iterations + 1):
        node = select(root, rule=config.selection, c=config.c)
        if not node.terminal:
            texts = yield from propose(problem, node.steps, config.k, config, memo, continue_prefix=continue_prefix)
            node = rng.choice(expand(node, texts, max_steps=config.max_steps))
        solution = yield from simulate(problem, node.steps, config, memo, continue_prefix=continue_prefix)
        reward, reply = yield from judge(problem, solution, config, memo)
        if reward == 1.0:
            return SearchResult(problem.problem_id, iteration, iteration, solution, reply, _size(root), dict(memo.counts))
        backpropagate(node, reward)
    return SearchResult(problem.problem_id, None, config.max_iterations, None, None, _size(root), dict(memo.counts))


def run_searches(problems: list[Problem], *, policy, judge_engine, config: MCTSConfig,
                 on_done: Callable[[SearchResult], None] = lambda result: None) -> list[SearchResult]:
    """Every problem's search, advanced in lockstep: each round's calls go to each engine as one batch.

    A search whose call fails ends with `error` set (the others go on). Results in the order of `problems`.
    """
    config.check()
    continue_prefix = bool(getattr(policy, "continues_assistant_prefix", False))
    engines = {"policy": policy, "judge": judge_engine}
    running = {p.problem_id: search(p, config, continue_prefix=continue_prefix) for p in problems}
    pending: dict[str, Ask] = {}
    results: dict[str, SearchResult] = {}

    def advance(problem_id: str, answer: Response | None) -> None:
        try:
            pending[problem_id] = running[problem_id].send(answer)
        except StopIteration as finished:
            results[problem_id] = finished.value
            on_done(finished.value)
        except CallFailed as failure:
            results[problem_id] = SearchResult(problem_id, None, 0, None, None, 0, {}, error=str(failure))
            on_done(results[problem_id])

    for problem_id in running:
        advance(problem_id, None)
    while pending:
        round_, pending = pending, {}
        for role, engine in engines.items():
            asked = [(problem_id, ask) for problem_id, ask in round_.items() if ask.role == role]
            if asked:
                for (problem_id, _), answer in zip(asked, engine.generate([ask.request for _, ask in asked])):
                    advance(problem_id, answer)
    return [results[p.problem_id] for p in problems]


# ---- requests ----------------------------------------------------------------------------------------------

def step_request(problem: Problem, steps: tuple[str, ...], n: int, config: MCTSConfig, *, continue_prefix: bool) -> Request:
    """The policy request for the next step after `steps`: the steps as the assistant's unfinished turn
    (engines that continue it), or rendered at the end of the user turn (the others)."""
    if not steps:
        messages, continued = problem.prompt, False
    elif continue_prefix:
        messages, continued = problem.prompt + [{"role": "assistant", "content": render_steps(steps)}], True
    else:
        *head, turn = problem.prompt
        so_far = f"\n\nYour solution so far:\n{render_steps(steps)}Continue with the next step."
        messages, continued = head + [{**turn, "content": list(turn["content"]) + [{"type": "text", "text": so_far}]}], False
    return Request(messages=messages, n=n, temperature=config.temperature, top_p=config.top_p,
                   max_tokens=config.max_step_tokens, seed=_seed(config.seed, problem.problem_id, n, steps),
                   stop=(STEP_END,), prompt_version=PROMPT_VERSION, task="mcts.step", continue_final_message=continued)


def judge_request(problem: Problem, solution: tuple[str, ...], config: MCTSConfig) -> Request:
    text = render_steps(solution)
    prompt = JUDGE_PROMPT.format(question=problem.question, reference=problem.reference, solution=text)
    return Request(messages=[{"role": "user", "content": [{"type": "text", "text": prompt}]}], temperature=0.0,
                   max_tokens=config.judge_max_tokens, prompt_version=PROMPT_VERSION, task="mcts.judge",
                   hints={"solution": text, "reference": problem.reference, "answer_type": problem.answer_type,
                          "choices": list(problem.choices)})


def step_prompt(question_text: str, *, image: dict | None = None) -> list[dict]:
    """The policy's chat before any step: the image, then the few-shot instructions and the question."""
    return [{"role": "user", "content": ([image] if image else []) + [{"type": "text", "text": FEW_SHOT + question_text}]}]


def _size(root: Node) -> int:
    return 1 + sum(_size(child) for child in root.children)


def _seed(*parts) -> int:
    return int(sha256_text(json.dumps(parts, default=str))[:8], 16)
