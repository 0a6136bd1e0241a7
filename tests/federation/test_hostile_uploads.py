"""Hostile uploads by the hundred: malformed bytes, safetensors headers, shapes, dtypes, NaN/inf, huge norms,
example counts and losses, at the core's validation and at the Flower server's reply parsing.

Every hostile update is rejected with a one-line reason naming its client (or, in Flower, logged as a fault
of its node), never an exception; the round aggregates exactly the honest updates (FedAvg of them alone).
"""

from __future__ import annotations

import json
import logging
import math
import struct

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from hostile import assert_clear, hostile
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save as st_save

from potara.config import RunConfig, ValidationConfig
from potara.federation.rounds import aggregate_round
from potara.federation.strategies import FedAvg
from potara.federation.update import ClientUpdate
from potara.federation.validation import screen
from potara.flower.client_app import ROWS_KEY
from potara.flower.settings import FlowerSettings
from potara.flower.strategy import ClientInfo, PotaraFedAvg
from potara.flower.wire import FED_KEY, payload_bytes, to_record
from potara.methods import resolve
from potara.models.adapters import serialize

KEYS = {"q.lora_A.weight": (2, 8), "q.lora_B.weight": (8, 2), "classifier.weight": (3, 8)}
LIMITS = ValidationConfig()
SAFETENSORS_DTYPES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "C64", "XX"]


def state(seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: scale * torch.randn(shape, generator=gen) for k, shape in KEYS.items()}


CURRENT = state(0)
GOOD = serialize(CURRENT)


def honest_state(seed: int) -> dict[str, torch.Tensor]:
    """The global state after a small honest step."""
    return {k: v + 0.01 * d for (k, v), d in zip(CURRENT.items(), state(seed).values())}


# --- hostile payloads -------------------------------------------------------------------------------------


def header_blob(header: dict, data: bytes) -> bytes:
    """Safetensors framing (little-endian header length, JSON header, data) around anything."""
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@st.composite
def forged_headers(draw) -> bytes:
    """A safetensors blob whose header lies: any dtype, shape (negative, huge) and offsets, any data after it."""
    entries = draw(st.dictionaries(
        st.sampled_from([*KEYS, "__metadata__", "x"]) | st.text(max_size=8),
        st.fixed_dictionaries({
            "dtype": st.sampled_from(SAFETENSORS_DTYPES),
            "shape": st.lists(st.integers(-2, 2**40), max_size=3),
            "data_offsets": st.lists(st.integers(-1, 2**40), min_size=2, max_size=2),
        }),
        max_size=4,
    ))
    return header_blob(entries, draw(st.binary(max_size=256)))


@st.composite
def corrupted_bytes(draw) -> bytes:
    """A valid payload with some bytes overwritten (header or data)."""
    blob = bytearray(GOOD)
    for index, value in draw(st.lists(st.tuples(st.integers(0, len(blob) - 1), st.integers(0, 255)), max_size=8)):
        blob[index] = value
    return bytes(blob)


def sent_as(tensors: dict[str, torch.Tensor]) -> bytes:
    return st_save({k: v.contiguous() for k, v in tensors.items()})


@st.composite
def non_finite(draw) -> bytes:
    tensors = {k: v.clone() for k, v in CURRENT.items()}
    key = draw(st.sampled_from(sorted(KEYS)))
    flat = tensors[key].view(-1)
    flat[draw(st.integers(0, flat.numel() - 1))] = draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
    return sent_as(tensors)


@st.composite
def wrong_shape(draw) -> bytes:
    key = draw(st.sampled_from(sorted(KEYS)))
    shape = draw(st.lists(st.integers(0, 9), min_size=1, max_size=3).map(tuple).filter(lambda s: s != KEYS[key]))
    return sent_as({**CURRENT, key: torch.zeros(shape)})


@st.composite
def missing_tensor(draw) -> bytes:
    gone = draw(st.sampled_from(sorted(KEYS)))
    return sent_as({k: v for k, v in CURRENT.items() if k != gone})


@st.composite
def extra_tensor(draw) -> bytes:
    name = draw(st.text(min_size=1, max_size=20).filter(lambda n: n not in KEYS))
    return sent_as({**CURRENT, name: torch.zeros(draw(st.integers(1, 64)))})


@st.composite
def wrong_dtype(draw) -> bytes:
    dtype = draw(st.sampled_from([torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.int32, torch.uint8,
                                  torch.bool, torch.float8_e4m3fn]))
    return sent_as({k: v.to(dtype) for k, v in CURRENT.items()})


@st.composite
def huge_norm(draw) -> bytes:
    factor = draw(st.floats(20.0, 1e38))  # beyond validation.max_norm_ratio (10x), up to float32 overflow
    return sent_as({k: v * factor for k, v in CURRENT.items()})


GARBAGE = st.binary(max_size=512)
TRUNCATED = st.integers(0, len(GOOD) - 1).map(lambda cut: GOOD[:cut])
INVALID_ALONE = st.one_of(  # each fails a per-upload check, whatever else the round holds
    GARBAGE, TRUNCATED, non_finite(), wrong_shape(), missing_tensor(), extra_tensor(), wrong_dtype()
)
ANY_PAYLOAD = st.one_of(INVALID_ALONE, huge_norm(), forged_headers(), corrupted_bytes())
BAD_COUNTS = st.one_of(
    st.integers(max_value=0), st.integers(min_value=2**53 + 1), st.booleans(), st.floats(), st.text(max_size=5),
    st.none(),
)
BAD_LOSSES = st.one_of(st.sampled_from([float("nan"), float("inf"), float("-inf")]), st.text(max_size=5), st.none())


@st.composite
def invalid_updates(draw, name: str) -> ClientUpdate:
    """An update that must be rejected: a bad payload, or a good one with a bad example count or loss."""
    kind = draw(st.sampled_from(["payload", "count", "loss"]))
    payload = draw(INVALID_ALONE) if kind == "payload" else serialize(honest_state(7))
    n = draw(BAD_COUNTS) if kind == "count" else 10
    loss = draw(BAD_LOSSES) if kind == "loss" else 0.5
    return ClientUpdate(name, payload, n, loss)


# --- the core's validation ----------------------------------------------------------------------------------


@hostile(500)
@given(payload=ANY_PAYLOAD, n=st.one_of(st.integers(1, 1000), BAD_COUNTS))
def test_any_upload_is_accepted_whole_or_rejected_with_a_one_line_reason(payload, n, caplog):
    with caplog.at_level(logging.WARNING, logger="potara.federation.validation"):
        caplog.clear()
        screened = screen([ClientUpdate("mallory", payload, n, 0.5)], CURRENT, LIMITS, "round 1")
    if screened.rejected:
        assert_clear(screened.rejected["mallory"])
        assert "round 1: update from client mallory rejected: " in caplog.text
        return
    [(_, accepted, _)] = screened.accepted
    assert {k: tuple(v.shape) for k, v in accepted.items()} == KEYS
    assert all(v.dtype == torch.float32 and bool(torch.isfinite(v).all()) for v in accepted.values())


def fedavg(states: list[dict[str, torch.Tensor]], counts: list[int]) -> dict[str, torch.Tensor]:
    total = sum(counts)
    return {k: sum(s[k] * (n / total) for s, n in zip(states, counts)) for k in KEYS}


@hostile(250)
@given(data=st.data(), honest_counts=st.lists(st.integers(1, 500), min_size=1, max_size=4), hostile_count=st.integers(1, 4))
def test_a_round_with_hostile_uploads_aggregates_exactly_the_honest_ones(data, honest_counts, hostile_count):
    """Invalid uploads, and inflated ones (a huge norm; validation.max_norm_ratio bounds an upload by the round's
    median norm, so as many as there are honest uploads, not more)."""
    honest = [ClientUpdate(f"honest_{i}", serialize(honest_state(i + 1)), n, 0.5) for i, n in enumerate(honest_counts)]
    bad = [data.draw(invalid_updates(f"hostile_{i}")) for i in range(hostile_count)]
    inflated = data.draw(st.integers(0, len(honest_counts)))
    bad += [ClientUpdate(f"hostile_norm_{i}", data.draw(huge_norm()), 10, 0.5) for i in range(inflated)]
    updates = data.draw(st.permutations(honest + bad))
    outcome = aggregate_round(FedAvg(), CURRENT, updates, LIMITS, "round 2")
    assert outcome.accepted == [u.client for u in updates if u.client.startswith("honest")]
    assert sorted(outcome.rejected) == sorted(u.client for u in bad)
    for reason in outcome.rejected.values():
        assert_clear(reason)
    in_order = [u for u in updates if u.client.startswith("honest")]
    expected = fedavg([honest_state(int(u.client.split("_")[1]) + 1) for u in in_order], [u.n for u in in_order])
    for key in KEYS:
        torch.testing.assert_close(outcome.state[key], expected[key])


# --- the Flower server's replies ----------------------------------------------------------------------------

NODES = {10 + i: f"client_{i:02d}" for i in range(4)}


@pytest.fixture(autouse=True, scope="module")
def server_identity():
    """Messages are created as by a ServerApp (run 1, node 1)."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1


class Connected:
    """The part of a Grid the strategy asks: which nodes are connected."""

    def get_node_ids(self) -> list[int]:
        return list(NODES)


def strategy_with_sent(phase: str) -> tuple[PotaraFedAvg, list[Message]]:
    """A strategy that has just sent ``phase`` to every node, and the messages it sent (with ids, as a grid sets)."""
    clients = [ClientInfo(name, node, i, 20) for i, (node, name) in enumerate(NODES.items())]
    strategy = PotaraFedAvg(FlowerSettings(run=RunConfig(), evaluate_every=1), clients, CURRENT)
    arrays, config = to_record(CURRENT), ConfigRecord({})
    sent = {
        "train": lambda: strategy.configure_train(1, arrays, config, Connected()),
        "evaluate": lambda: strategy.configure_evaluate(1, arrays, config, Connected()),
        "personalize": lambda: strategy.configure_personalize(arrays, Connected()),
    }[phase]()
    sent = list(sent)
    for msg in sent:
        msg.metadata.__dict__["_message_id"] = msg.object_id
    return strategy, sent


def reply(to: Message, content: dict) -> Message:
    return Message(content=RecordDict(content), reply_to=to)


def numpy_arrays() -> st.SearchStrategy[np.ndarray]:
    """Arrays of any common dtype but float32, or float32 of the wrong shape or with non-finite values."""
    wrong_dtype_ = st.tuples(
        st.sampled_from([np.float64, np.float16, np.int64, np.int8, np.uint32, np.bool_, np.complex64]),
        st.sampled_from(list(KEYS.values())),
    ).map(lambda t: np.ones(t[1], dtype=t[0]))
    wrong_shape_ = st.lists(st.integers(0, 5), max_size=3).map(lambda s: np.zeros(s, dtype=np.float32))
    return wrong_dtype_ | wrong_shape_


@st.composite
def garbage_arrays(draw) -> Array:
    return Array(
        dtype=draw(st.sampled_from(["float32", "float64", "object", ""])),
        shape=tuple(draw(st.lists(st.integers(0, 10), max_size=3))),
        stype=draw(st.sampled_from(["numpy.ndarray", "torch.Tensor", ""])),
        data=draw(st.binary(max_size=128)),
    )


@st.composite
def hostile_fed_records(draw):
    """What a hostile node may put where the federated adapter goes."""
    kind = draw(st.sampled_from(["arrays", "garbage", "nan", "other record"]))
    if kind == "arrays":
        key = draw(st.sampled_from(sorted(KEYS)))
        return ArrayRecord({**{k: Array(v.numpy()) for k, v in CURRENT.items()}, key: Array(draw(numpy_arrays()))})
    if kind == "garbage":
        return ArrayRecord({draw(st.sampled_from(sorted(KEYS))): draw(garbage_arrays())})
    if kind == "nan":
        return to_record({k: torch.full_like(v, float("nan")) for k, v in CURRENT.items()})
    return draw(st.sampled_from([MetricRecord({"a": 1.0}), ConfigRecord({"fed": "x"})]))


def not_a_count(x: float) -> bool:
    return not (math.isfinite(x) and 1 <= int(x) <= 2**53)


BAD_METRIC_COUNTS = st.one_of(
    st.integers(-(2**63), 0), st.integers(2**53 + 1, 2**63 - 1), st.floats().filter(not_a_count)
)


@st.composite
def hostile_train_replies(draw) -> dict:
    """A train reply with a bad adapter, bad metrics, or records missing."""
    good_metrics = MetricRecord({"num-examples": 20, "train-loss": 0.5})
    kind = draw(st.sampled_from(["adapter", "metrics", "missing"]))
    if kind == "adapter":
        return {FED_KEY: draw(hostile_fed_records()), "metrics": good_metrics}
    if kind == "metrics":
        count = draw(BAD_METRIC_COUNTS)
        metrics = draw(st.sampled_from([
            MetricRecord({"num-examples": count, "train-loss": 0.5}),
            MetricRecord({"num-examples": 20, "train-loss": draw(st.sampled_from([float("nan"), float("inf")]))}),
            ConfigRecord({"num-examples": draw(st.text(max_size=5)), "train-loss": "x"}),
            MetricRecord({"train-loss": 0.5}),
        ]))
        return {FED_KEY: to_record(honest_state(9)), "metrics": metrics}
    return draw(st.sampled_from([{}, {FED_KEY: to_record(honest_state(9))}, {"metrics": good_metrics}]))


@hostile(150)
@given(data=st.data(), hostile_nodes=st.sets(st.sampled_from(sorted(NODES)), min_size=1, max_size=3))
def test_hostile_train_replies_are_faults_and_the_round_aggregates_the_honest_ones(data, hostile_nodes):
    strategy, sent = strategy_with_sent("train")
    replies = []
    for msg in sent:
        node = msg.metadata.dst_node_id
        honest = {FED_KEY: to_record(honest_state(node)), "metrics": MetricRecord({"num-examples": node, "train-loss": 0.5})}
        replies.append(reply(msg, data.draw(hostile_train_replies()) if node in hostile_nodes else honest))
    sizes = [payload_bytes(r) for r in replies]  # the grid meters every reply, malformed or not, without raising
    assert all(size > 0 for size, msg in zip(sizes, sent) if msg.metadata.dst_node_id not in hostile_nodes)
    arrays, _ = strategy.aggregate_train(1, replies)
    honest_nodes = [node for node in NODES if node not in hostile_nodes]
    assert strategy.rounds[-1]["aggregated"] == [NODES[n] for n in honest_nodes]
    assert {f["node_id"] for f in strategy.faults} == hostile_nodes
    for fault in strategy.faults:
        assert fault["kind"] in ("invalid", "rejected")
        assert_clear(fault["reason"])
    expected = fedavg([honest_state(n) for n in honest_nodes], honest_nodes)
    for key, value in arrays.to_torch_state_dict().items():
        torch.testing.assert_close(value, expected[key])


BAD_ACCURACIES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not 0 <= x <= 1), st.integers(2, 10**6)
)


@st.composite
def hostile_evaluate_replies(draw) -> dict:
    return draw(st.sampled_from([
        {},
        {"metrics": MetricRecord({"fedit-acc": draw(BAD_ACCURACIES)})},
        {"metrics": ConfigRecord({"fedit-acc": draw(st.text(max_size=5))})},
        {"metrics": MetricRecord({"num-examples": 3})},
    ]))


@hostile(100)
@given(data=st.data(), hostile_nodes=st.sets(st.sampled_from(sorted(NODES)), min_size=1, max_size=4))
def test_hostile_evaluate_replies_are_faults_and_the_mean_is_over_the_honest_ones(data, hostile_nodes):
    strategy, sent = strategy_with_sent("evaluate")
    strategy.rounds.append({"round": 1})
    replies = [
        reply(msg, data.draw(hostile_evaluate_replies()) if msg.metadata.dst_node_id in hostile_nodes
              else {"metrics": MetricRecord({"fedit-acc": 0.25})})
        for msg in sent
    ]
    mean = strategy.aggregate_evaluate(1, replies)
    assert {f["node_id"] for f in strategy.faults} == hostile_nodes
    if len(hostile_nodes) == len(NODES):
        assert mean is None and "fedit_mean_acc" not in strategy.rounds[-1]
    else:
        assert strategy.rounds[-1]["fedit_mean_acc"] == 0.25
        assert sorted(strategy.rounds[-1]["fedit_acc"]) == sorted(NODES[n] for n in NODES if n not in hostile_nodes)


METHODS = [m.name for m in resolve(RunConfig())]


def rows_of(client: str) -> dict[str, dict]:
    return {m: {"client": client, "acc": 0.5} for m in METHODS}


@st.composite
def hostile_reports(draw, client: str) -> dict:
    """A personalize reply whose rows are not JSON, lack a method, speak for another client, or lie about accuracy."""
    rows = rows_of(client)
    method = draw(st.sampled_from(METHODS))
    text = draw(st.sampled_from([
        draw(st.text(max_size=30)).replace("{", ""),  # never a JSON object
        json.dumps({k: v for k, v in rows.items() if k != method}),
        json.dumps({**rows, method: {"client": "client_99", "acc": 0.5}}),
        json.dumps({**rows, method: {"client": client, "acc": draw(st.floats().filter(lambda x: not 0 <= x <= 1))}}),
        json.dumps({**rows, method: draw(st.sampled_from([[], "row", None, 3]))}),
        json.dumps(draw(st.sampled_from([[], "rows", None, 3]))),
    ]))
    return {"report": ConfigRecord({ROWS_KEY: text}), "metrics": MetricRecord({})}


@hostile(100)
@given(data=st.data(), hostile_nodes=st.sets(st.sampled_from(sorted(NODES)), min_size=1, max_size=4))
def test_hostile_personalize_reports_are_faults_and_the_honest_ones_are_kept(data, hostile_nodes):
    strategy, sent = strategy_with_sent("personalize")
    replies = []
    for msg in sent:
        node = msg.metadata.dst_node_id
        honest = {"report": ConfigRecord({ROWS_KEY: json.dumps(rows_of(NODES[node]))}), "metrics": MetricRecord({})}
        replies.append(reply(msg, data.draw(hostile_reports(NODES[node])) if node in hostile_nodes else honest))
    personal = strategy.aggregate_personalize(replies)
    assert sorted(personal) == sorted(NODES[n] for n in NODES if n not in hostile_nodes)
    assert {f["node_id"] for f in strategy.faults} == hostile_nodes
    for fault in strategy.faults:
        assert_clear(fault["reason"])
