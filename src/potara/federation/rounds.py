"""The federated rounds: the client step and the server step that the embedded engine and Flower share."""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from peft import PeftModel

from ..config import ValidationConfig
from ..data.encoding import Encoded
from ..merge.spread import UpdateSpread, update_spread
from ..merge.taskvec import AdapterState
from ..models.adapters import deserialize, get_state, lora_scale, serialize, serialize_int8_update, set_state
from ..training.loop import Budget, train
from .recipes import FEDIT, FedIT
from .strategies import FedAvg, RunningSum
from .update import ClientUpdate
from .validation import Expectation, Screened, admit, screen, within_round_bound

log = logging.getLogger(__name__)


def client_step(
    model: PeftModel, client: str, payload: bytes, data: Encoded, budget: Budget, seed: int, dtype: str = "fp32",
    *, recipe: FedIT = FEDIT, kept: AdapterState | None = None, residual: AdapterState | None = None,
) -> ClientUpdate:
    """Receive the global tensors, join the client's ``kept`` ones, train (in fp32) what ``recipe`` trains on
    local data; return the tensors that travel serialized in ``dtype`` and, apart, those that stay. A recipe
    with personal state (Ditto's ``v_k``, APFL's ``v_k`` and ``α_k``) has it in ``kept`` and gets it updated here
    too, after the global step. In ``int8`` the upload is the update against the received tensors plus the
    client's ``residual`` (the quantization error of its last int8 upload), returned updated."""
    received = deserialize(payload, "server")
    set_state(model, {**(kept or {}), **received})
    loss = train(model, data, budget, torch.Generator().manual_seed(seed), trains=recipe.trains)
    trained = get_state(model)
    sent, stays = recipe.split(trained)
    personal = recipe.personal_step(model, kept or {}, received, trained, data, budget, seed)
    if dtype == "int8":
        payload, left = serialize_int8_update(sent, received, residual or {})
        return ClientUpdate(client, payload, len(data), loss, {**stays, **personal}, left)
    return ClientUpdate(client, serialize(sent, dtype), len(data), loss, {**stays, **personal})


@dataclass
class RoundOutcome:
    """The new global adapter, who was aggregated, who was rejected and why, and the spread of the accepted
    updates (None where the server must not release it)."""

    state: AdapterState
    accepted: list[str]
    rejected: dict[str, str]
    kept_previous: bool
    spread: UpdateSpread | None = None


def round_spread(
    accepted: Sequence[tuple[str, AdapterState, int]], current: AdapterState, released: bool, scale: float | None
) -> UpdateSpread | None:
    """The spread of a round's accepted updates (task vectors at LoRA ``scale``), or None when ``released`` is
    false: under DP (its accountant covers only the noised mean) or SecAgg+ (the server never sees one update);
    or when the caller knows no LoRA scale."""
    if not released or scale is None:
        return None
    return UpdateSpread(update_spread([state for _, state, _ in accepted], current, scale), len(accepted))


def aggregate_round(
    strategy: FedAvg, current: AdapterState, updates: Sequence[ClientUpdate],
    limits: ValidationConfig | None = None, where: str = "round", secure: bool = False,
    lora_scale: float | None = None,
) -> RoundOutcome:
    """Validate every upload, aggregate the valid ones; with too few valid, keep ``current`` and say so.
    ``secure``: the updates are SecAgg+'s aggregate, not the clients' own; ``lora_scale``: the adapter's
    ``alpha / r``, for the updates' spread in task-vector space (neither: no spread is computed)."""
    limits = limits or ValidationConfig()
    screened = screen(updates, current, limits, where)
    return conclude_round(
        current, [name for name, _, _ in screened.accepted], screened.rejected,
        lambda: strategy.aggregate([(s, n) for _, s, n in screened.accepted], current), len(updates), limits, where,
        round_spread(screened.accepted, current, strategy.releases_spread and not secure, lora_scale),
    )


@dataclass
class Tally:
    """A round's uploads as they are checked: those that passed the per-upload checks, held until the round's
    norm bound (relative to their median norm) is known, then folded into the running aggregate; and why the
    rest did not pass."""

    running: RunningSum
    releases_spread: bool = True  # the strategy's: whether the accepted updates' spread may be computed
    lora_scale: float | None = None  # the adapter's alpha / r: the spread is taken in task-vector space
    screened: Screened = field(default_factory=Screened)
    spread: UpdateSpread | None = None  # set by close()

    def admit(self, update: ClientUpdate, expect: Expectation, limits: ValidationConfig, where: str) -> None:
        """Check one upload: hold its tensors, or record (and log) why it was rejected."""
        admit(update, expect, limits, self.screened, where)

    def close(self, limits: ValidationConfig, where: str) -> tuple[list[str], dict[str, str]]:
        """Apply the round's norm bound, note their spread, fold the uploads within it into the aggregate
        (dropping them); who passed, and why the rest did not."""
        self.screened = within_round_bound(self.screened, limits, where)
        self.spread = round_spread(self.screened.accepted, self.running.current, self.releases_spread, self.lora_scale)
        for _, state, n in self.screened.accepted:
            self.running.add(state, n)
        accepted = [client for client, _, _ in self.screened.accepted]
        self.screened.accepted = []
        return accepted, self.screened.rejected


def conclude_round(
    current: AdapterState, accepted: list[str], rejected: dict[str, str], aggregate: Callable[[], AdapterState],
    offered: int, limits: ValidationConfig, where: str, spread: UpdateSpread | None = None,
) -> RoundOutcome:
    """``aggregate()`` of the accepted updates, or ``current`` when fewer than ``limits.min_updates`` passed."""
    if len(accepted) < limits.min_updates:
        log.warning(
            "%s: %d of %d updates valid, %d needed (validation.min_updates): keeping the previous global adapter",
            where, len(accepted), offered, limits.min_updates,
        )
        return RoundOutcome(current, accepted, rejected, True, spread)
    return RoundOutcome(aggregate(), accepted, rejected, False, spread)


def server_step(
    strategy: FedAvg, current: AdapterState, updates: Sequence[ClientUpdate], limits: ValidationConfig | None = None
) -> AdapterState:
    """Validate the uploads (rejecting bad ones with a logged reason) and aggregate the rest weighted by n_k."""
    return aggregate_round(strategy, current, updates, limits).state


def client_seed(seed: int, round_idx: int, index: int) -> int:
    """The training seed of the ``index``-th sampled client in a round (shared with the Flower app)."""
    return seed * 7919 + round_idx * 131 + index


def sample_clients(names: Sequence[str], fraction: float, seed: int, round_idx: int) -> list[str]:
    k = max(1, round(fraction * len(names)))
    return sorted(random.Random(seed * 100_003 + round_idx).sample(list(names), k))


@dataclass
class RoundLog:
    round: int
    clients: list[str]
    bytes_up: int
    bytes_down: int
    train_loss: float
    extra: dict = field(default_factory=dict)
    spread: UpdateSpread | None = None  # of the aggregated updates (None: not released, under DP)
    aggregated: int = 0  # how many updates were aggregated


def run_rounds(
    model: PeftModel,
    clients: dict[str, Encoded],
    initial: AdapterState,
    strategy: FedAvg,
    *,
    rounds: int,
    fraction: float,
    budget: Budget,
    seed: int,
    start_round: int = 1,
    limits: ValidationConfig | None = None,
    on_round: Callable[[RoundLog, AdapterState], None] | None = None,
    progress: Callable | None = None,
    recipe: FedIT = FEDIT,
    kept: dict[str, AdapterState] | None = None,
    payload_dtype: str = "fp32",
    residuals: dict[str, AdapterState] | None = None,
) -> AdapterState:
    """FedAvg rounds ``start_round..rounds`` from ``initial``; bytes are the lengths of the payloads that cross
    the wire (rejected uploads included). A round depends only on ``seed``, its index, the state it starts
    from and the global RNG states, so a run resumed from a checkpoint of round r (which restores them)
    continues exactly as the uninterrupted one. Each upload is checked as it arrives and its tensors held; once
    the round's norm bound is applied they are folded into the running aggregate (weights over the sampled
    clients' sizes, rescaled when some are rejected) and dropped.

    ``recipe`` says what is trained and what travels; ``initial`` holds what travels and ``kept`` (client →
    tensors) what stays on each client, updated in place after each of its rounds, as is ``residuals`` (client →
    the quantization error of its last int8 upload, error feedback's memory). Both directions travel in
    ``payload_dtype`` (which validation then accepts; int8: uploads only, the global adapter goes down in fp32);
    aggregation is in fp32."""
    state, limits = initial, screening(limits or ValidationConfig(), strategy, payload_dtype, say=True)
    kept = {} if kept is None else kept
    residuals = {} if residuals is None else residuals
    for r in range(start_round, rounds + 1):
        chosen = sample_clients(list(clients), fraction, seed, r)
        down = serialize(state, payload_dtype)
        expect, sent = Expectation.of(state), []
        tally = Tally(
            strategy.start(state, sum(len(clients[name]) for name in chosen)), strategy.releases_spread, lora_scale(model)
        )
        for i, name in enumerate(progress(chosen, desc=f"round {r}/{rounds}") if progress else chosen):
            update = client_step(
                model, name, down, clients[name], budget, client_seed(seed, r, i), payload_dtype,
                recipe=recipe, kept=kept.get(name), residual=residuals.get(name),
            )
            if update.kept:
                kept[name] = update.kept
            if update.residual:
                residuals[name] = update.residual
            tally.admit(update, expect, limits, f"round {r}")  # the payload is dropped once checked
            sent.append(Sent(update.client, update.n, update.train_loss, len(update.payload)))
        accepted, rejected = tally.close(limits, f"round {r}")
        outcome = conclude_round(
            state, accepted, rejected, tally.running.result, len(chosen), limits, f"round {r}", tally.spread
        )
        state = outcome.state
        if on_round:
            on_round(_round_log(r, chosen, down, sent, outcome), state)
    return state


def screening(limits: ValidationConfig, strategy: FedAvg, dtype: str, say: bool = False) -> ValidationConfig:
    """``limits`` as ``strategy`` may screen with: the wire dtype added to the dtypes an update may use, and
    ``max_norm_ratio`` off where the strategy forbids bounds relative to the other uploads (client-level DP;
    ``say``: log why)."""
    if dtype not in limits.dtypes:
        limits = dataclasses.replace(limits, dtypes=[*limits.dtypes, dtype])
    if strategy.relative_bound or limits.max_norm_ratio is None:
        return limits
    if say:
        log.info("client-level DP: validation.max_norm_ratio is off (a bound relative to the round's other uploads "
                 "would let one client change which others are dropped); clipping bounds every update")
    return dataclasses.replace(limits, max_norm_ratio=None)


@dataclass(frozen=True)
class Sent:
    """What the round log keeps of an upload once it has been checked."""

    client: str
    n: int
    train_loss: float
    nbytes: int


def _round_log(r: int, chosen: list[str], down: bytes, sent: list[Sent], outcome: RoundOutcome) -> RoundLog:
    """Bytes of every payload; the training loss of the accepted updates; rejections when there were any."""
    kept = [u for u in sent if u.client in outcome.accepted]
    extra: dict = {"rejected": outcome.rejected} if outcome.rejected else {}
    if outcome.kept_previous:
        extra["kept_previous"] = True
    return RoundLog(
        r, chosen, sum(u.nbytes for u in sent), len(down) * len(chosen),
        sum(u.train_loss * u.n for u in kept) / max(1, sum(u.n for u in kept)), extra, outcome.spread,
        len(outcome.accepted),
    )
