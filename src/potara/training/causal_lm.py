"""Causal-LM tasks: (prompt, target) pairs as teacher-forced tensors, and generative evaluation.

Encoding is ``prompt + " " + target + eos``; ``labels`` are -100 on the prompt and on padding, so
``model(**batch).loss`` is the mean NLL of the target tokens. Prompts are truncated from the left
to fit ``max_length``. Evaluation reports that loss (the held-out estimators fit λ on it) and the
accuracy of greedy generation: normalised exact match (SQuAD EM) against the target.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

import datasets
import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from ..data.encoding import Encoded
from .loop import Evaluation

IGNORE_INDEX = -100
TARGET_PREFIX = " "
ARTICLES = re.compile(r"\b(a|an|the)\b")


@dataclass
class PromptTargets(Encoded):
    """Right-padded ``input_ids``/``attention_mask``/``labels`` of (prompt, target) pairs, with their tokenizer."""

    tokenizer: PreTrainedTokenizerBase | None = None

    def prompt_lengths(self) -> Tensor:
        """Tokens before the first target token, per example."""
        return (self.tensors["labels"] != IGNORE_INDEX).int().argmax(1)


def special_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """``(eos, pad)``; pad falls back to eos, and a tokenizer without eos is an error."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(
            f"tokenizer {tokenizer.name_or_path!r} has no eos token; causal-LM targets end with one "
            "(set tokenizer.eos_token and save the tokenizer again)"
        )
    return eos, eos if tokenizer.pad_token_id is None else tokenizer.pad_token_id


def encode_prompt_target(tokenizer: PreTrainedTokenizerBase, split: datasets.Dataset, max_length: int) -> PromptTargets:
    """Tensors for teacher forcing; prompts lose tokens from the left, targets (+eos) keep at most ``max_length - 1``."""
    eos, pad = special_ids(tokenizer)
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    prompts = _token_ids(tokenizer, list(split["prompt"]))
    targets = _token_ids(tokenizer, [TARGET_PREFIX + t for t in split["target"]])
    rows = []
    for prompt, target in zip(prompts, targets):
        target = (target + [eos])[: max_length - 1]
        room = max_length - len(target) - len(bos)
        prompt = bos + (prompt[-room:] if room > 0 else [])
        rows.append((prompt, target))
    width = max((len(p) + len(t) for p, t in rows), default=1)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (prompt, target) in enumerate(rows):
        n = len(prompt) + len(target)
        ids[i, :n] = torch.tensor(prompt + target)
        labels[i, len(prompt) : n] = torch.tensor(target)
        mask[i, :n] = 1
    tensors = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    return PromptTargets(tensors, mask.sum(1).clamp(min=1), tokenizer=tokenizer)


def _token_ids(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def normalize_answer(text: str) -> str:
    """SQuAD EM normalisation: lower-case, no punctuation, no articles, single spaces.

    An answer that is nothing but an article keeps it, so the option letter "A" stays "a".
    """
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    without_articles = ARTICLES.sub(" ", text)
    return " ".join((without_articles if without_articles.strip() else text).split())


def exact_match(prediction: str, target: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(target)


@torch.inference_mode()
def teacher_forced_loss(model: nn.Module, data: PromptTargets, batch_size: int) -> float:
    """Mean NLL per target token over the whole split."""
    model.eval()
    total, tokens = 0.0, 0
    order = torch.argsort(data.lengths, stable=True)
    for batch in data.subset(order).batches(batch_size):
        n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        total += float(model(**batch).loss.float()) * n
        tokens += n
    return total / tokens if tokens else float("nan")


@torch.inference_mode()
def generate_answers(model: nn.Module, data: PromptTargets, batch_size: int, max_new_tokens: int) -> list[str]:
    """Greedy continuation of every prompt (left-padded batches), cut at eos and decoded, in order."""
    model.eval()
    eos, pad = special_ids(data.tokenizer)
    lengths = data.prompt_lengths().cpu()
    device = data.tensors["input_ids"].device
    order = torch.argsort(lengths, stable=True).tolist()
    answers: list[str] = [""] * len(data)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = int(lengths[idx].max())
        ids = torch.full((len(idx), width), pad, dtype=torch.long, device=device)
        mask = torch.zeros((len(idx), width), dtype=torch.long, device=device)
        for row, i in enumerate(idx):
            n = int(lengths[i])
            ids[row, width - n :] = data.tensors["input_ids"][i, :n]
            mask[row, width - n :] = 1
        out = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
            do_sample=False, pad_token_id=pad, eos_token_id=eos,
        )
        for row, i in enumerate(idx):
            new = out[row, width:].tolist()
            answers[i] = data.tokenizer.decode(new[: new.index(eos)] if eos in new else new, skip_special_tokens=True)
    return answers


def targets_of(data: PromptTargets) -> list[str]:
    """The target texts as the tokenizer gives them back (eos and padding dropped)."""
    eos, _ = special_ids(data.tokenizer)
    labels = data.tensors["labels"]
    return [
        data.tokenizer.decode([t for t in row.tolist() if t not in (IGNORE_INDEX, eos)], skip_special_tokens=True)
        for row in labels
    ]


def generative_accuracy(model: nn.Module, data: PromptTargets, batch_size: int, max_new_tokens: int) -> float:
    predictions = generate_answers(model, data, batch_size, max_new_tokens)
    hits = [exact_match(p, t) for p, t in zip(predictions, targets_of(data))]
    return sum(hits) / len(hits)


def evaluate_generative(
    model: nn.Module, data: PromptTargets, batch_size: int, max_new_tokens: int, accuracy: bool = True
) -> Evaluation:
    """Teacher-forced target loss and (unless ``accuracy=False``, then NaN) greedy exact-match accuracy."""
    if len(data) == 0:
        return Evaluation(float("nan"), float("nan"), 0)
    loss = teacher_forced_loss(model, data, batch_size)
    acc = generative_accuracy(model, data, batch_size, max_new_tokens) if accuracy else float("nan")
    return Evaluation(loss, acc, len(data))
