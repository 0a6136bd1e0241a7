"""The Flower apps in one process (a Grid that calls the ClientApp directly): same numbers as the embedded
engine, only the federated adapter reaches the server, bytes from the real Messages, faults."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save_tiny_bert
from flwr.app import Array, ArrayRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from potara import config, engine
from potara.config import ConfigError
from potara.flower.client_app import RESIDUAL_KEY, build_client_app
from potara.flower.grid import MeteredGrid
from potara.flower.node import partition_of
from potara.flower.server_app import run_federation
from potara.flower.settings import from_run_config
from potara.flower.strategy import FederationError
from potara.flower.wire import to_record
from potara.models.adapters import SCALES, deserialize, get_state, serialize
from potara.models.loading import load_peft_classifier
from potara.reporting.results import RunResult

NODE0 = 1000
SERVER = 1


class LocalGrid(Grid):
    """Delivers each Message to the ClientApp of its node in this process; ``lost`` nodes stop after k replies."""

    def __init__(
        self, app: ClientApp, run_config: dict, nodes: int, lost: dict[int, int] | None = None,
        states: dict[int, RecordDict] | None = None, run_id: int = 1,
    ) -> None:
        self.app, self.run_config, self.run_id = app, run_config, run_id
        self.nodes = {NODE0 + i: {"partition-id": i, "num-partitions": nodes} for i in range(nodes)}
        self.lost, self.replies = dict(lost or {}), {n: 0 for n in self.nodes}
        # each node's Context.state lives for the run, as on a SuperNode (``states``: left by an earlier run of its series)
        self.states = states if states is not None else {n: RecordDict() for n in self.nodes}
        self.dtypes: dict[str, set[str]] = {"up": set(), "down": set()}  # of the arrays train messages carry
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, SERVER, 1

    def set_run(self, run) -> None:
        """Nothing to set: one run."""

    @property
    def run(self) -> None:
        return None

    def create_message(self, *args, **kwargs) -> Message:
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return [n for n in self.nodes if not self._gone(n)]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        return [r for r in (self._deliver(m) for m in messages) if r is not None]

    def _note(self, direction: str, content: RecordDict) -> None:
        self.dtypes[direction] |= {a.dtype for r in content.array_records.values() for a in r.values()}

    def _gone(self, node: int) -> bool:
        return node in self.lost and self.replies[node] >= self.lost[node]

    def _deliver(self, msg: Message) -> Message | None:
        node = msg.metadata.dst_node_id
        if self._gone(node):
            return None
        self.replies[node] += 1
        context = Context(run_id=self.run_id, node_id=node, node_config=self.nodes[node], state=self.states[node],
                          run_config=self.run_config)
        msg.metadata.__dict__["_message_id"] = msg.object_id  # as the real grids do when pushing
        TaskIdentity.node_id = node
        sent, msg.content = msg.content, recorddict_from_proto(recorddict_to_proto(msg.content))  # as off the wire:
        try:  # the node's own copy (SecAgg+ mods edit what they receive; the workflow sends one content to all)
            reply = self.app(msg, context)
            if msg.metadata.message_type == "train":
                self._note("down", msg.content)
                self._note("up", reply.content if reply.has_content() else RecordDict())
            return reply
        except Exception as err:  # noqa: BLE001 (what a SuperNode does when its ClientApp raises)
            return Message(Error(code=1, reason=f"ClientApp raised {type(err).__name__}: {err}"), reply_to=msg)
        finally:
            TaskIdentity.node_id, msg.content = SERVER, sent


@pytest.fixture(scope="module")
def nodrop_model(tmp_path_factory) -> Path:
    """The tiny BERT of conftest without dropout: training is then a function of the seeds alone."""
    return save_tiny_bert(
        tmp_path_factory.mktemp("tiny_nodrop"), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )


def potara_overrides(model_dir: Path, csv: Path) -> list[str]:
    """A whole federation in seconds: 3 clients, 2 rounds, tiny model."""
    return [
        f"model.name={model_dir}", f"data.source={csv}", "data.num_clients=3", "data.classes_per_client=2",
        "data.train_sizes=[12,40]", "data.test_size=20", "fed.rounds=2", "local.epochs=2", "model.max_length=16",
        "lora.r=2", "lora.alpha=4", "potara.fisher_max_examples=8", "methods=[fedit,local,potara]",
    ]


def run_local(overrides: list[str], out: Path, lost: dict[int, int] | None = None, mods=(), series=None, **settings):
    """One Flower run in this process; ``series``: (run id, the node states an earlier run left)."""
    run_config = {"overrides": " ".join(overrides), "evaluate-every": 1, **settings}
    run_id, states = series or (1, None)
    grid = MeteredGrid(LocalGrid(build_client_app(mods=mods), run_config, 3, lost, states, run_id))
    summary = run_federation(grid, from_run_config(run_config), out)
    return summary, grid


@pytest.fixture(scope="module")
def overrides(nodrop_model, synthetic_csv) -> list[str]:
    return potara_overrides(nodrop_model, synthetic_csv)


@pytest.fixture(scope="module")
def clean_run(overrides, tmp_path_factory):
    out = tmp_path_factory.mktemp("flower_local")
    summary, grid = run_local(overrides, out)
    return summary, grid, out


def embedded(overrides: list[str]) -> tuple[RunResult, dict]:
    """The embedded engine's result and its final federated adapter (captured from ``run_rounds``)."""
    captured = {}
    original = engine.run_rounds

    def capture(*args, **kwargs):
        captured["state"] = original(*args, **kwargs)
        return captured["state"]

    engine.run_rounds = capture
    try:
        result = engine.run(config.load(None, overrides))
    finally:
        engine.run_rounds = original
    return result, captured["state"]


@pytest.fixture(scope="module")
def embedded_run(overrides) -> tuple[RunResult, dict]:
    return embedded(overrides)


def test_same_adapter_and_lambdas_as_the_embedded_engine(clean_run, embedded_run):
    summary, _, out = clean_run
    result, fed_state = embedded_run
    flower_state = deserialize((out / "federated.safetensors").read_bytes())
    assert set(flower_state) == set(fed_state)
    for key, value in fed_state.items():
        torch.testing.assert_close(flower_state[key], value, rtol=1e-5, atol=1e-6)
    for name in ("potara", "fedit", "local"):
        mine = summary["methods"][name]["per_client"]
        theirs = result.methods[name].per_client
        assert [r["client"] for r in mine] == [r["client"] for r in theirs]
        assert [r["acc"] for r in mine] == pytest.approx([r["acc"] for r in theirs])
        if name == "potara":
            assert [r["lambda"] for r in mine] == pytest.approx([r["lambda"] for r in theirs], abs=1e-6)
    verdicts = {d["verdict"] for m in summary["paired"].values() for d in m.values() if isinstance(d, dict)}
    assert verdicts == {"too few clusters"}  # one federation is one cluster, as the embedded engine says


def test_the_server_receives_only_the_federated_adapter(clean_run, overrides):
    """Every reply, by record and entry name: the only arrays are the federated adapter's tensors in train
    replies; everything else is a whitelisted number or the per-method rows (accuracy, λ)."""
    summary, _, out = clean_run
    cfg = config.load(None, overrides)
    fed_keys = sorted(get_state(load_peft_classifier(cfg.model, cfg.lora, 6, cfg.seed)))
    received = [e for e in map(json.loads, (out / "messages.jsonl").read_text().splitlines()) if e["direction"] == "up"]
    assert len(received) == 3 * 6  # register, 2 × (train + evaluate), personalize; 3 nodes
    allowed = {
        "register": ({}, {"node": ["n-train", "num-labels", "partition-id"]}, {"client": ["name"]}),
        "train": ({"fed": fed_keys}, {"metrics": ["num-examples", "train-loss"]}, {}),
        "evaluate": ({}, {"metrics": ["fedit-acc", "fedit-loss", "num-examples"]}, {}),
    }
    for entry in received:
        records = entry["records"]
        if entry["phase"] == "personalize":
            assert records["arrays"] == {} and records["configs"] == {"report": ["rows"]}
            assert all(k.endswith((".acc", ".lambda", "-s")) or k == "n-train" for k in records["metrics"]["metrics"])
        else:
            assert (records["arrays"], records["metrics"], records["configs"]) == allowed[entry["phase"]]
    for method in summary["methods"].values():
        rows = method["per_client"]  # numbers about the client's own results and compute, never data
        assert all(set(row) <= {"client", "n_train", "acc", "val_acc", "n_test", "correct", "lambda", "cost", "lambda_cost", "note"}
                   for row in rows)


def test_bytes_are_those_of_the_messages(clean_run):
    """Every adapter a Message carries, measured in the core's wire format; Flower's own count beside it."""
    summary, _, out = clean_run
    state = deserialize((out / "federated.safetensors").read_bytes())
    record_bytes, flower_bytes = len(serialize(state)), to_record(state).count_bytes()
    messages = [json.loads(line) for line in (out / "messages.jsonl").read_text().splitlines()]
    train = [e for e in messages if e["phase"] == "train"]
    assert {(e["bytes"], e["array_bytes"]) for e in train} == {(record_bytes, flower_bytes)}
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    for r in rounds:
        assert r["bytes_down"] == r["bytes_up"] == 3 * record_bytes
        assert r["clients"] == ["client_00", "client_01", "client_02"]
    m = summary["methods"]
    personalize_down = summary["flower"]["bytes"]["personalize"]["down"]
    assert personalize_down == 3 * record_bytes
    assert m["potara"]["bytes_up"] == m["fedit"]["bytes_up"] == sum(r["bytes_up"] for r in rounds)
    assert m["potara"]["bytes_down"] == sum(r["bytes_down"] for r in rounds) + personalize_down
    assert m["local"]["bytes_up"] == m["local"]["bytes_down"] == 0


def test_every_round_says_how_long_it_took(clean_run):
    """``seconds`` per round in rounds.jsonl: from the train messages out to the aggregated adapter."""
    summary, _, out = clean_run
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert len(rounds) == 2 and all(0 < r["seconds"] < summary["timing"]["federation_s"] for r in rounds)


def test_embedded_and_flower_count_the_same_bytes(clean_run, embedded_run):
    """One run, both engines: the same bytes up and down for every method, the final broadcast (Flower's
    personalize messages) included in both."""
    summary, _, _ = clean_run
    result, _ = embedded_run
    for name, method in result.methods.items():
        flower = summary["methods"][name]
        assert (flower["bytes_up"], flower["bytes_down"]) == (method.bytes_up, method.bytes_down), name
    last = result.rounds[-1]
    assert summary["flower"]["bytes"]["personalize"]["down"] == last["broadcast_bytes"] > 0
    assert result.methods["fedit"].bytes_down == last["cum_bytes_down"] + last["broadcast_bytes"]


def test_a_clientapp_that_raises_or_sends_nan_is_reported_and_the_round_goes_on(overrides, tmp_path):
    """Client 1 raises in round 1; client 2 uploads NaN in round 2: each round aggregates the others and
    names the client, its node and the reason."""

    def faults(msg: Message, context: Context, call_next: Callable) -> Message:
        round_ = msg.content.config_records["config"]["server-round"] if "config" in msg.content else 0
        partition = context.node_config["partition-id"]
        if msg.metadata.message_type == "train" and (partition, round_) == (1, 1):
            raise RuntimeError("disk full on client 1")
        reply = call_next(msg, context)
        if msg.metadata.message_type == "train" and (partition, round_) == (2, 2):
            first = next(iter(reply.content["fed"]))
            reply.content["fed"][first] = Array(torch.full((2, 2), float("nan")))
        return reply

    summary, _ = run_local(overrides, tmp_path, mods=[faults], **{"min-train-nodes": 2})
    rounds = [json.loads(line) for line in (tmp_path / "rounds.jsonl").read_text().splitlines()]
    assert rounds[0]["aggregated"] == ["client_00", "client_02"]
    [error] = rounds[0]["errors"]
    assert error["client"] == "client_01" and error["node_id"] == NODE0 + 1
    assert "disk full on client 1" in error["reason"]
    assert rounds[1]["aggregated"] == ["client_00", "client_01"]
    [rejected] = rounds[1]["errors"]
    assert rejected["client"] == "client_02" and rejected["node_id"] == NODE0 + 2 and rejected["reason"]
    assert summary["methods"]["potara"]["missing"] == []
    assert len(summary["methods"]["potara"]["per_client"]) == 3


def test_a_lost_node_is_missing_not_zero(overrides, tmp_path):
    # node 2 answers register, round-1 train and evaluate, then is gone
    summary, _ = run_local(overrides, tmp_path, lost={NODE0 + 2: 3}, **{"min-train-nodes": 2})
    rounds = [json.loads(line) for line in (tmp_path / "rounds.jsonl").read_text().splitlines()]
    assert rounds[0]["aggregated"] == ["client_00", "client_01", "client_02"]
    assert rounds[1]["clients"] == rounds[1]["aggregated"] == ["client_00", "client_01"]
    potara = summary["methods"]["potara"]
    assert potara["missing"] == ["client_02"] and summary["flower"]["missing"] == ["client_02"]
    assert [r["client"] for r in potara["per_client"]] == ["client_00", "client_01"]
    assert potara["mean_acc"] == pytest.approx(sum(r["acc"] for r in potara["per_client"]) / 2)


def test_too_few_updates_stop_the_run_with_a_clear_error(overrides, tmp_path):
    with pytest.raises(FederationError, match="fewer than min-train-nodes=3"):
        run_local(overrides, tmp_path, lost={NODE0 + 2: 1}, **{"min-train-nodes": 3})


def test_unknown_flower_setting_is_an_error():
    with pytest.raises(ConfigError, match="unknown Flower setting 'rounds'"):
        from_run_config({"rounds": 3})


@pytest.mark.parametrize(("values", "message"), [
    ({"min-train-nodes": 0}, "min-train-nodes must be >= 1, got 0"),
    ({"min-train-nodes": 3, "overrides": "data.num_clients=4 fed.fraction=0.5"},
     "min-train-nodes=3 exceeds the 2 clients sampled a round"),
    ({"wait-nodes-timeout": 0}, "wait-nodes-timeout must be > 0 seconds, got 0"),
    ({"evaluate-every": -1}, "evaluate-every must be >= 0, got -1"),
    ({"overrides": "methods=[fedit] data.eval_clients=2"}, "data.eval_clients .* is the embedded engine's"),
])
def test_flower_settings_that_cannot_run_are_one_line_errors_naming_the_key(values, message):
    with pytest.raises(ConfigError, match=message) as err:
        from_run_config(values)
    assert "\n" not in str(err.value)


def test_a_partition_id_that_is_not_a_number_is_an_error_naming_it():
    with pytest.raises(ConfigError, match=r"partition-id must be an integer, got 'two'"):
        partition_of({"partition-id": "two"}, config.RunConfig())


def test_flower_merges_in_factor_space_with_the_paper_estimator_as_the_embedded_engine(overrides, tmp_path):
    """``potara.merge_space=factors`` and ``potara.estimator=paper`` reach the ClientApp's personalize unchanged."""
    factors = [*overrides[:-1], "methods=[fedit,fixed,potara]", "potara.merge_space=factors", "potara.estimator=paper"]
    summary, _ = run_local(factors, tmp_path / "flower")
    result, _ = embedded(factors)
    for name in ("fixed", "potara"):
        mine, theirs = summary["methods"][name]["per_client"], result.methods[name].per_client
        assert [r["acc"] for r in mine] == pytest.approx([r["acc"] for r in theirs])
        assert [r["lambda"] for r in mine] == pytest.approx([r["lambda"] for r in theirs], abs=1e-6)


def test_flower_sends_the_update_spread_and_gives_the_embedded_engines_spread_lambdas(overrides, tmp_path):
    """``potara_spread`` (both scales): every round's ``update_spread`` and the clients' λ equal the embedded engine's,
    the spread reaches every client with the final adapter (no fallback note) and both engines count its bytes."""
    methods = "methods=[fedit,potara_spread,potara_spread@potara.spread_scale=client]"
    sets = [*overrides[:-1], methods]
    summary, _ = run_local(sets, tmp_path / "flower")
    result, _ = embedded(sets)
    mine = [json.loads(line) for line in (tmp_path / "flower" / "rounds.jsonl").read_text().splitlines()]
    assert [r["update_count"] for r in mine] == [r["update_count"] for r in result.rounds] == [3, 3]
    assert [r["update_spread"] for r in mine] == pytest.approx([r["update_spread"] for r in result.rounds], rel=1e-5)
    for name in ("potara_spread", "potara_spread@potara.spread_scale=client"):
        rows, theirs = summary["methods"][name]["per_client"], result.methods[name].per_client
        assert [r["lambda"] for r in rows] == pytest.approx([r["lambda"] for r in theirs], abs=1e-6)
        assert all("used heldout" not in r.get("note", "") for r in rows)
        assert summary["methods"][name]["bytes_down"] == result.methods[name].bytes_down
    assert summary["flower"]["bytes"]["personalize"]["down"] == result.rounds[-1]["broadcast_bytes"]
@pytest.fixture(scope="module", params=["fp16", "bf16", "int8"])
def compressed(request, overrides, tmp_path_factory):
    """One run in each engine with ``fed.payload_dtype`` compressed: (dtype, Flower's summary, grid, out dir,
    the embedded engine's result and final federated adapter)."""
    dtype = request.param
    sets = [*overrides, f"fed.payload_dtype={dtype}"]
    out = tmp_path_factory.mktemp(f"flower_{dtype}")
    summary, grid = run_local(sets, out)
    result, state = embedded(sets)
    return dtype, summary, grid, out, result, state


def test_a_compressed_payload_gives_the_embedded_engines_adapter_lambdas_and_bytes(compressed, clean_run):
    """fp16 and bf16 both ways, int8 up (error feedback on the node): the final federated adapter, potara's λs and
    the bytes of every round and method are the embedded engine's for the same config."""
    dtype, summary, _, out, result, fed_state = compressed
    flower_state = deserialize((out / "federated.safetensors").read_bytes())
    assert set(flower_state) == set(fed_state)
    for key, value in fed_state.items():
        torch.testing.assert_close(flower_state[key], value, rtol=1e-5, atol=1e-6)
    mine, theirs = summary["methods"]["potara"]["per_client"], result.methods["potara"].per_client
    assert [r["lambda"] for r in mine] == pytest.approx([r["lambda"] for r in theirs], abs=1e-6)
    assert [r["acc"] for r in mine] == pytest.approx([r["acc"] for r in theirs])
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert [(r["bytes_up"], r["bytes_down"]) for r in rounds] == [(r["bytes_up"], r["bytes_down"]) for r in result.rounds]
    for name, method in result.methods.items():
        assert (summary["methods"][name]["bytes_up"], summary["methods"][name]["bytes_down"]) == (
            method.bytes_up, method.bytes_down), name
    assert summary["methods"]["fedit"]["bytes_up"] < clean_run[0]["methods"]["fedit"]["bytes_up"]  # the tiny
    # adapter's headers weigh; test_flower_wire.py checks the ratios of a MiniLM-sized one


def test_arrays_travel_in_the_payload_dtype_and_int8_feedback_stays_on_the_node(compressed):
    """What crosses in each train message: fp16 as float16, bf16 as its uint16 bit pattern, int8 uploads as int8
    arrays and float32 scales over an fp32 download; each int8 node keeps its quantization residual."""
    dtype, _, grid, _, _, _ = compressed
    up, down = {"fp16": ("float16", "float16"), "bf16": ("uint16", "uint16"), "int8": ("int8", "float32")}[dtype]
    local = grid.inner
    assert all(RESIDUAL_KEY in state for state in local.states.values()) == (dtype == "int8")
    assert set(local.dtypes["up"]) == ({up, "float32"} if dtype == "int8" else {up})
    assert set(local.dtypes["down"]) == {down}


def test_a_hostile_int8_upload_is_rejected_and_named_and_the_round_goes_on(overrides, tmp_path):
    """In an int8 run, client 2 uploads float32 arrays in round 1 and client 1 a scales tensor one short in
    round 2: each is rejected with its reason, naming the client and node, and each round aggregates the others."""

    def hostile(msg: Message, context: Context, call_next: Callable) -> Message:
        reply = call_next(msg, context)
        if msg.metadata.message_type != "train":
            return reply
        at, fed = (context.node_config["partition-id"], msg.content["config"]["server-round"]), reply.content["fed"]
        if at == (2, 1):
            reply.content["fed"] = ArrayRecord({k: Array(a.numpy().astype(np.float32)) for k, a in fed.items()})
        if at == (1, 2):
            fed[SCALES] = Array(fed[SCALES].numpy()[:-1])
        return reply

    run_local([*overrides, "fed.payload_dtype=int8"], tmp_path, mods=[hostile], **{"min-train-nodes": 2})
    rounds = [json.loads(line) for line in (tmp_path / "rounds.jsonl").read_text().splitlines()]
    assert [r["aggregated"] for r in rounds] == [["client_00", "client_01"], ["client_00", "client_02"]]
    [dtype], [scales] = rounds[0]["errors"], rounds[1]["errors"]
    assert (dtype["client"], dtype["node_id"]) == ("client_02", NODE0 + 2)
    assert "holds float32, expected int8 (fed.payload_dtype=int8" in dtype["reason"]
    assert (scales["client"], scales["node_id"]) == ("client_01", NODE0 + 1)
    assert f"int8 payload: '{SCALES}' must be float32 of shape" in scales["reason"]


def test_dp_with_a_compressed_payload_is_a_one_line_error_naming_both_keys():
    with pytest.raises(ConfigError, match=r"fed.payload_dtype=fp16 cannot combine with privacy.noise_multiplier > 0"):
        from_run_config({"overrides": "methods=[fedit] fed.payload_dtype=fp16 privacy.noise_multiplier=1"})


def test_the_next_run_of_a_series_starts_its_int8_error_feedback_afresh(compressed, overrides, tmp_path):
    """Flower hands a node's Context.state to the next run of a run series: that run's federation starts afresh,
    so it must not add the last run's residual to its first upload (its adapter is then the embedded engine's)."""
    dtype, _, grid, _, _, fed_state = compressed
    if dtype != "int8":
        pytest.skip("error feedback is int8's")
    left = {node: recorddict_from_proto(recorddict_to_proto(state)) for node, state in grid.inner.states.items()}
    run_local([*overrides, "fed.payload_dtype=int8"], tmp_path, series=(2, left))
    again = deserialize((tmp_path / "federated.safetensors").read_bytes())
    for key, value in fed_state.items():
        torch.testing.assert_close(again[key], value, rtol=1e-5, atol=1e-6)
