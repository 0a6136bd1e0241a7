"""Train rounds through Flower's SecAgg+ workflow (``SecAggPlusWorkflow``): the server learns the weighted mean of
the sampled clients' uploads, never one upload.

The workflow is Flower's, unchanged; it drives a *legacy* strategy through a ``LegacyContext``. Here that strategy
is a one-round adaptor (:class:`RoundFit`): its fit instructions are the Message strategy's own train messages,
and the aggregate it is handed comes back to that strategy as every surviving client's reply (the workflow gives
a legacy strategy the same: each ``FitRes`` carrying the aggregate), with that client's own metrics. So
:class:`~potara.flower.strategy.PotaraFedAvg` and Flower's DP wrappers run unchanged around it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.common import FitIns, FitRes, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid
from flwr.supercore import log

from .grid import DelegatingGrid, MeteredGrid
from .settings import FlowerSettings, SecAgg
from .strategy import ClientInfo, FederationError
from .wire import FED_KEY, KEYS_KEY


def train_grid(grid: MeteredGrid, settings: FlowerSettings, clients: list[ClientInfo]) -> Grid:
    """``grid`` itself, or with ``secagg`` on, one whose train rounds run SecAgg+ over it."""
    if settings.secagg is None:
        return grid
    log(
        INFO,
        "SecAgg+: the server sees only each round's aggregate; per-upload validation (format, finiteness, "
        "validation.max_norm, secagg-clipping-range) runs on each client before masking, and "
        "validation.max_norm_ratio (relative to the round's median upload) is off: it needs every upload",
    )
    equal = settings.run.privacy.noise_multiplier > 0  # DP: equal weights, as the wrappers require
    max_weight = 1.0 if equal else float(max(c.n_train for c in clients))
    return SecureTrainGrid(grid, settings.secagg, max_weight)


@dataclass(frozen=True)
class _Node:
    """What the workflow reads of a legacy ClientProxy: its node id."""

    node_id: int


class RoundFit:
    """The legacy strategy ``SecAggPlusWorkflow`` drives for one round: the train messages as fit instructions
    (their adapter's tensor names in the config, as legacy Parameters have none); the unmasked aggregate kept."""

    def __init__(self, messages: list[Message]) -> None:
        self.messages = {m.metadata.dst_node_id: m for m in messages}
        self.keys = list(messages[0].content[FED_KEY].keys())
        self.results: list[tuple[_Node, FitRes]] | None = None

    def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> list[tuple[_Node, FitIns]]:
        return [(_Node(node), self._fit_ins(msg)) for node, msg in self.messages.items()]

    def _fit_ins(self, msg: Message) -> FitIns:
        config = {**dict(msg.content["config"]), KEYS_KEY: json.dumps(self.keys)}
        return FitIns(compat.arrayrecord_to_parameters(msg.content[FED_KEY], keep_input=True), config)

    def aggregate_fit(self, server_round: int, results: list, failures: list) -> tuple[None, dict]:
        self.results = results
        return None, {}

    def replies(self) -> list[Message]:
        """Per surviving client, a train reply that carries the aggregate (float32) and the client's metrics."""
        replies = []
        for node, fit_res in self.results or []:
            arrays = parameters_to_ndarrays(fit_res.parameters)
            record = ArrayRecord({k: Array(np.asarray(a, dtype=np.float32)) for k, a in zip(self.keys, arrays, strict=True)})
            content = RecordDict({FED_KEY: record, "metrics": MetricRecord(dict(fit_res.metrics))})
            replies.append(Message(content, reply_to=self.messages[node.node_id]))
        return replies


class SecureTrainGrid(DelegatingGrid):
    """Delegates to ``inner``; a batch of train messages (the strategy's) is sent as one SecAgg+ round."""

    def __init__(self, inner: MeteredGrid, secagg: SecAgg, max_weight: float) -> None:
        super().__init__(inner)
        self.secagg, self.max_weight = secagg, max_weight

    @property
    def phase(self) -> tuple[str, int]:
        return self.inner.phase

    @phase.setter
    def phase(self, value: tuple[str, int]) -> None:
        self.inner.phase = value

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        if not messages or any(m.metadata.message_type != MessageType.TRAIN for m in messages):
            return self.inner.send_and_receive(messages, timeout=timeout)
        return self.secure_round(messages, timeout)

    def secure_round(self, messages: list[Message], timeout: float | None) -> list[Message]:
        """One SecAgg+ round over the train messages; :class:`FederationError` when it halts (too few survivors)."""
        round_ = int(messages[0].content["config"]["server-round"])
        fit = RoundFit(messages)
        state = RecordDict(
            {MAIN_CONFIGS_RECORD: ConfigRecord({WorkflowKey.CURRENT_ROUND: round_}), MAIN_PARAMS_RECORD: ArrayRecord()}
        )
        context = LegacyContext(Context(run_id=0, node_id=0, node_config={}, state=state, run_config={}), strategy=fit)
        workflow = SecAggPlusWorkflow(
            self.secagg.num_shares, self.secagg.reconstruction_threshold, max_weight=self.max_weight,
            clipping_range=self.secagg.clipping_range, quantization_range=self.secagg.quantization_range,
            timeout=timeout,
        )
        workflow(self.inner, context)
        if fit.results is None:
            threshold = self.secagg.threshold_for(len(messages))
            raise FederationError(
                f"round {round_}: SecAgg+ halted: fewer of the {len(messages)} sampled clients stayed than "
                f"secagg-reconstruction-threshold={threshold} (see the log for the stage); lower it or add clients"
            )
        return fit.replies()
