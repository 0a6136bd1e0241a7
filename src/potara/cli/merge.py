"""``potara merge``: choose λ for two saved PEFT adapters on one client's held-out data, write the merge."""

from __future__ import annotations

import json
from pathlib import Path

from datasets import ClassLabel
from safetensors.torch import load_file

from ..config import LoraSettings, ModelConfig
from ..data.encoding import encode_text
from ..data.federated import load_local_files
from ..models.adapters import export_peft_dir, input_length, read_labels, write_labels
from ..models.loading import load_peft_classifier, load_tokenizer
from ..personalize.estimators import heldout
from ..personalize.session import ClientSession, ClientSplits, SessionSettings, Timers
from ..training.loop import Budget

WEIGHTS = "adapter_model.safetensors"
MIN_TRUSTED_EXAMPLES = 20



def read_adapter(path: Path) -> tuple[dict, dict]:
    """(adapter_config.json, tensors) of a PEFT adapter directory, with errors naming the file."""
    config_path, weights_path = path / "adapter_config.json", path / WEIGHTS
    for f in (config_path, weights_path):
        if not f.is_file():
            raise FileNotFoundError(f"'{f}' not found: '{path}' is not a PEFT adapter directory")
    try:
        config = json.loads(config_path.read_text())
        tensors = load_file(str(weights_path))
    except (json.JSONDecodeError, OSError, RuntimeError, ValueError) as err:
        raise ValueError(f"could not read adapter '{path}': {err}") from err
    return config, tensors


def _num_labels(tensors: dict) -> int:
    heads = [v for k, v in tensors.items() if k.endswith(("classifier.weight", "score.weight"))]
    if not heads:
        raise ValueError("the adapter has no classifier head (modules_to_save); pass --num-labels")
    return int(heads[0].shape[0])


def merge_saved(
    federated: Path, local: Path, data: Path, out: Path, *, num_labels: int | None = None,
    max_length: int | None = None,
) -> dict:
    """Merge two saved adapters with λ fitted on ``data``; inputs truncated at ``max_length`` tokens (default: the
    length recorded with the federated adapter, else a run's default)."""
    max_length = input_length(federated, max_length)
    fed_cfg, fed_state = read_adapter(federated)
    loc_cfg, loc_state = read_adapter(local)
    if fed_cfg.get("r") != loc_cfg.get("r") or set(fed_state) != set(loc_state):
        raise ValueError(f"adapters '{federated}' and '{local}' have different shapes or modules; cannot merge")
    for key in ("lora_alpha", "base_model_name_or_path"):  # one scale α/r and one base model for both
        if fed_cfg.get(key) != loc_cfg.get(key):
            raise ValueError(
                f"adapters '{federated}' and '{local}' differ in {key} ({fed_cfg.get(key)!r} and {loc_cfg.get(key)!r} "
                "in their adapter_config.json); merge adapters trained with the same LoRA settings on the same base"
            )
    names = _shared_labels(federated, local)
    if names is not None and num_labels not in (None, len(names)):
        raise ValueError(f"--num-labels {num_labels} disagrees with the {len(names)} labels saved with the adapters")
    model_cfg = ModelConfig(name=fed_cfg["base_model_name_or_path"], max_length=max_length)
    lora = LoraSettings(
        r=fed_cfg["r"], alpha=fed_cfg["lora_alpha"], target_modules=sorted(fed_cfg["target_modules"]),
        modules_to_save=fed_cfg.get("modules_to_save"),
    )
    model = load_peft_classifier(model_cfg, lora, num_labels or _num_labels(fed_state), seed=0)
    rows = load_local_files(data, label_names=names)
    if names is None and isinstance(rows.features["label"], ClassLabel):
        raise ValueError(
            f"{data}: labels are names but the adapters have no labels.json to map them to their ids; "
            "write the labels as the adapters' ids 0..n-1, or export the adapters again with this version"
        )
    held_out = encode_text(load_tokenizer(model_cfg), rows, max_length)
    empty = held_out.subset(held_out.tensors["labels"][:0])
    settings = SessionSettings(Budget(), "federated", lora.alpha / lora.r, 2 * lora.r)
    session = ClientSession(
        model, ClientSplits("client", empty, held_out, empty), fed_state, fed_state, settings, Timers(), local=loc_state
    )
    est = heldout(session)
    export_peft_dir(model, session.merged([fed_state, loc_state], [est.lam, 1 - est.lam]), out)
    if names is not None:
        write_labels(out, names, max_length)
    result = {"lambda": est.lam, "v_fed": est.v_fed, "v_local": est.v_local, "note": est.note, "n_heldout": len(held_out)}
    return {**result, "warnings": untrusted(result)}


def _shared_labels(federated: Path, local: Path) -> list[str] | None:
    """The label names saved with both adapters (None when neither has them); different names are an error."""
    fed_names, loc_names = read_labels(federated), read_labels(local)
    if fed_names != loc_names:
        raise ValueError(
            f"adapters '{federated}' and '{local}' have different labels ({fed_names} vs {loc_names}); "
            "merge two adapters of the same run"
        )
    return fed_names


def untrusted(estimate: dict) -> list[str]:
    """Why λ should not be trusted, if it should not: a negative variance, a fallback note, too few examples."""
    reasons = []
    for key, what in (("v_fed", "federated"), ("v_local", "local")):
        value = estimate[key]
        if value is not None and value < 0:
            reasons.append(
                f"the {what} variance came out negative ({key} = {value:.3g}): the held-out losses do not curve "
                "as the bound assumes, so λ is an endpoint clipped to [0, 1], not an estimate"
            )
    if estimate["note"]:
        reasons.append(f"the estimate fell back: {estimate['note']}")
    if estimate["n_heldout"] < MIN_TRUSTED_EXAMPLES:
        reasons.append(
            f"only {estimate['n_heldout']} held-out examples (fewer than {MIN_TRUSTED_EXAMPLES}): λ is noisy"
        )
    return reasons
