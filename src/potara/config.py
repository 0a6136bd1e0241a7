"""One dataclass tree for a whole run; files (YAML/JSON) and ``--set key=value`` parse into it."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

OFFLINE_MINILM = "offline:minilm"
OFFLINE_VIT_DIGITS = "offline:vit-digits"
PARTITIONS = ("classes", "dirichlet", "task", "iid", "mixed")
MODEL_TASKS = ("auto", "text", "image", "causal_lm")
DTYPES = ("float32", "bfloat16", "float16")
PAYLOAD_DTYPES = ("fp32", "bf16", "fp16", "int8")


class ConfigError(ValueError):
    """A config value or key is wrong; the message says which and how to fix it."""


# Where each training default comes from (issue 19): "dev" = chosen on the dev suite by validation accuracy, with the
# file that shows it; "hand-set" = not swept, with the reason. Sweeping a shared key costs one federation per candidate
# and cell, so only the key that had been chosen on test (`lora.head_lr_scale`) was re-chosen on dev
# (`potara bench --suite dev-defaults`, rule in src/potara/bench/suites/dev-defaults.yaml).


@dataclass
class ModelConfig:
    name: str = OFFLINE_MINILM  # HF hub id, local path, "offline:minilm" (packaged MiniLM) or "offline:vit-digits"
    max_length: int = 32
    trust_remote_code: bool = False
    # "text" / "image" classification, "causal_lm" ((prompt, target) data, generative exact match), or "auto"
    # (text or image, from the model config's model_type)
    task: str = "auto"
    max_new_tokens: int = 16  # causal_lm: greedy decoding length for accuracy
    dtype: str = "float32"  # causal_lm: weights dtype of the frozen base model (LoRA adapters stay float32)
    device: str = "cpu"  # "cpu", "cuda", "cuda:<i>", or "auto" (cuda when available)


@dataclass
class LoraSettings:
    r: int = 8  # hand-set: the usual LoRA rank for BERT-size models (alpha / r = 2, PEFT's examples); not swept
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])
    modules_to_save: list[str] | None = None  # None: PEFT's default task head for sequence classification
    # the task head's lr ÷ the LoRA lr (a fresh head needs larger steps): dev, benchmarks/results/dev-defaults.md (30 over
    # 10 by +0.017 validation accuracy, 6 clusters: a coin toss; 100 falls back by 0.041; 10 had been chosen on test)
    head_lr_scale: float = 30.0


@dataclass
class DataConfig:
    source: str = "fortunes"  # "fortunes", "digits" (sklearn digits 5-9), "hf:<dataset id>", or a csv/json/parquet path
    split: str = "train"
    hf_config: str | None = None
    text_column: str | None = None
    label_column: str = "label"
    group_column: str | None = None
    max_per_task: int | None = None  # "suite:" sources: rows kept per task (shuffled), None: all
    suite_dir: str | None = None  # "suite:" sources: read <suite_dir>/<task>.jsonl (hub schema) instead of the hub
    num_clients: int = 6
    partition: str = "classes"  # or dirichlet, task, iid, mixed (half the clients IID, half Dirichlet(alpha))
    alpha: float = 0.5
    classes_per_client: int = 4
    train_sizes: list[int] | None = field(default_factory=lambda: [15, 120])
    test_size: int = 100  # per client, at most a third of its rows
    # hand-set: the usual 80/20 split of a client's non-test rows; not swept, since more validation helps the methods
    # that read it (Potara, fedit_ft_es, oracle_val) and costs every method training data
    val_fraction: float = 0.2
    min_val: int = 3
    # clients personalized and scored (drawn by the seed: every setting of a seed scores the same ones); the
    # federation trains on all of them. None: every client. For large federations, whose personalization dominates
    eval_clients: int | None = None


@dataclass
class FedConfig:
    # rounds, epochs, lr and batch sizes here and in LocalConfig: hand-set to fit the 2-core budget (rounds, epochs)
    # at a lr where FedIT's training loss falls every round on the default run; not swept on dev
    rounds: int = 6
    fraction: float = 1.0
    local_epochs: int = 1
    local_steps: int | None = None  # overrides local_epochs when set
    lr: float = 5e-3
    batch_size: int = 16
    aggregation: str = "factors"  # "factors" (FedIT) or "product" (exact FedAvg of B·A, re-factorized)
    eval_rounds: bool = True  # every federation's accuracy on every client's test split after each round
    eval_every: int = 0  # personalize every k rounds as well as at the end (0: only at the end)
    eval_methods: list[str] | None = None  # methods personalized at those rounds (None: every federated one)
    # wire dtype of the global adapter and the uploads: fp32, bf16 or fp16; int8: uploads only (per-row scales, error
    # feedback), the global adapter in fp32
    payload_dtype: str = "fp32"


@dataclass
class LocalConfig:
    init: str = "federated"  # "federated" (from the final federated adapter) or "pretrained"
    epochs: int = 2
    lr: float = 5e-3
    batch_size: int = 16


@dataclass
class PotaraSettings:
    estimator: str = "heldout"  # dev: the highest validation accuracy on the issue-19 dev suite and the cheapest (dev-choices.md)
    fisher: str = "auto"  # "exact", "kfac", or "auto" (exact when d_out*d_in is small)
    fisher_samples: int = 1  # labels drawn from the model per example (model Fisher)
    fisher_max_examples: int = 64
    # δ of the `fisher` estimator's Laplace traces f/(n·f + δ): > 0
    damping: float = 1e-8
    grid: list[float] = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(11)])
    # "delta": the exact merge λ τ_F + (1−λ) τ_L (rank 2r); "factors": A and B averaged separately (the paper's practice)
    merge_space: str = "delta"
    # estimator "paper" (the paper's practice as read; docs/method.md). Its options stay as read so that `paper` is the
    # paper's estimator, but for the cross term's form, which the paper leaves open and dev chose (below); dev preferred
    # δ 1e-2 and fed_is_b (benchmarks/results/lambda-study-dev.md), variants name them:
    paper_samples: int = 30  # seeded training examples its two Fisher passes and two gradients use
    paper_space: str = "factors"  # Fisher and gradients of the LoRA factors and head ("factors") or in ΔW space ("delta")
    paper_fisher: str = "model"  # "model" (labels drawn from the model) or "empirical" (true labels)
    paper_damping: float = 1e-4  # δ in Σ 1/(F_j + δ): a prior precision, caps an unseen direction's variance at 1/δ
    paper_traces: str = "pooled"  # "pooled" (one λ) or "module" (one λ per module, traces and cosine per module)
    # the cross trace c from cos = cos(g_F, g_L): "cosine" clip(cos, 0, 1)·min(a, b); "signed" clip(cos, −1, 1)·min(a, b);
    # "geometric" clip(cos, 0, 1)·√(ab); "none" 0 (merge/mixing.py CROSS_TERMS); chosen on dev by validation
    # (benchmarks/results/dev-mechanisms-choices.md: signed +0.015 over the others, which tie)
    paper_cross: str = "signed"
    paper_assign: str = "fed_is_a"  # "fed_is_a": a = the federated model's trace, λ_F = (b − c)/(a + b − 2c); "fed_is_b"
    # opt-in mechanisms (issue 21; docs/mechanisms.md), off by default until dev chooses them:
    prior_correction: str = "none"  # "counts": any method's logits + log π_client (train counts) − log π_global (uniform)
    granularity: str = "one"  # heldout: "head_lora" fits a λ for the head, then one for the LoRA modules at it
    safety: str = "none"  # "val_loss": the parent with the lower validation loss when validation cannot tell them apart
    safety_min_val: int = 10  # the safety rule's "cannot tell": fewer validation examples than this (or no curvature)
    # estimator "spread": v_F = s²/m ("mean": the noise of the average of the last round's m updates) or s² ("client":
    # one client's deviation from it); hand-set to "mean", not chosen on dev
    spread_scale: str = "mean"


@dataclass
class PeersConfig:
    """Settings of the personalized-FL peers (docs/peers.md)."""

    # dev: ditto_mu, apfl_alpha_lr, feddpa_weight_cap, the FFA-/FedSA-LoRA lr scales and the three peers' lr scales,
    # chosen on the issue-19 dev suite by validation accuracy (both dev settings, 3 seeds, >= 5 candidates each, the
    # grids' edges extended where a choice fell on one; benchmarks/results/dev-choices.md). 6 clusters: every margin is
    # "too few clusters" for a verdict, so these are the best guesses dev gives, not resolved choices.
    ditto_mu: float = 0.1  # Ditto's proximal weight μ/2 ‖v − w_F‖² (ditto_posthoc's dev choice, 0.01, is a variant's)
    apfl_alpha_lr: float = 0.01  # AdamW lr of APFL's mixing logit s (α = sigmoid(s), from α = ½)
    feddpa_levels: int = 21  # hand-set: α(x) is evaluated on this many levels of [0, 1] (a discretization, not a knob)
    ffa_lora_lr_scale: float = 0.5  # FFA-LoRA's client lr ÷ fed.lr
    fedsa_lora_lr_scale: float = 0.25  # FedSA-LoRA's client lr ÷ fed.lr
    # FedDPA's α(x) = min(1, cap × similarity) (its authors' code: w, 0.5 or 1); cap > 1: α saturates at 1 for more inputs
    feddpa_weight_cap: float = 2.0
    ditto_lr_scale: float = 1.0  # Ditto's lr ÷ fed.lr in its rounds (÷ local.lr for ditto_posthoc)
    apfl_lr_scale: float = 1.0  # APFL's lr ÷ fed.lr in its rounds (÷ local.lr for apfl_posthoc); α's lr: apfl_alpha_lr
    feddpa_lr_scale: float = 1.0  # FedDPA's local-adapter lr ÷ local.lr
    # hand-set: the midpoint, the federated weight of `fixed` for every client; the dev-tuned one (0.1,
    # benchmarks/results/dev-choices.md) is set in the report suite, beside the midpoint
    fixed_lambda: float = 0.5
    fedit_ft_es_max_epochs_factor: int = 2  # hand-set: fedit_ft_es fine-tunes for up to local.epochs × this, early-stopped


@dataclass
class ValidationConfig:
    """Checks on every client update before aggregation (see potara.federation.validation)."""

    dtypes: list[str] = field(default_factory=lambda: ["fp32"])  # wire dtypes an update may use
    max_norm: float | None = None  # absolute bound on an update's L2 norm (None: off)
    max_norm_ratio: float | None = 10.0  # bound relative to the median L2 norm of the round's uploads (None: off)
    max_payload_bytes: int | None = None  # None: twice the size of the global adapter's payload
    min_updates: int = 1  # fewer valid updates in a round: keep the previous global adapter


@dataclass
class PrivacyConfig:
    """Client-level DP on the federated adapter (DP-FedAvg; potara.federation.privacy). Off by default."""

    noise_multiplier: float = 0.0  # z: Gaussian noise of std z·C/m on the mean of m clipped updates; 0 = off
    clip_norm: float = 1.0  # C: each client's update clipped to this L2 norm (adaptive: the initial norm)
    adaptive: bool = False  # Andrew et al. 2021 adaptive clipping, as Flower's ...ServerSideAdaptiveClipping
    target_quantile: float = 0.5  # adaptive: γ, the fraction of updates within C that C tracks (Andrew et al.)
    clip_lr: float = 0.2  # adaptive: C ← C·exp(−clip_lr·(clipped fraction − target_quantile)) (Andrew et al.)
    delta: float | None = None  # δ of the reported (ε, δ); None: min(1e-5, 1 / data.num_clients²)


@dataclass
class RunConfig:
    seed: int = 0
    # the default run: one seed of the report suite's `classes` federation (100 test examples a client, not 300),
    # Potara, its two parents, FedIT + FT and the strongest peer on dev (Ditto), in about 4 minutes on 2 cores
    methods: list[str] = field(default_factory=lambda: ["potara", "local", "fedit", "fedit_ft", "ditto"])
    threads: int | None = None
    eval_batch_size: int = 64
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataConfig = field(default_factory=DataConfig)
    fed: FedConfig = field(default_factory=FedConfig)
    local: LocalConfig = field(default_factory=LocalConfig)
    potara: PotaraSettings = field(default_factory=PotaraSettings)
    peers: PeersConfig = field(default_factory=PeersConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)

    def to_dict(self) -> dict[str, Any]:
        """Every setting; the ``privacy`` section only when it is not all defaults (DP off), so that the stored
        configs of runs from before it existed (bench cells, checkpoints) still equal a default run's."""
        values = dataclasses.asdict(self)
        if self.privacy == PrivacyConfig():
            del values["privacy"]
        return values


def shown(value: Any) -> str:
    """``value`` as an error message shows it: its repr, on one line and cut short."""
    return reprlib.repr(value)


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from a dict, rejecting unknown keys with their full path."""
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{prefix or 'root'}' must be a mapping, got {shown(values)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted((k for k in values if k not in fields), key=str)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown config key {shown(f'{where}{unknown[0]}')}; valid keys here: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    kinds = typing.get_type_hints(cls)
    for name, value in values.items():
        sub = _dataclass_type(fields[name])
        path = f"{prefix}.{name}".strip(".")
        kwargs[name] = _build(sub, value, path) if sub else _coerce(value, kinds[name], path)
    return cls(**kwargs)


TYPE_NAMES = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false"}


def _coerce(value: Any, kind: Any, path: str) -> Any:
    """``value`` as the field's declared type ``kind``: numbers written as YAML 1.1 strings (``5e-3``) become
    floats, a lone string where a list goes a one-item list; any other mismatch is an error."""
    union = typing.get_origin(kind) in (typing.Union, types.UnionType)
    options = typing.get_args(kind) if union else (kind,)
    if value is None and type(None) in options:
        return None
    kind = next(k for k in options if k is not type(None))
    if typing.get_origin(kind) is list:
        items = [value] if isinstance(value, str) else value  # `--set methods=potara` means the one-item list
        if not isinstance(items, list):
            raise ConfigError(f"{path} must be a list, got {shown(value)}")
        return [_scalar(item, typing.get_args(kind)[0], f"{path}[{i}]") for i, item in enumerate(items)]
    return _scalar(value, kind, path)


def _scalar(value: Any, kind: type, path: str) -> Any:
    if kind is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        number = _float(value)
        if math.isfinite(number):
            return number
    elif isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    raise ConfigError(f"{path} must be {TYPE_NAMES[kind]}, got {shown(value)}")


def _float(value: int | float | str) -> float:
    try:
        return float(value)
    except (ValueError, OverflowError):  # a word, or an integer beyond float range
        return math.nan


def _dataclass_type(f: dataclasses.Field) -> type | None:
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
    return type(default) if dataclasses.is_dataclass(default) else None


def from_dict(values: dict[str, Any]) -> RunConfig:
    cfg = _build(RunConfig, values, "")
    validate(cfg)
    return cfg


def load(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML/JSON config file (or the defaults) and apply ``key=value`` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file '{path}' does not exist")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ConfigError(f"config file '{path}' is not valid YAML/JSON: {one_line(err)}") from err
    for item in overrides:
        apply_override(values, item)
    return from_dict(values)


def apply_override(values: dict[str, Any], item: str) -> None:
    """Apply one ``--set key=value`` to a nested config dict."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    try:
        value = _parse_value(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: value {shown(raw)} is not valid YAML ({one_line(err)}); quote it") from err
    set_key(values, key, value)


def one_line(err: Exception) -> str:
    """An error's message with its line breaks (YAML's pointers to the bad column) folded into one line."""
    return " ".join(str(err).split())


def set_key(values: dict[str, Any], key: str, value: Any) -> None:
    """Set the dotted ``key`` (``fed.rounds``) in a nested config dict."""
    parts = key.strip().split(".")
    node = values
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part!r} is not a section")
    node[parts[-1]] = value


def _parse_value(raw: str) -> Any:
    if "," in raw and not raw.strip().startswith(("[", "{")):
        return [yaml.safe_load(x) for x in raw.split(",") if x]
    return yaml.safe_load(raw)


def validate(cfg: RunConfig) -> None:
    """Check values that a type alone does not constrain."""
    _check(cfg.data.partition in PARTITIONS, f"data.partition must be one of {PARTITIONS}, got {cfg.data.partition!r}")
    _check(0 < cfg.fed.fraction <= 1, f"fed.fraction must be in (0, 1], got {cfg.fed.fraction}")
    _check(cfg.fed.aggregation in ("factors", "product"), "fed.aggregation must be 'factors' or 'product'")
    _check(
        cfg.fed.payload_dtype in PAYLOAD_DTYPES,
        f"fed.payload_dtype must be one of {', '.join(PAYLOAD_DTYPES)}, got {cfg.fed.payload_dtype!r}",
    )
    _check(cfg.local.init in ("federated", "pretrained"), "local.init must be 'federated' or 'pretrained'")
    _check(cfg.potara.fisher in ("exact", "kfac", "auto"), "potara.fisher must be 'exact', 'kfac' or 'auto'")
    _check_paper(cfg.potara)
    _check_task(cfg)
    _check(bool(cfg.methods), "methods must be a non-empty list")
    _check(bool(cfg.potara.grid) and all(0.0 <= x <= 1.0 for x in cfg.potara.grid), "potara.grid must be a non-empty list of values in [0, 1]")
    _check(cfg.peers.ditto_mu >= 0, f"peers.ditto_mu must be >= 0, got {cfg.peers.ditto_mu}")
    _check(
        0 < cfg.peers.feddpa_weight_cap < math.inf,
        f"peers.feddpa_weight_cap must be a finite number > 0 (above 1, α(x) reaches 1 for more inputs), "
        f"got {cfg.peers.feddpa_weight_cap}",
    )
    _check(0.0 <= cfg.peers.fixed_lambda <= 1.0, f"peers.fixed_lambda must be in [0, 1], got {cfg.peers.fixed_lambda}")
    _check(
        bool(cfg.validation.dtypes) and all(d in PAYLOAD_DTYPES for d in cfg.validation.dtypes),
        f"validation.dtypes must be a non-empty list of {', '.join(PAYLOAD_DTYPES)}",
    )
    _check_ranges(cfg)
    _check(cfg.seed < 2**32, f"seed must be < 2**32 (numpy's and torch's seeds), got {cfg.seed}")
    _check_privacy(cfg)
    _check(cfg.data.eval_clients is None or cfg.data.eval_clients <= cfg.data.num_clients,
           f"data.eval_clients ({cfg.data.eval_clients}) must be at most data.num_clients ({cfg.data.num_clients}), "
           "or null for every client")


# Numeric settings and their least value (``AT_LEAST``), those that must be > 0 (``POSITIVE``) and the
# fractions that must lie in [0, 1) (``BELOW_ONE``); an optional one may also be null (unset).
AT_LEAST = {
    "eval_batch_size": 1, "threads": 1, "model.max_length": 1, "model.max_new_tokens": 1, "lora.r": 1,
    "data.num_clients": 1, "data.classes_per_client": 1, "data.test_size": 1, "data.min_val": 1,
    "data.max_per_task": 1, "data.eval_clients": 1,
    "fed.rounds": 1, "fed.local_epochs": 1, "fed.local_steps": 1, "fed.batch_size": 1, "fed.eval_every": 0,
    "local.epochs": 1, "local.batch_size": 1, "potara.fisher_samples": 1, "potara.fisher_max_examples": 1,
    "peers.ditto_mu": 0, "seed": 0, "peers.feddpa_levels": 2, "validation.min_updates": 1,
    "peers.fedit_ft_es_max_epochs_factor": 1, "potara.safety_min_val": 1,
    "validation.max_payload_bytes": 1,
}
POSITIVE = (
    "potara.damping", "lora.alpha", "lora.head_lr_scale", "data.alpha", "fed.lr", "local.lr", "peers.apfl_alpha_lr",
    "peers.ffa_lora_lr_scale", "peers.fedsa_lora_lr_scale", "peers.ditto_lr_scale", "peers.apfl_lr_scale",
    "peers.feddpa_lr_scale", "validation.max_norm", "validation.max_norm_ratio",
)
BELOW_ONE = ("lora.dropout", "data.val_fraction")


def _check_ranges(cfg: RunConfig) -> None:
    for key, least in AT_LEAST.items():
        value = setting(cfg, key)
        _check(value is None or value >= least, f"{key} must be >= {least}, got {value}")
    for key in POSITIVE:
        value = setting(cfg, key)
        _check(value is None or value > 0, f"{key} must be > 0, got {value}")
    for key in BELOW_ONE:
        value = setting(cfg, key)
        _check(0 <= value < 1, f"{key} must be in [0, 1), got {value}")
    sizes = cfg.data.train_sizes
    _check(
        sizes is None or (len(sizes) == 2 and 1 <= sizes[0] <= sizes[1]),
        f"data.train_sizes must be [lo, hi] with 1 <= lo <= hi, or null, got {sizes}",
    )


def setting(cfg: RunConfig, key: str) -> Any:
    """The value of the dotted ``key`` (``fed.lr``) in ``cfg``."""
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


PAPER_CHOICES = {
    "merge_space": ("delta", "factors"), "paper_space": ("factors", "delta"), "paper_fisher": ("model", "empirical"),
    "paper_traces": ("pooled", "module"), "paper_cross": ("cosine", "signed", "geometric", "none"), "paper_assign": ("fed_is_a", "fed_is_b"),
    "prior_correction": ("none", "counts"), "granularity": ("one", "head_lora"), "safety": ("none", "val_loss"),
    "spread_scale": ("mean", "client"),
}


def _check_paper(p: PotaraSettings) -> None:
    """The merge space, the ``paper`` estimator's settings and the opt-in mechanisms."""
    for key, choices in PAPER_CHOICES.items():
        value = getattr(p, key)
        _check(value in choices, f"potara.{key} must be one of {', '.join(choices)}, got {value!r}")
    _check(p.paper_samples >= 1, f"potara.paper_samples must be >= 1, got {p.paper_samples}")
    _check(p.paper_damping > 0, f"potara.paper_damping must be > 0, got {p.paper_damping}")


CLASSIFIER_ONLY = ("oracle_split", "feddpa")  # methods that score per-instance logits of a classifier head


def _check_task(cfg: RunConfig) -> None:
    """``model.task`` and the data source must agree: suites are causal-LM data, and causal LMs need a suite."""
    m, d = cfg.model, cfg.data
    _check(m.task in MODEL_TASKS, f"model.task must be one of {MODEL_TASKS}, got {m.task!r}")
    _check(m.dtype in DTYPES, f"model.dtype must be one of {DTYPES}, got {m.dtype!r}")
    _check(
        re.fullmatch(r"cpu|auto|cuda(:\d+)?", m.device) is not None,
        f"model.device must be 'cpu', 'cuda', 'cuda:<index>' or 'auto', got {m.device!r}",
    )
    suite = d.source.startswith("suite:")
    _check(
        suite == (m.task == "causal_lm"),
        f"data.source {d.source!r} needs model.task={'causal_lm' if suite else 'text or image'}: "
        "'suite:<name>' sources hold (prompt, target) pairs for causal LMs, other sources hold labelled examples",
    )
    if m.task == "causal_lm":
        _check(
            d.partition in ("task", "iid"),
            f"data.partition {d.partition!r} splits by label; causal-LM data has none: use 'task' (one task per client) "
            "or 'iid'",
        )
    if suite:
        needs_head = [name for name in cfg.methods
                      if name.split("@")[0] in CLASSIFIER_ONLY or "potara.prior_correction=counts" in name]
        _check(
            not needs_head,
            f"method {needs_head[0] if needs_head else ''} scores a classifier's logits; causal-LM data (data.source "
            f"{d.source!r}) has none: drop it from methods (oracle_test is the bound there)",
        )
        _check(
            cfg.potara.prior_correction == "none",
            "potara.prior_correction=counts shifts a classifier head's logits; causal-LM data has none: set it to none",
        )


def _check_privacy(cfg: RunConfig) -> None:
    """The DP settings: each bad value is a one-line error naming its key."""
    p = cfg.privacy
    _check(p.noise_multiplier >= 0, f"privacy.noise_multiplier must be >= 0 (0 turns DP off), got {p.noise_multiplier}")
    _check(p.delta is None or 0 < p.delta < 1,
           f"privacy.delta must be in (0, 1) or null (min(1e-5, 1/num_clients²)), got {p.delta}")
    _check(p.clip_norm > 0, f"privacy.clip_norm must be > 0 (each update's L2 bound), got {p.clip_norm}")
    if p.noise_multiplier == 0:
        return
    _check(0 <= p.target_quantile <= 1, f"privacy.target_quantile must be in [0, 1], got {p.target_quantile}")
    _check(p.clip_lr > 0, f"privacy.clip_lr must be > 0, got {p.clip_lr}")
    _check(
        cfg.fed.aggregation == "factors",
        "privacy.noise_multiplier > 0 needs fed.aggregation=factors (clipping bounds the travelling tensors, "
        "not the re-factorized product average)",
    )
    sampled = sampled_clients(cfg)
    _check(
        not p.adaptive or p.noise_multiplier < sampled / 10,
        f"privacy.noise_multiplier={p.noise_multiplier} is too large for privacy.adaptive with {sampled} sampled "
        f"clients: the clipped-count noise (std m/20) needs noise_multiplier < m/10 = {sampled / 10:g}; sample more "
        "clients or turn privacy.adaptive off",
    )
    _check(importlib.util.find_spec("dp_accounting") is not None,
           "privacy.noise_multiplier > 0 needs the privacy accountant for the run's ε: pip install 'potara[privacy]' "
           "(dp-accounting)")


def sampled_clients(cfg: RunConfig) -> int:
    """The number of clients a round samples (as potara.federation.rounds.sample_clients draws them)."""
    return max(1, round(cfg.fed.fraction * cfg.data.num_clients))


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def dumps(cfg: RunConfig) -> str:
    return json.dumps(cfg.to_dict(), indent=2)
