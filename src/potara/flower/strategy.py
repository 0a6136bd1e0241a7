"""A Flower strategy whose sampling, per-client seeds and aggregation are the embedded engine's."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from logging import INFO, WARNING
from typing import Any

from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

from ..config import ValidationConfig, sampled_clients
from ..federation.privacy import EqualWeightFedAvg
from ..federation.recipes import FEDIT
from ..federation.rounds import aggregate_round, client_seed, sample_clients, screening
from ..federation.update import ClientUpdate
from ..federation.validation import Expectation, InvalidUpdate, check_update
from ..merge.spread import UpdateSpread
from ..merge.taskvec import AdapterState
from ..methods import resolve
from .settings import FlowerSettings
from .wire import (
    FED_KEY,
    ROWS_KEY,
    SPREAD_KEY,
    download_dtype,
    from_record,
    origin,
    spread_record,
    to_payload,
    to_record,
)

PERSONALIZE = f"{MessageType.QUERY}.personalize"
# What reading a reply raises when its records are not what a ClientApp sends (missing, mistyped, unreadable)
MALFORMED = (KeyError, TypeError, ValueError, OverflowError, RecursionError)


class FederationError(RuntimeError):
    """The federation cannot go on (e.g. fewer valid updates than the configured minimum)."""


@dataclass(frozen=True)
class ClientInfo:
    """A registered client: its name (from its partition), the node that holds it, its training size."""

    name: str
    node_id: int
    partition: int
    n_train: int


@dataclass(frozen=True)
class Personal:
    """One client's personalization report: a row per method and the node's timings (seconds)."""

    rows: dict[str, dict]
    timings: dict[str, float]


class PotaraFedAvg(FedAvg):
    """FedAvg of the federated adapter through the core's ``aggregate_round`` (what ``server_step`` runs).

    Clients are sampled by ``potara.federation.rounds.sample_clients`` among the registered clients whose node is
    connected, so with every node up the rounds see the same clients, seeds and order as the embedded engine.
    Under client-level DP (Flower's wrappers around this strategy, ``potara.flower.privacy``) the updates are
    averaged with equal weights, and the global adapter is the one each round is configured with (the wrapper's
    noised aggregate), never this strategy's noise-free one. Each round records the spread of the updates it
    aggregated (None under DP or SecAgg+); the last round's goes to every client with the final adapter when a
    configured method reads it.
    """

    def __init__(
        self, settings: FlowerSettings, clients: list[ClientInfo], initial: AdapterState
    ) -> None:
        super().__init__(
            fraction_train=settings.run.fed.fraction,
            fraction_evaluate=1.0 if settings.evaluate_every else 0.0,
            min_train_nodes=settings.min_train_nodes,
            min_evaluate_nodes=0,
            min_available_nodes=settings.min_train_nodes,
            arrayrecord_key=FED_KEY,
        )
        self.settings = settings
        self.clients = sorted(clients, key=lambda c: c.partition)
        self.state = initial
        private = settings.run.privacy.noise_multiplier > 0
        self.aggregator = (EqualWeightFedAvg(sampled_clients(settings.run)) if private
                           else FEDIT.strategy(settings.run.fed.aggregation))
        self.spread: UpdateSpread | None = None  # the last round's
        self.spread_travels = any(m.needs_spread for m in resolve(settings.run))
        self.rounds: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []
        self._sent: dict[int, str] = {}
        self._outbox: list[Message] = []
        self._round_began = 0.0
        self._screened: set[int] = set()  # nodes whose upload screen_train dropped this round

    def summary(self) -> None:
        log(
            INFO,
            "\t├──> Potara FedAvg (potara.federation.rounds.aggregate_round), aggregation '%s'",
            self.settings.run.fed.aggregation,
        )
        log(
            INFO,
            "\t└──> %d registered clients, min-train-nodes %d",
            len(self.clients),
            self.min_train_nodes,
        )

    def connected(self, grid: Grid) -> list[ClientInfo]:
        """Registered clients whose node the SuperLink still lists, in partition order."""
        online = set(grid.get_node_ids())
        return [c for c in self.clients if c.node_id in online]

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """The engine's sample of clients; each gets the global adapter and its own seed."""
        self.state = from_record(arrays, "server")
        by_name = {c.name: c for c in self.connected(grid)}
        chosen = sample_clients(
            list(by_name),
            self.settings.run.fed.fraction,
            self.settings.run.seed,
            server_round,
        )
        _set_phase(grid, "train", server_round)
        self._round_began = time.perf_counter()
        self._sent = {by_name[name].node_id: name for name in chosen}
        self._screened = set()
        self.rounds.append({"round": server_round, "clients": chosen})
        log(
            INFO,
            "configure_train: round %d, clients %s",
            server_round,
            ", ".join(chosen),
        )
        return self._post(
            [
                _message(
                    {
                        FED_KEY: self._down(arrays),
                        "config": ConfigRecord(
                            {
                                **dict(config),
                                "server-round": server_round,
                                "seed": client_seed(
                                    self.settings.run.seed, server_round, i
                                ),
                            }
                        ),
                    },
                    by_name[name].node_id,
                    MessageType.TRAIN,
                )
                for i, name in enumerate(chosen)
            ]
        )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The core's ``aggregate_round`` (validation, then FedAvg) over the replies in the sampled order."""
        valid = self._valid(list(replies), "train", server_round)
        updates = [
            u
            for u in (self._read(m, "train", server_round, self._update) for m in valid)
            if u is not None
        ]
        order = list(self._sent.values())
        updates.sort(key=lambda u: order.index(u.client))
        outcome = aggregate_round(
            self.aggregator,
            self.state,
            updates,
            self._limits,
            f"round {server_round}",
            secure=self.settings.secagg is not None,
            lora_scale=self.settings.run.lora.alpha / self.settings.run.lora.r,
        )
        by_name = {name: node for node, name in self._sent.items()}
        for name, reason in outcome.rejected.items():
            self._fault("train", server_round, by_name[name], "rejected", reason)
        record = self.rounds[-1]
        record.update(self._round_faults(server_round))
        if len(outcome.accepted) < self.min_train_nodes:
            raise FederationError(
                f"round {server_round}: {len(outcome.accepted)} of {len(order)} clients returned a valid update, "
                f"fewer than min-train-nodes={self.min_train_nodes}; missing {record['missing']}, "
                f"errors {record['errors']}"
            )
        self.state = outcome.state
        kept = [u for u in updates if u.client in outcome.accepted]
        record["train_loss"] = sum(u.train_loss * u.n for u in kept) / max(
            1, sum(u.n for u in kept)
        )
        record["aggregated"] = [u.client for u in kept]
        self.spread = outcome.spread
        record["update_spread"] = outcome.spread.spread if outcome.spread else None
        record["update_count"] = len(kept)
        record["seconds"] = time.perf_counter() - self._round_began
        if outcome.kept_previous:
            record["kept_previous"] = True
        return to_record(self.state), MetricRecord(
            {"train-loss": record["train_loss"], "clients": len(kept)}
        )

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Every connected client evaluates the global adapter (FedIT) every ``evaluate-every`` rounds."""
        every = self.settings.evaluate_every
        if not every or server_round % every:
            self._sent, self._outbox = {}, []
            return []
        _set_phase(grid, "evaluate", server_round)
        clients = self.connected(grid)
        self._sent = {c.node_id: c.name for c in clients}
        content = {
            FED_KEY: self._down(arrays),
            "config": ConfigRecord({**dict(config), "server-round": server_round}),
        }
        return self._post(
            [_message(content, c.node_id, MessageType.EVALUATE) for c in clients]
        )

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """The mean over clients of FedIT's test accuracy (as the embedded engine's ``fedit_mean_acc``)."""
        valid = self._valid(list(replies), "evaluate", server_round)
        read = {
            self._sent[self._node(m)]: self._read(m, "evaluate", server_round, _fedit_acc)
            for m in valid
        }
        accs = {name: acc for name, acc in read.items() if acc is not None}
        if not accs:
            return None
        record = self.rounds[-1]
        record["fedit_mean_acc"] = sum(accs.values()) / len(accs)
        record["fedit_acc"] = accs
        return MetricRecord(
            {"fedit-mean-acc": record["fedit_mean_acc"], "clients": len(accs)}
        )

    def configure_personalize(self, arrays: ArrayRecord, grid: Grid) -> list[Message]:
        """The final global adapter to every connected client, which personalizes on its own data; with it the
        last round's update spread, when a method reads it and it was released."""
        _set_phase(grid, "personalize", len(self.rounds))
        clients = self.connected(grid)
        self._sent = {c.node_id: c.name for c in clients}
        content = {FED_KEY: self._down(arrays)}
        if self.spread_travels and self.spread is not None:
            content[SPREAD_KEY] = spread_record(self.spread)
        return self._post(
            [_message(content, c.node_id, PERSONALIZE) for c in clients]
        )

    def aggregate_personalize(self, replies: Iterable[Message]) -> dict[str, Personal]:
        """Per reporting client, every method's row (accuracy, λ, ...) and timings; the others become faults."""
        valid = self._valid(list(replies), "personalize", len(self.rounds))
        read = {
            self._sent[self._node(m)]: self._read(m, "personalize", len(self.rounds), self._personal)
            for m in valid
        }
        return {name: p for name, p in read.items() if p is not None}

    def _post(self, messages: list[Message]) -> list[Message]:
        """Keep the outgoing messages: the grid gives them ids, which replies (and SuperLink errors) refer to."""
        self._outbox = messages
        return messages

    def _node(self, reply: Message) -> int:
        return origin(reply, self._outbox)

    def _valid(self, replies: list[Message], phase: str, round_: int) -> list[Message]:
        """Replies without error; errors and messages without reply become faults naming client and node."""
        replied = {self._node(m) for m in replies}
        for msg in replies:
            if msg.has_error():
                self._fault(phase, round_, self._node(msg), "error", msg.error.reason)
        for node_id in self._sent:
            if node_id not in replied and node_id not in self._screened:
                self._fault(
                    phase,
                    round_,
                    node_id,
                    "missing",
                    "no reply before the round timeout (node lost?)",
                )
        return [m for m in replies if not m.has_error() and self._node(m) in self._sent]

    def screen_train(self, server_round: int, replies: Iterable[Message]) -> list[Message]:
        """The train replies less those whose upload fails the core's per-upload checks (format, names, shapes,
        finiteness, ``validation.max_norm``), each named as a fault. Flower's server-side DP wrappers clip every reply
        against the global adapter before :meth:`aggregate_train` sees it: a malformed upload must not reach them."""
        expect = Expectation.of(self.state)
        return [msg for msg in replies if msg.has_error() or self._node(msg) not in self._sent
                or self._passes(msg, server_round, expect)]

    def _passes(self, msg: Message, server_round: int, expect: Expectation) -> bool:
        """Whether a train reply's upload passes the per-upload checks; if not, its node is screened out and the
        reason is a fault (``_read`` records a malformed reply's)."""
        update = self._read(msg, "train", server_round, self._update)
        try:
            if update is not None:
                check_update(update, expect, self._limits)
                return True
        except InvalidUpdate as err:
            self._fault("train", server_round, self._node(msg), "rejected", err.reason)
        self._screened.add(self._node(msg))
        return False

    def _read(self, msg: Message, phase: str, round_: int, parse: Callable[[Message], Any]) -> Any:
        """``parse(msg)``, or None and a fault naming the client when the reply is malformed."""
        try:
            return parse(msg)
        except MALFORMED as err:
            self._fault(phase, round_, self._node(msg), "invalid", f"malformed reply: {err!r}")
            return None

    def _update(self, msg: Message) -> ClientUpdate:
        """A train reply as the core's ClientUpdate (which ``aggregate_round`` then validates): its arrays must be
        in ``fed.payload_dtype`` (int8: int8 arrays and their float32 scales), else the reply is malformed."""
        metrics = msg.content["metrics"]
        return ClientUpdate(
            self._sent[self._node(msg)],
            to_payload(msg.content[FED_KEY], self.settings.run.fed.payload_dtype),
            int(metrics["num-examples"]),
            float(metrics["train-loss"]),
        )

    @property
    def _limits(self) -> ValidationConfig:
        """The run's validation, screening its payload dtype, as the embedded engine's ``run_rounds`` screens."""
        return screening(self.settings.run.validation, self.aggregator, self.settings.run.fed.payload_dtype)

    def _down(self, arrays: ArrayRecord) -> ArrayRecord:
        """The global adapter as it travels down: in ``fed.payload_dtype`` (an int8 run's: fp32, as it is)."""
        dtype = download_dtype(self.settings.run.fed.payload_dtype)
        return arrays if dtype == "fp32" else to_record(from_record(arrays, "server"), dtype)

    def _personal(self, msg: Message) -> Personal:
        """A personalize reply: a row for every configured method, about this client, with an accuracy."""
        name = self._sent[self._node(msg)]
        rows = json.loads(str(msg.content["report"][ROWS_KEY]))
        for method in resolve(self.settings.run):
            row = rows[method.name]
            if row["client"] != name:
                raise ValueError(f"row of {method.name} is about client {row['client']!r}, not {name}")
            accuracy(row["acc"])
        timings = {k: float(v) for k, v in msg.content["metrics"].items() if k.endswith("-s")}
        return Personal(rows, timings)

    def _fault(
        self, phase: str, round_: int, node_id: int, kind: str, reason: str
    ) -> None:
        client = self._sent.get(node_id, "?")
        self.faults.append(
            {
                "phase": phase,
                "round": round_,
                "client": client,
                "node_id": node_id,
                "kind": kind,
                "reason": reason,
            }
        )
        log(
            WARNING,
            "%s round %d: client %s (node %d) %s: %s",
            phase,
            round_,
            client,
            node_id,
            kind,
            reason,
        )

    def _round_faults(self, round_: int) -> dict[str, list]:
        faults = [
            f for f in self.faults if f["phase"] == "train" and f["round"] == round_
        ]
        return {
            "missing": [f["client"] for f in faults if f["kind"] == "missing"],
            "errors": [
                {k: f[k] for k in ("client", "node_id", "reason")}
                for f in faults
                if f["kind"] != "missing"
            ],
        }


def accuracy(value: Any) -> float:
    """``value`` as an accuracy; ``ValueError`` when it is not a number in [0, 1]."""
    acc = float(value)
    if not 0.0 <= acc <= 1.0:
        raise ValueError(f"accuracy {value!r} is not a number in [0, 1]")
    return acc


def _fedit_acc(msg: Message) -> float:
    return accuracy(msg.content["metrics"]["fedit-acc"])


def _message(content: dict[str, Any], node_id: int, message_type: str) -> Message:
    return Message(
        content=RecordDict(content), dst_node_id=node_id, message_type=message_type
    )


def _set_phase(grid: Grid, phase: str, round_: int) -> None:
    if hasattr(grid, "phase"):
        grid.phase = (phase, round_)
