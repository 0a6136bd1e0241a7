"""The ClientApp: the core's client step on the node, then local adapter, λ and merge, all on the node.

Replies carry only the federated adapter (train) and metrics; local adapters and Fisher stay here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flwr.app import (
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from ..engine import fed_budget, personalize, session_settings
from ..federation.rounds import client_step
from ..merge.spread import UpdateSpread
from ..merge.taskvec import AdapterState
from ..methods import resolve
from ..models.adapters import set_state
from ..personalize.session import Timers
from ..training.loop import evaluate
from .node import Node, node_for, partition_of
from .secure_client import private_train
from .settings import FlowerSettings, from_run_config
from .wire import FED_KEY, ROWS_KEY, download_dtype, from_record, spread_of, to_payload, to_record, upload_record

RESIDUAL_KEY = "int8-residual"  # Context.state key of the node's int8 error feedback (never sent)
RESIDUAL_RUN_KEY = "int8-residual-run"  # ... and of the run it belongs to


def build_client_app(
    defaults: Mapping[str, Any] | None = None, mods: Sequence[Mod] = ()
) -> ClientApp:
    """A ClientApp whose settings are ``context.run_config`` over ``defaults``; ``mods`` wrap every handler,
    outside the SecAgg+ mods that train messages pass through when ``secagg`` is on."""
    app = ClientApp(mods=[*mods, private_train(defaults)])

    @app.query("register")
    def register(msg: Message, context: Context) -> Message:
        _, node = _setup(context, defaults)
        metrics = MetricRecord(
            {
                "partition-id": node.partition,
                "n-train": len(node.splits.train),
                "num-labels": node.num_labels,
            }
        )
        return Message(
            reply_to=msg,
            content=RecordDict(
                {"node": metrics, "client": ConfigRecord({"name": node.name})}
            ),
        )

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        settings, node = _setup(context, defaults)
        dtype = settings.run.fed.payload_dtype
        update = client_step(
            node.model,
            node.name,
            to_payload(msg.content[FED_KEY], download_dtype(dtype)),
            node.splits.train,
            fed_budget(settings.run),
            int(msg.content["config"]["seed"]),
            dtype,
            residual=_residual(context),
        )
        if update.residual:
            context.state[RESIDUAL_KEY] = to_record(update.residual)
            context.state[RESIDUAL_RUN_KEY] = ConfigRecord({"run-id": context.run_id})
        metrics = MetricRecord(
            {"num-examples": update.n, "train-loss": update.train_loss}
        )
        return Message(
            reply_to=msg,
            content=RecordDict(
                {FED_KEY: upload_record(update.payload, msg.content[FED_KEY].keys()), "metrics": metrics}
            ),
        )

    @app.evaluate()
    def fedit_eval(msg: Message, context: Context) -> Message:
        settings, node = _setup(context, defaults)
        set_state(node.model, _received(msg, settings))
        ev = evaluate(node.model, node.splits.test, settings.run.eval_batch_size)
        metrics = MetricRecord(
            {
                "num-examples": len(node.splits.test),
                "fedit-acc": ev.acc,
                "fedit-loss": ev.loss,
            }
        )
        return Message(reply_to=msg, content=RecordDict({"metrics": metrics}))

    @app.query("personalize")
    def personalize_here(msg: Message, context: Context) -> Message:
        settings, node = _setup(context, defaults)
        rows, timers = _personalize(settings, node, _received(msg, settings), context, spread_of(msg))
        return Message(
            reply_to=msg,
            content=RecordDict(
                {
                    "metrics": _metrics(rows, timers, len(node.splits.train)),
                    "report": ConfigRecord({ROWS_KEY: json.dumps(rows)}),
                }
            ),
        )

    return app


def _setup(
    context: Context, defaults: Mapping[str, Any] | None
) -> tuple[FlowerSettings, Node]:
    settings = from_run_config(context.run_config, defaults)
    return settings, node_for(
        settings.run, partition_of(context.node_config, settings.run)
    )


def _received(msg: Message, settings: FlowerSettings) -> AdapterState:
    """The global adapter a message brings, as the client holds it (fp32, rounded to the wire dtype it came in)."""
    return from_record(msg.content[FED_KEY], "server", download_dtype(settings.run.fed.payload_dtype))


def _residual(context: Context) -> AdapterState:
    """This node's int8 error feedback: the quantization error of its last upload in this run (none yet: empty).
    It lives in the node's ``Context.state``, which the SuperNode keeps for the run (and hands on to the next run
    of a Flower run series, whose residual starts at 0 here: its federation starts afresh)."""
    if RESIDUAL_KEY not in context.state or context.state[RESIDUAL_RUN_KEY]["run-id"] != context.run_id:
        return {}
    return from_record(context.state[RESIDUAL_KEY], "own residual")


def _personalize(
    settings: FlowerSettings, node: Node, fed: dict, context: Context, spread: UpdateSpread | None
) -> tuple[dict[str, dict], Timers]:
    """Every configured method on this client (the core's ``personalize``), ``spread`` the last round's update
    spread as the server sent it; merged adapters stay on the node."""
    cfg, timers = settings.run, Timers()
    export = str(context.node_config.get("adapter-dir", ""))
    per = personalize(
        node.model,
        [node.splits],
        fed,
        node.pretrained,
        resolve(cfg),
        session_settings(cfg),
        timers,
        desc=f"personalize {node.name}",
        export_dir=Path(export) if export else None,
        spread=spread,
    )
    return {name: rows[0] for name, rows in per.items()}, timers


def _metrics(rows: dict[str, dict], timers: Timers, n_train: int) -> MetricRecord:
    """Flat numbers for Flower users: ``<method>.acc`` and ``<method>.lambda`` (mean over modules if per-module)."""
    values: dict[str, float | int] = {"n-train": n_train}
    for name, row in rows.items():
        values[f"{name}.acc"] = float(row["acc"])
        if row.get("lambda") is not None:
            values[f"{name}.lambda"] = mean_lambda(row["lambda"])
    for kind in ("local_epoch", "fisher"):
        values[f"{kind}-s"] = timers.mean(kind)
    return MetricRecord(values)


def mean_lambda(lam: float | dict[str, float] | list[float]) -> float:
    """One number for a λ that may be per module."""
    values = (
        list(lam.values())
        if isinstance(lam, dict)
        else lam
        if isinstance(lam, list)
        else [lam]
    )
    return float(sum(values) / len(values))


app = build_client_app()
