"""Classification by prompting: the loop every task's `evaluate_mllm` shares.

A task describes its sub-tasks as `Group`s (class names, training and test images);
`classify` picks each group's in-context examples, builds one prompt per test image
with as many examples as requested and as fit the context window, sends them all
through the client, and parses the answers. `summary` turns the outcomes into the
per-example scores and the cost / failure / parse figures a `TaskReport` carries.

In-context examples (the small-data protocol, small_data_metrics' `eval_task_mllm`):
`n_train` training images per group, class-balanced and seeded per (seed, group) as
the probes' training sets are, and ordered round-robin over classes so that when the
context window cuts the list short, what is left is still balanced. Every test image of
a group sees the same examples (a prefix of them when its own tokens leave less room).
Seed bugs not reproduced: prompts depended on a shared generator advanced in async
completion order; the training sample used unseeded `np.random.shuffle`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from jaxtyping import Int

from biobench.errors import BiobenchError
from biobench.evaluation import DEBUG_N_TEST, EvalContext
from biobench.mllm import prompts
from biobench.mllm.client import Answer, Client
from biobench.sampling import balanced_sample, task_rng

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Group:
    """One sub-task to classify: its classes and its train and test images."""

    name: str
    """Sub-task name (NeWT task, Ages setting); seeds its example choice."""
    classnames: tuple[str, ...]
    """Human-readable name of each class index."""
    train_paths: Sequence[Path]
    train_labels: Int[np.ndarray, " n"]
    test_ids: Sequence[str]
    test_paths: Sequence[Path]
    test_labels: Int[np.ndarray, " m"]

    def __post_init__(self) -> None:
        if len(set(self.classnames)) != len(self.classnames):
            raise BiobenchError(f"Sub-task {self.name}: class names must differ, got {self.classnames}.")


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What happened to one test image."""

    example_id: str
    group: str
    label: int
    pred: int | None
    """Predicted class index; None when the request failed or the answer was empty."""
    parsed: bool
    n_shots: int
    answer: Answer

    @property
    def correct(self) -> bool:
        return self.pred is not None and self.pred == self.label


def shot_order(labels: Int[np.ndarray, " n"], rng: np.random.Generator) -> Int[np.ndarray, " n"]:
    """A permutation of `labels`' positions that takes classes round-robin (class order shuffled),
    so every prefix is as class-balanced as the whole."""
    classes = rng.permutation(np.unique(labels))
    pools = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    order = []
    for i in range(max((len(p) for p in pools), default=0)):
        order.extend(int(p[i]) for p in pools if i < len(p))
    return np.asarray(order, dtype=np.int64)


def choose_shots(group: Group, n_train: int, seed: int) -> Int[np.ndarray, " k"]:
    """Indices into the group's training images: `n_train` (all if -1), balanced, seeded, round-robin ordered."""
    rng = task_rng(seed, group.name)
    chosen = balanced_sample(group.train_labels, n_train, rng)
    return chosen[shot_order(group.train_labels[chosen], rng)]


def classify(client: Client, groups: Sequence[Group], ctx: EvalContext) -> list[Outcome]:
    """Prompt the model once per test image of every group; outcomes in group, then test order.

    Groups are sent one after another (each group's requests concurrently), so memory
    holds one group's encoded images, not a whole dataset's.
    """
    outcomes: list[Outcome] = []
    for group in groups:
        outcomes += _classify_group(client, group, ctx)
    return outcomes


def _classify_group(client: Client, group: Group, ctx: EvalContext) -> list[Outcome]:
    m = client.model
    n_test = min(len(group.test_ids), DEBUG_N_TEST) if ctx.debug else len(group.test_ids)
    if n_test == 0:
        return []

    def url(path: Path) -> str:
        return prompts.encode_image(Path(path), max_side=m.max_image_side)

    chosen = choose_shots(group, ctx.n_train, ctx.seed) if ctx.n_train != 0 else np.arange(0)
    shots = [prompts.Shot(url(group.train_paths[i]), group.classnames[group.train_labels[i]]) for i in chosen]
    # Shots cost the same tokens in every prompt of the group: count each once.
    queries = [url(p) for p in group.test_paths[:n_test]]
    probe_text = prompts.question(group.classnames, np.random.default_rng(0))
    per_shot = prompts.shot_tokens(shots, probe_text, m.prompting, client.token_model, queries[0])
    requests, meta, unfit, capped = [], [], [], None
    for j, query in enumerate(queries):
        example_id, label = group.test_ids[j], int(group.test_labels[j])
        text = prompts.question(group.classnames, prompts.example_rng(ctx.seed, f"{group.name}/{example_id}"))
        query_tokens = prompts.count_tokens(prompts.messages([], query, text, m.prompting), client.token_model)
        k = prompts.n_fitting(query_tokens, per_shot, client.spec.context_tokens, m.max_output_tokens)
        if k < 0:
            unfit.append((example_id, label))
            continue
        if k < len(shots):
            capped = k if capped is None else min(capped, k)
        requests.append(prompts.messages(shots[:k], query, text, m.prompting))
        meta.append((example_id, label, k))
    if capped is not None:
        logger.info(
            "%s: the context window (%d tokens) fits %d of %d in-context examples.",
            group.name,
            client.spec.context_tokens,
            capped,
            len(shots),
        )
    answers = client.answer_all(requests)
    outcomes = []
    for (example_id, label, k), answer in zip(meta, answers, strict=True):
        pred, parsed = prompts.parse_answer(answer.text, group.classnames)
        outcomes.append(Outcome(example_id, group.name, label, pred, parsed, k, answer))
    reason = f"the prompt with no examples is longer than the context window ({client.spec.context_tokens} tokens)"
    return outcomes + [Outcome(i, group.name, label, None, False, 0, Answer(None, error=reason)) for i, label in unfit]


@dataclasses.dataclass(frozen=True)
class Summary:
    """Outcomes as a task reports them."""

    scores: np.ndarray
    """1.0 for a correct answer, else 0.0 (failed requests count as wrong)."""
    info: list[dict]
    n_shots_max: int
    cost_usd: float | None
    n_failed: int
    parse_rate: float


def summary(outcomes: Sequence[Outcome], classnames: dict[str, Sequence[str]]) -> Summary:
    """Per-example scores and info, and the run's figures. Raises if every request failed (nothing to score)."""
    if outcomes and all(o.answer.error is not None for o in outcomes):
        raise BiobenchError(f"Every one of {len(outcomes)} requests failed; the first because {outcomes[0].answer.error}")
    info = []
    for o in outcomes:
        names = classnames[o.group]
        item = {
            "group": o.group,
            "label": o.label,
            "pred": o.pred,
            "gold_name": names[o.label],
            "pred_name": None if o.pred is None else names[o.pred],
            "parsed": o.parsed,
            "n_shots": o.n_shots,
            "answer": o.answer.text,
            "input_tokens": o.answer.input_tokens,
            "output_tokens": o.answer.output_tokens,
            "cost_usd": o.answer.cost_usd,
            "attempts": o.answer.attempts,
            "cached": o.answer.cached,
        }
        if o.answer.error is not None:
            item["error"] = o.answer.error
        info.append(item)
    costs = [o.answer.cost_usd for o in outcomes if o.answer.error is None]
    answered = [o for o in outcomes if o.answer.error is None]
    return Summary(
        scores=np.array([float(o.correct) for o in outcomes], dtype=np.float64),
        info=info,
        n_shots_max=max((o.n_shots for o in outcomes), default=0),
        cost_usd=None if any(c is None for c in costs) else float(sum(costs)),
        n_failed=len(outcomes) - len(answered),
        parse_rate=float(np.mean([o.parsed for o in answered])) if answered else 0.0,
    )
