"""Instruction-style (prompt, target) pairs for causal-LM tasks, and the suites that bundle them.

One small formatter per task turns a row of the task's hub dataset (its real schema) into a prompt
ending in ``Answer:`` and a short target. Multiple-choice tasks list lettered options and answer
with the letter, so exact match is accuracy; label tasks answer with a label word; SQuAD answers
with the span. Long passages come first and the question last, so left truncation (see
:mod:`potara.training.causal_lm`) cuts passage text, never the question or the options.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets

LETTERS = "ABCDEFGHIJ"
SUITE_PREFIX = "suite:"

Row = dict
Formatter = Callable[[Row], tuple[str, str]]


def multiple_choice(question: str, options: Sequence[str], answer: int) -> tuple[str, str]:
    """``question``, then lettered options; the target is the letter of option ``answer`` (0-based)."""
    if not 0 <= answer < len(options):
        raise ValueError(f"answer index {answer} is outside the {len(options)} options")
    lines = "\n".join(f"{LETTERS[i]}. {option.strip()}" for i, option in enumerate(options))
    return f"{question.strip()}\n\nOptions:\n{lines}\nAnswer:", LETTERS[answer]


def labelled(question: str, labels: Sequence[str], answer: int) -> tuple[str, str]:
    """``question`` with the allowed answers spelled out; the target is the answer's label word."""
    if not 0 <= answer < len(labels):
        raise ValueError(f"label {answer} is outside {list(labels)} (unlabelled test rows cannot be used)")
    return f"{question.strip()}\nOptions: {', '.join(labels)}\nAnswer:", labels[answer]


def format_arc(row: Row) -> tuple[str, str]:
    """allenai/ai2_arc: ``question``, ``choices`` {text, label}, ``answerKey`` (a letter or a digit)."""
    choices = row["choices"]
    return multiple_choice(f"Question: {row['question']}", choices["text"], choices["label"].index(row["answerKey"]))


def format_openbookqa(row: Row) -> tuple[str, str]:
    """allenai/openbookqa (main): ``question_stem``, ``choices`` {text, label}, ``answerKey``."""
    choices = row["choices"]
    return multiple_choice(
        f"Question: {row['question_stem']}", choices["text"], choices["label"].index(row["answerKey"])
    )


def format_cosmos_qa(row: Row) -> tuple[str, str]:
    """allenai/cosmos_qa: ``context``, ``question``, ``answer0..3``, ``label`` (0-3)."""
    options = [row[f"answer{i}"] for i in range(4)]
    return multiple_choice(f"{row['context']}\n\nQuestion: {row['question']}", options, int(row["label"]))


def format_definite_pronoun_resolution(row: Row) -> tuple[str, str]:
    """definite_pronoun_resolution: ``sentence``, ``pronoun``, ``candidates`` (2), ``label`` (0/1)."""
    question = f"{row['sentence']}\n\nWho or what does the pronoun \"{row['pronoun']}\" refer to?"
    return multiple_choice(question, row["candidates"], int(row["label"]))


def format_glue_qqp(row: Row) -> tuple[str, str]:
    """nyu-mll/glue (qqp): ``question1``, ``question2``, ``label`` (0 not duplicate, 1 duplicate)."""
    question = (
        f"Question 1: {row['question1']}\nQuestion 2: {row['question2']}\n\n"
        "Do these two questions ask the same thing?"
    )
    return labelled(question, ["no", "yes"], int(row["label"]))


def format_hellaswag(row: Row) -> tuple[str, str]:
    """Rowan/hellaswag: ``activity_label``, ``ctx``, ``endings`` (4), ``label`` (a string "0".."3")."""
    if str(row["label"]).strip() == "":
        raise ValueError("hellaswag row has no label (the test split is unlabelled)")
    question = f"{row['activity_label']}: {row['ctx']}\n\nWhat is the most likely continuation?"
    return multiple_choice(question, row["endings"], int(row["label"]))


def format_mnli(row: Row) -> tuple[str, str]:
    """nyu-mll/glue (mnli): ``premise``, ``hypothesis``, ``label`` (0 entailment, 1 neutral, 2 contradiction)."""
    question = f"Premise: {row['premise']}\nHypothesis: {row['hypothesis']}\n\nDoes the premise entail the hypothesis?"
    return labelled(question, ["yes", "maybe", "no"], int(row["label"]))


def format_squad_v1(row: Row) -> tuple[str, str]:
    """rajpurkar/squad: ``context``, ``question``, ``answers`` {text, answer_start}; the first answer is the target."""
    answers = row["answers"]["text"]
    if not answers:
        raise ValueError(f"squad row {row.get('id', '?')} has no answer")
    return f"{row['context']}\n\nQuestion: {row['question']}\nAnswer:", answers[0]


def format_sst2(row: Row) -> tuple[str, str]:
    """stanfordnlp/sst2: ``sentence``, ``label`` (0 negative, 1 positive)."""
    return labelled(f"Review: {row['sentence']}\n\nIs this review positive or negative?", ["negative", "positive"],
                    int(row["label"]))


def format_boolq(row: Row) -> tuple[str, str]:
    """google/boolq: ``question`` (no "?"), ``answer`` (bool), ``passage``."""
    question = f"{row['passage']}\n\nQuestion: {row['question'].strip().rstrip('?')}?"
    return labelled(question, ["no", "yes"], int(bool(row["answer"])))


def format_piqa(row: Row) -> tuple[str, str]:
    """ybisk/piqa: ``goal``, ``sol1``, ``sol2``, ``label`` (0/1)."""
    return multiple_choice(f"Goal: {row['goal']}\n\nWhich solution is better?", [row["sol1"], row["sol2"]],
                           int(row["label"]))


def format_siqa(row: Row) -> tuple[str, str]:
    """allenai/social_i_qa: ``context``, ``question``, ``answerA..C``, ``label`` (a string "1".."3")."""
    options = [row["answerA"], row["answerB"], row["answerC"]]
    return multiple_choice(f"{row['context']}\n\nQuestion: {row['question']}", options, int(row["label"]) - 1)


def format_winogrande(row: Row) -> tuple[str, str]:
    """allenai/winogrande: ``sentence`` with a blank ``_``, ``option1``, ``option2``, ``answer`` ("1"/"2")."""
    question = f"{row['sentence']}\n\nWhich option fills the blank (_)?"
    return multiple_choice(question, [row["option1"], row["option2"]], int(row["answer"]) - 1)


@dataclass(frozen=True)
class TaskSpec:
    """Where a task lives on the hub and how its rows become (prompt, target)."""

    path: str
    config: str | None
    split: str
    format: Formatter
    revision: str | None = None  # e.g. the parquet branch of a dataset that still ships a loading script


PARQUET_BRANCH = "refs/convert/parquet"

TASKS: dict[str, TaskSpec] = {
    "arc_challenge": TaskSpec("allenai/ai2_arc", "ARC-Challenge", "train", format_arc),
    "arc_easy": TaskSpec("allenai/ai2_arc", "ARC-Easy", "train", format_arc),
    "cosmos_qa": TaskSpec("allenai/cosmos_qa", None, "train", format_cosmos_qa),
    "definite_pronoun_resolution": TaskSpec(
        "community-datasets/definite_pronoun_resolution", "plain_text", "train", format_definite_pronoun_resolution
    ),
    "glue_qqp": TaskSpec("nyu-mll/glue", "qqp", "train", format_glue_qqp),
    "hellaswag": TaskSpec("Rowan/hellaswag", None, "train", format_hellaswag),
    "mnli": TaskSpec("nyu-mll/glue", "mnli", "train", format_mnli),
    "squad_v1": TaskSpec("rajpurkar/squad", None, "train", format_squad_v1),
    "sst2": TaskSpec("stanfordnlp/sst2", None, "train", format_sst2),
    "boolq": TaskSpec("google/boolq", None, "train", format_boolq),
    "piqa": TaskSpec("ybisk/piqa", None, "train", format_piqa, revision=PARQUET_BRANCH),
    "siqa": TaskSpec("allenai/social_i_qa", None, "train", format_siqa, revision=PARQUET_BRANCH),
    "winogrande": TaskSpec("allenai/winogrande", "winogrande_xl", "train", format_winogrande),
    "openbookqa": TaskSpec("allenai/openbookqa", "main", "train", format_openbookqa),
}

SUITES: dict[str, list[str]] = {
    "flan8": [
        "arc_challenge", "cosmos_qa", "definite_pronoun_resolution", "glue_qqp", "hellaswag", "mnli", "squad_v1", "sst2",
    ],
    "commonsense": ["boolq", "piqa", "siqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa"],
}

LoadFn = Callable[[str, TaskSpec], datasets.Dataset]


def suite_tasks(source: str) -> list[str]:
    """Task names of ``suite:<suite>`` or ``suite:<task>+<task>+…``."""
    if not source.startswith(SUITE_PREFIX):
        raise ValueError(f"a suite source starts with '{SUITE_PREFIX}', got '{source}'")
    name = source[len(SUITE_PREFIX):]
    names = SUITES.get(name) or [t for t in name.split("+") if t]
    unknown = [t for t in names if t not in TASKS]
    if unknown or not names:
        raise ValueError(
            f"'{source}': unknown task '{unknown[0] if unknown else name}'; use suite:<suite> "
            f"({', '.join(SUITES)}) or suite:<task>+<task> with tasks from: {', '.join(TASKS)}"
        )
    return names


def hub_loader(name: str, spec: TaskSpec) -> datasets.Dataset:
    """The task's split from the Hugging Face hub (needs network access or a populated cache)."""
    return datasets.load_dataset(spec.path, spec.config, split=spec.split, revision=spec.revision)


def local_loader(directory: str | Path) -> LoadFn:
    """Read ``<directory>/<task>.jsonl`` (rows in the hub schema) instead of the hub: mirrors and offline tests."""
    directory = Path(directory)

    def load(name: str, spec: TaskSpec) -> datasets.Dataset:
        path = directory / f"{name}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"task '{name}': no file {path} (data.suite_dir holds one <task>.jsonl per task)")
        return datasets.load_dataset("json", data_files=str(path), split="train")

    return load


def load_suite(
    tasks: Sequence[str], *, max_per_task: int | None = None, seed: int = 0, load_fn: LoadFn = hub_loader
) -> datasets.Dataset:
    """One dataset with columns ``prompt``, ``target``, ``task``: up to ``max_per_task`` shuffled rows per task."""
    columns: dict[str, list[str]] = {"prompt": [], "target": [], "task": []}
    for name in tasks:
        rows = load_fn(name, TASKS[name])
        if max_per_task is not None and rows.num_rows > max_per_task:
            rows = rows.shuffle(seed=seed).select(range(max_per_task))
        for row in rows:
            try:
                prompt, target = TASKS[name].format(row)
            except (KeyError, ValueError) as err:
                raise ValueError(f"task '{name}': cannot format row {row!r:.200}: {err!r}") from err
            columns["prompt"].append(prompt)
            columns["target"].append(target)
            columns["task"].append(name)
    return datasets.Dataset.from_dict(columns)
