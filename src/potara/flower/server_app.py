"""The ServerApp: register the nodes, run the rounds with :class:`PotaraFedAvg`, collect personalization."""

from __future__ import annotations

import time
from collections.abc import Mapping
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

import torch
from flwr.app import Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.supercore import log

from ..merge.taskvec import AdapterState
from ..models.adapters import get_state
from ..models.loading import load_peft_classifier
from ..reporting.outputs import table
from .grid import MeteredGrid
from .privacy import privatized
from .results import build_summary, write_outputs
from .secure_grid import train_grid
from .settings import FlowerSettings, from_run_config
from .strategy import MALFORMED, ClientInfo, FederationError, PotaraFedAvg
from .wire import from_record, to_record

REGISTER = f"{MessageType.QUERY}.register"


def build_server_app(defaults: Mapping[str, Any] | None = None) -> ServerApp:
    """A ServerApp whose settings are ``context.run_config`` over ``defaults``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        settings = from_run_config(context.run_config, defaults)
        out = Path(settings.out_dir or f"runs/flower-{context.run_id}").resolve()
        summary = run_federation(MeteredGrid(grid), settings, out)
        log(INFO, "Potara results (%s):\n%s", out, table(summary))

    return app


def run_federation(
    grid: MeteredGrid, settings: FlowerSettings, out: Path
) -> dict[str, Any]:
    """Register, federate, personalize on the nodes; write summary.json and friends to ``out``."""
    began = time.perf_counter()
    cfg = settings.run
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    clients, num_labels, faults = register(grid, settings)
    initial = initial_state(settings, num_labels)
    strategy = PotaraFedAvg(settings, clients, initial)
    strategy.faults.extend(faults)
    result = privatized(strategy, settings).start(
        train_grid(grid, settings, clients),
        to_record(initial),
        num_rounds=cfg.fed.rounds,
        timeout=settings.round_timeout,
    )
    if len(result.arrays):  # the last released global adapter (with DP: the noised one)
        strategy.state = from_record(result.arrays, "server")
    federation_s = time.perf_counter() - began
    replies = grid.send_and_receive(
        strategy.configure_personalize(to_record(strategy.state), grid),
        timeout=settings.round_timeout,
    )
    personal = strategy.aggregate_personalize(replies)
    summary = build_summary(
        settings,
        strategy,
        grid,
        personal,
        {
            "federation_s": federation_s,
            "wall_s": time.perf_counter() - began,
        },
    )
    write_outputs(out, summary, strategy, grid)
    return summary


def initial_state(settings: FlowerSettings, num_labels: int) -> AdapterState:
    """The initial federated adapter: the same seeded model as the embedded engine (the server sees no data)."""
    cfg = settings.run
    return get_state(load_peft_classifier(cfg.model, cfg.lora, num_labels, cfg.seed))


def wait_for_nodes(grid: Grid, settings: FlowerSettings) -> list[int]:
    """Node ids once ``min-available-nodes`` (default: one per client) are connected, or at the timeout."""
    deadline = time.monotonic() + settings.wait_nodes_timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= settings.expected_nodes or time.monotonic() > deadline:
            return nodes
        time.sleep(0.5)


def register(
    grid: MeteredGrid, settings: FlowerSettings
) -> tuple[list[ClientInfo], int, list[dict]]:
    """Ask every node which partition it holds; returns the clients, the label count and the faults."""
    nodes = wait_for_nodes(grid, settings)
    if len(nodes) < settings.expected_nodes:
        log(
            WARNING,
            "only %d of %d nodes connected after %.0f s",
            len(nodes),
            settings.expected_nodes,
            settings.wait_nodes_timeout,
        )
    grid.phase = ("register", 0)
    messages = [
        Message(content=RecordDict(), dst_node_id=n, message_type=REGISTER)
        for n in nodes
    ]
    replies = grid.send_and_receive(messages, timeout=settings.round_timeout)
    clients, labels, faults = [], set(), []
    for msg in replies:
        node_id = msg.metadata.src_node_id
        kind, reason = ("error", msg.error.reason) if msg.has_error() else ("", "")
        if not kind:
            try:
                client, num_labels = _registration(msg)
            except MALFORMED as err:
                kind, reason = "invalid", f"malformed reply: {err!r}"
        if kind:
            faults.append(
                {
                    "phase": "register",
                    "round": 0,
                    "client": "?",
                    "node_id": node_id,
                    "kind": kind,
                    "reason": reason,
                }
            )
            log(WARNING, "register: node %d failed: %s", node_id, reason)
            continue
        clients.append(client)
        labels.add(num_labels)
    _check_registry(clients, labels, settings)
    return clients, labels.pop(), faults


def _registration(msg: Message) -> tuple[ClientInfo, int]:
    """A register reply: the node's client and its number of labels."""
    info = msg.content["node"]
    client = ClientInfo(
        str(msg.content["client"]["name"]),
        msg.metadata.src_node_id,
        int(info["partition-id"]),
        int(info["n-train"]),
    )
    return client, int(info["num-labels"])


def _check_registry(
    clients: list[ClientInfo], labels: set[int], settings: FlowerSettings
) -> None:
    seen: dict[int, ClientInfo] = {}
    for c in clients:
        if c.partition in seen:
            raise FederationError(
                f"nodes {seen[c.partition].node_id} and {c.node_id} both hold partition-id {c.partition}"
            )
        seen[c.partition] = c
    if len(clients) < settings.min_train_nodes:
        raise FederationError(
            f"{len(clients)} nodes registered, fewer than min-train-nodes={settings.min_train_nodes}"
        )
    if len(labels) != 1:
        raise FederationError(
            f"nodes disagree on the number of labels: {sorted(labels)} (different data configs?)"
        )


app = build_server_app()
