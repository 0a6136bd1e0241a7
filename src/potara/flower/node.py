"""What one SuperNode holds: its partition's data, the base model with adapters; nothing here is sent."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from peft import PeftModel

from .. import config as config_mod
from ..config import ConfigError, RunConfig
from ..engine import encode_clients, load_federated_data
from ..merge.taskvec import AdapterState
from ..models.adapters import get_state
from ..models.loading import load_peft_classifier
from ..personalize.session import ClientSplits


@dataclass
class Node:
    """A client's splits, the model (federated + merge adapters) and the pretrained adapter state."""

    partition: int
    splits: ClientSplits
    model: PeftModel
    pretrained: AdapterState
    num_labels: int

    @property
    def name(self) -> str:
        return self.splits.name


_MODELS: dict[str, tuple[PeftModel, AdapterState, int]] = {}
_SPLITS: dict[tuple[str, int], ClientSplits] = {}


def partition_of(node_config: Mapping[str, Any], cfg: RunConfig) -> int:
    """The node's ``partition-id`` (from ``--node-config``), checked against ``data.num_clients``."""
    if "partition-id" not in node_config:
        raise ConfigError(
            "this SuperNode has no 'partition-id' in its node config (--node-config 'partition-id=0')"
        )
    try:
        partition = int(node_config["partition-id"])
    except (TypeError, ValueError):
        raise ConfigError(
            f"partition-id must be an integer, got {node_config['partition-id']!r} (--node-config 'partition-id=0')"
        ) from None
    if not 0 <= partition < cfg.data.num_clients:
        raise ConfigError(
            f"partition-id {partition} is outside 0..{cfg.data.num_clients - 1} (data.num_clients)"
        )
    return partition


def node_for(cfg: RunConfig, partition: int) -> Node:
    """The node's state, built once per process (a simulation process serves several partitions)."""
    key = config_mod.dumps(cfg)
    if (key, partition) not in _SPLITS or key not in _MODELS:  # the model of a config run before another is gone
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        fed_data = load_federated_data(cfg)
        mine = dataclasses.replace(fed_data, clients=[fed_data.clients[partition]])
        _SPLITS[(key, partition)] = encode_clients(cfg, mine)[0]
        if key not in _MODELS:
            _MODELS.clear()
            model = load_peft_classifier(
                cfg.model, cfg.lora, len(fed_data.label_names), cfg.seed
            )
            _MODELS[key] = (model, get_state(model), len(fed_data.label_names))
    model, pretrained, num_labels = _MODELS[key]
    return Node(partition, _SPLITS[(key, partition)], model, pretrained, num_labels)
