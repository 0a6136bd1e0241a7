"""The ClientApp's side of SecAgg+ (and of client-side DP clipping): Flower's ``secaggplus_mod`` and
``fixedclipping_mod`` around the train handler, with the core's per-upload validation run here, on the client,
since the server will only see the sum.

Flower's mods read and write the legacy ``FitIns``/``FitRes`` records (what ``SecAggPlusWorkflow`` sends);
:func:`legacy_train` turns them into the train handler's own records and back, so the handler is the same with
SecAgg+ on or off.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.client.mod import fixedclipping_mod, secaggplus_mod
from flwr.client.mod.utils import make_ffn
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat

from ..federation.update import ClientUpdate
from ..federation.validation import Expectation, InvalidUpdate, check_update
from .settings import FlowerSettings, from_run_config
from .wire import FED_KEY, KEYS_KEY, from_record, to_payload


def private_train(defaults: Mapping[str, Any] | None) -> Mod:
    """A mod that sends train messages through SecAgg+ (and client-side clipping) when the run config says so."""

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, context)
        settings = from_run_config(context.run_config, defaults)
        if settings.secagg is None:
            return call_next(msg, context)
        clipping = [fixedclipping_mod] if settings.client_clipping else []
        return make_ffn(call_next, [secaggplus_mod, *clipping, legacy_train(settings)])(msg, context)

    return mod


def legacy_train(settings: FlowerSettings) -> Mod:
    """A mod between Flower's (legacy records) and the train handler (its own records), which checks the upload."""

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        fit_ins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        config = dict(fit_ins.config)
        keys = json.loads(str(config.pop(KEYS_KEY)))
        arrays = parameters_to_ndarrays(fit_ins.parameters)
        received = ArrayRecord({k: Array(a) for k, a in zip(keys, arrays, strict=True)})
        msg.content = RecordDict({FED_KEY: received, "config": ConfigRecord(config)})
        reply = call_next(msg, context)
        if reply.has_error():
            return reply
        upload, metrics = reply.content[FED_KEY], reply.content["metrics"]
        n = int(metrics["num-examples"])
        check_upload(settings, f"node {context.node_id}", upload, received, n, float(metrics["train-loss"]))
        weight = 1 if settings.run.privacy.noise_multiplier > 0 else n  # DP: equal weights, as on the server
        parameters = ndarrays_to_parameters([upload[k].numpy() for k in keys])
        fit_res = FitRes(Status(Code.OK, ""), parameters, weight, dict(metrics))
        reply.content = compat.fitres_to_recorddict(fit_res, keep_input=True)
        return reply

    return mod


def check_upload(
    settings: FlowerSettings, client: str, upload: ArrayRecord, received: ArrayRecord, n: int, loss: float
) -> None:
    """The core's per-upload checks (``check_update``: format, finiteness, ``validation.max_norm``) and SecAgg+'s
    range, here on the client; :class:`InvalidUpdate` (the node's reply becomes an error: it drops out of the
    round) when one fails."""
    update = ClientUpdate(client, to_payload(upload), n, loss)
    check_update(update, Expectation.of(from_record(received, "server")), settings.run.validation)
    limit = settings.secagg.clipping_range  # called under SecAgg+ only (legacy_train)
    peak = max(float(np.abs(upload[k].numpy()).max(initial=0.0)) for k in upload.keys())
    if peak > limit:
        raise InvalidUpdate(
            client, f"value {peak:.4g} exceeds secagg-clipping-range={limit:g}: SecAgg+ would clip it silently"
        )
