"""Every client update is checked before aggregation: size, format, names, shapes, dtype, finiteness, norm.

A failing update is rejected with a logged reason naming the client; the caller aggregates the rest.
The norm bound is absolute (``max_norm``, per upload) and/or relative to the round (``max_norm_ratio``): an
upload whose L2 norm exceeds ``ratio ×`` the median norm of the round's uploads that passed the per-upload
checks is rejected. Not the global adapter's norm: a LoRA adapter starts with ``B = 0``, so at round 1 that norm
is only the ``A`` factors' (or nothing, for a recipe that sends ``B`` alone) and honest updates exceed it many
times. The median is the lower median (for two uploads, the smaller), so it is an honest upload's norm whenever
at most half of the round's uploads are inflated; a round of one upload cannot bound it.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..config import ValidationConfig
from ..merge.taskvec import AdapterState
from ..models.adapters import WIRE_DTYPES, decoded, int8_parts, parse_payload, serialize
from .update import ClientUpdate

log = logging.getLogger(__name__)
Fail = Callable[[str], "InvalidUpdate"]
MAX_EXAMPLES = 2**53  # the largest count a float holds exactly (FedAvg weights and mean losses are floats)


class InvalidUpdate(ValueError):
    """One client's update failed a check; ``reason`` says which."""

    def __init__(self, client: str, reason: str) -> None:
        super().__init__(f"update from client {client} rejected: {reason}")
        self.client, self.reason = client, reason


@dataclass(frozen=True)
class Expectation:
    """What a valid update looks like, taken from the global adapter the clients trained from."""

    shapes: dict[str, tuple[int, ...]]
    payload_bytes: int
    reference: AdapterState = field(default_factory=dict, compare=False, repr=False)  # what int8 updates add to

    @classmethod
    def of(cls, state: AdapterState) -> Expectation:
        """Names, shapes and payload size of ``state``."""
        return cls({k: tuple(v.shape) for k, v in state.items()}, len(serialize(state)), state)


@dataclass
class Screened:
    """The updates that passed (name, tensors as float32, n) and the reasons for the rest."""

    accepted: list[tuple[str, AdapterState, int]] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)


def l2_norm(state: AdapterState) -> float:
    """The L2 norm of all tensors of an adapter state together."""
    return math.sqrt(sum(float(v.double().pow(2).sum()) for v in state.values()))


def payload_limit(expect: Expectation, limits: ValidationConfig) -> int:
    """``limits.max_payload_bytes``, or twice the global adapter's payload when unset."""
    return limits.max_payload_bytes if limits.max_payload_bytes else 2 * expect.payload_bytes


def check_update(update: ClientUpdate, expect: Expectation, limits: ValidationConfig) -> AdapterState:
    """The update's tensors as float32, or :class:`InvalidUpdate` with the first failed per-upload check (the
    round's norm bound is :func:`within_round_bound`'s)."""
    fail = lambda reason: InvalidUpdate(update.client, reason)
    limit = payload_limit(expect, limits)
    if len(update.payload) > limit:
        raise fail(f"payload of {len(update.payload):,} bytes exceeds the limit of {limit:,} bytes")
    if not isinstance(update.n, int) or isinstance(update.n, bool) or not 1 <= update.n <= MAX_EXAMPLES:
        raise fail(f"example count must be an integer from 1 to 2**53, got {update.n!r}")
    if not isinstance(update.train_loss, (int, float)) or not math.isfinite(update.train_loss):
        raise fail(f"training loss must be a finite number, got {update.train_loss!r}")
    try:
        raw, scales = int8_parts(parse_payload(update.payload))
    except ValueError as err:
        raise fail(f"payload is {err}") from err
    _check_names(raw, expect, fail)
    _check_tensors(raw, expect, limits, fail)
    state = decoded(raw, scales, expect.reference)
    _check_norm(state, limits, fail)
    return state


def _check_names(raw: AdapterState, expect: Expectation, fail: Fail) -> None:
    missing = sorted(set(expect.shapes) - set(raw))
    unexpected = sorted(set(raw) - set(expect.shapes))
    if missing:
        raise fail(f"{len(missing)} tensor(s) missing, e.g. {missing[0]!r}")
    if unexpected:
        raise fail(f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[0]!r}")


def _check_tensors(raw: AdapterState, expect: Expectation, limits: ValidationConfig, fail: Fail) -> None:
    allowed = {WIRE_DTYPES[d] for d in limits.dtypes}
    for key in sorted(raw):
        tensor = raw[key]
        if tuple(tensor.shape) != expect.shapes[key]:
            raise fail(f"tensor {key!r} has shape {tuple(tensor.shape)}, expected {expect.shapes[key]}")
        if tensor.dtype not in allowed:
            raise fail(f"tensor {key!r} has dtype {tensor.dtype}, allowed: {', '.join(limits.dtypes)}")
        if not bool(torch.isfinite(tensor).all()):
            raise fail(f"tensor {key!r} has non-finite values (NaN or inf)")


def _check_norm(state: AdapterState, limits: ValidationConfig, fail: Fail) -> None:
    if limits.max_norm is None:  # the round's bound computes its norms itself: none here when this one is off
        return
    norm = l2_norm(state)
    if norm > limits.max_norm:
        raise fail(f"L2 norm {norm:.4g} exceeds validation.max_norm={limits.max_norm:.4g}")


def within_round_bound(screened: Screened, limits: ValidationConfig, where: str) -> Screened:
    """``screened`` less the uploads whose L2 norm exceeds ``max_norm_ratio ×`` the lower median norm of its
    accepted ones (their reasons joining the rejected, and the log); all of them when the ratio is off or the
    median is 0."""
    if limits.max_norm_ratio is None or not screened.accepted:
        return screened
    norms = [l2_norm(state) for _, state, _ in screened.accepted]
    median = statistics.median_low(norms)
    if median <= 0:
        return screened
    out = Screened(rejected=dict(screened.rejected))
    for (client, state, n), norm in zip(screened.accepted, norms):
        if norm <= limits.max_norm_ratio * median:
            out.accepted.append((client, state, n))
            continue
        err = InvalidUpdate(client, (
            f"L2 norm {norm:.4g} exceeds {limits.max_norm_ratio:g}× the median norm {median:.4g} of the round's "
            "uploads (validation.max_norm_ratio)"
        ))
        out.rejected[client] = err.reason
        log.warning("%s: %s", where, err)
    return out


def admit(update: ClientUpdate, expect: Expectation, limits: ValidationConfig, into: Screened, where: str) -> None:
    """Check one update: its tensors join ``into.accepted``, or its reason ``into.rejected`` (and the log)."""
    state = passed(update, expect, limits, into.rejected, where)
    if state is not None:
        into.accepted.append((update.client, state, update.n))


def passed(
    update: ClientUpdate, expect: Expectation, limits: ValidationConfig, rejected: dict[str, str], where: str
) -> AdapterState | None:
    """The update's tensors as float32 when it passes every check; else None, its reason in ``rejected`` and the log."""
    try:
        return check_update(update, expect, limits)
    except InvalidUpdate as err:
        rejected[update.client] = err.reason
        log.warning("%s: %s", where, err)
        return None


def screen(
    updates: Sequence[ClientUpdate], current: AdapterState, limits: ValidationConfig, where: str = "round"
) -> Screened:
    """Check every update against ``current``, then the round's norm bound; log each rejection with its reason
    and the client's name."""
    expect, out = Expectation.of(current), Screened()
    for update in updates:
        admit(update, expect, limits, out, where)
    return within_round_bound(out, limits, where)
