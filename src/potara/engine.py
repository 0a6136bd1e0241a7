"""The embedded simulation: one base model in memory, clients as adapters, methods side by side."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import PeftModel
from tqdm.auto import tqdm

from . import checkpoint
from . import data as data_mod
from .adapters import as_received, export_peft_dir, get_state, set_state
from .client import ClientSession, ClientSplits, SessionSettings, Timers
from .config import RunConfig
from .encoding import encode_text
from .federation import RoundLog, run_rounds
from .methods import Method, resolve
from .models import load_peft_classifier, load_tokenizer
from .strategies import FedAvg, ProductFedAvg
from .taskvec import AdapterState
from .training import Budget, evaluate

Log = Callable[[dict], None]


@dataclass
class MethodResult:
    per_client: list[dict] = field(default_factory=list)
    bytes_up: int = 0
    bytes_down: int = 0
    rounds: int = 0

    def mean_acc(self) -> float:
        return sum(c["acc"] for c in self.per_client) / max(1, len(self.per_client))

    def worst_acc(self) -> float:
        return min((c["acc"] for c in self.per_client), default=0.0)


@dataclass
class RunResult:
    methods: dict[str, MethodResult]
    rounds: list[dict]
    timing: dict[str, float | dict[str, float]]
    lambdas_at: dict[int, dict[str, float]] = field(default_factory=dict)


def load_federated_data(cfg: RunConfig) -> data_mod.FederatedData:
    d = cfg.data
    if d.source == "fortunes":
        ds = data_mod.load_fortunes()
    elif d.source.startswith("hf:"):
        ds = data_mod.load_hf_dataset(
            d.source[3:], d.split, text_column=d.text_column, label_column=d.label_column, config_name=d.hf_config
        )
    else:
        ds = data_mod.load_local_files(d.source, text_column=d.text_column or "text", label_column=d.label_column)
    return data_mod.make_clients(
        ds, num_clients=d.num_clients, scheme=d.partition, seed=cfg.seed, alpha=d.alpha,
        classes_per_client=d.classes_per_client, group_column=d.group_column,
        train_sizes=tuple(d.train_sizes) if d.train_sizes else None, test_size=d.test_size,
        val_fraction=d.val_fraction, min_val=d.min_val,
    )


def encode_clients(cfg: RunConfig, fed_data: data_mod.FederatedData) -> list[ClientSplits]:
    tokenizer = load_tokenizer(cfg.model)
    enc = lambda split: encode_text(tokenizer, split, cfg.model.max_length)  # noqa: E731
    return [ClientSplits(c.name, enc(c.train), enc(c.val), enc(c.test)) for c in fed_data.clients]


def strategy_for(cfg: RunConfig) -> FedAvg:
    return ProductFedAvg() if cfg.fed.aggregation == "product" else FedAvg()


def fed_budget(cfg: RunConfig) -> Budget:
    """The local budget of a federated round (shared with the Flower app)."""
    return Budget(cfg.fed.local_epochs, cfg.fed.local_steps, cfg.fed.lr, cfg.fed.batch_size)


def session_settings(cfg: RunConfig) -> SessionSettings:
    return SessionSettings(
        local_budget=Budget(cfg.local.epochs, None, cfg.local.lr, cfg.local.batch_size),
        local_init=cfg.local.init, scale=cfg.lora.alpha / cfg.lora.r, merge_rank=2 * cfg.lora.r,
        eval_batch_size=cfg.eval_batch_size, fisher_mode=cfg.potara.fisher,
        fisher_samples=cfg.potara.fisher_samples, fisher_max_examples=cfg.potara.fisher_max_examples,
        seed=cfg.seed,
    )


def personalize(
    model: PeftModel, clients: list[ClientSplits], fed: AdapterState, pretrained: AdapterState,
    methods: list[Method], settings: SessionSettings, timers: Timers, desc: str = "personalize",
    export_dir: Path | None = None,
) -> dict[str, list[dict]]:
    """Every method on every client; potara-style methods first so their timing sees a cold cache.
    ``timers`` gets ``method:<name>``: the seconds of each method's choice and evaluation (the shared local
    training is ``local_epoch``)."""
    ordered = sorted(methods, key=lambda m: not m.estimates_lambda)
    out: dict[str, list[dict]] = {m.name: [] for m in methods}
    for split in tqdm(clients, desc=desc, leave=False):
        session = ClientSession(model, split, fed, pretrained, settings, timers)
        session.local()
        for method in ordered:
            began = time.perf_counter()
            try:
                choice = method.personalize(session)
            except ValueError as err:
                raise ValueError(f"method {method.name}, client {split.name}: {err}") from err
            if method.name == "potara":
                timers.add("mixing", time.perf_counter() - began)
            ev = session.evaluate(choice.states, choice.weights, split.test)
            timers.add(f"method:{method.name}", time.perf_counter() - began)
            if export_dir is not None and method.name == "potara":
                export_peft_dir(model, session.merged(choice.states, choice.weights), export_dir / split.name)
            out[method.name].append(
                {"client": split.name, "n_train": len(split.train), "acc": ev.acc, "lambda": choice.lam,
                 **({"note": choice.note} if choice.note else {})}
            )
    return out


def run(
    cfg: RunConfig, log: Log | None = None, export_dir: Path | None = None, checkpoint_dir: Path | None = None
) -> RunResult:
    """Federate, then personalize with every method; ``log`` gets per-round records; potara's merged
    adapters go to ``export_dir/<client>`` as PEFT adapter directories. With ``checkpoint_dir`` the run
    state is saved there after every round, and a run that finds a checkpoint there continues from it."""
    methods = resolve(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    fed_data = load_federated_data(cfg)
    clients = encode_clients(cfg, fed_data)
    model = load_peft_classifier(cfg.model, cfg.lora, len(fed_data.label_names), cfg.seed)
    pretrained = get_state(model)
    resumed = checkpoint.resume(checkpoint_dir, cfg.to_dict()) if checkpoint_dir else None
    settings, timers = session_settings(cfg), Timers()
    intermediate = _intermediate_methods(cfg, methods)
    dtype = cfg.fed.payload_dtype
    rounds_log: list[dict] = list(resumed.records) if resumed else []
    totals = dict(resumed.totals) if resumed else {"up": 0, "down": 0}

    def on_round(entry: RoundLog, state: AdapterState) -> None:
        totals["up"] += entry.bytes_up
        totals["down"] += entry.bytes_down
        record = _round_record(model, clients, as_received(state, dtype), entry, totals, cfg)
        if cfg.fed.eval_every and entry.round % cfg.fed.eval_every == 0 and entry.round < cfg.fed.rounds:
            per = personalize(
                model, clients, as_received(state, dtype), pretrained, intermediate, settings, Timers(),
                f"round {entry.round}",
            )
            record["methods"] = {name: _mean(rows) for name, rows in per.items()}
        record.update(entry.extra)
        rounds_log.append(record)
        if log:
            log(record)
        if checkpoint_dir:
            checkpoint.save(checkpoint_dir, checkpoint.RoundState(entry.round, state, rounds_log, totals, cfg.to_dict()))

    began = time.perf_counter()
    fed_state = run_rounds(
        model, {c.name: c.train for c in clients}, resumed.adapter if resumed else pretrained, strategy_for(cfg),
        rounds=cfg.fed.rounds, fraction=cfg.fed.fraction,
        budget=fed_budget(cfg),
        seed=cfg.seed, start_round=resumed.round + 1 if resumed else 1, limits=cfg.validation,
        on_round=on_round, progress=lambda it, desc: tqdm(it, desc=desc, leave=False), payload_dtype=dtype,
    )
    fed_seconds = time.perf_counter() - began
    per = personalize(
        model, clients, as_received(fed_state, dtype), pretrained, methods, settings, timers, export_dir=export_dir
    )
    results = {}
    for m in methods:
        results[m.name] = MethodResult(
            per[m.name], totals["up"] if m.federated else 0, totals["down"] if m.federated else 0,
            cfg.fed.rounds if m.federated else 0,
        )
    timing = {
        "local_epoch_s": timers.mean("local_epoch"), "fisher_s": timers.mean("fisher") if _uses_fisher(cfg) else 0.0,
        "mixing_s": timers.mean("mixing"), "federation_s": fed_seconds,
        "method_s": {m.name: timers.seconds[f"method:{m.name}"] for m in methods},
    }
    return RunResult(results, rounds_log, timing)


def _intermediate_methods(cfg: RunConfig, methods: list[Method]) -> list[Method]:
    """The federated methods personalized at intermediate rounds: those of ``fed.eval_methods`` this run
    has, or every federated one when it is unset."""
    wanted = cfg.fed.eval_methods
    return [m for m in methods if m.federated and (wanted is None or m.name in wanted)]


def _uses_fisher(cfg: RunConfig) -> bool:
    return cfg.potara.estimator in ("fisher", "folds")


def _mean(rows: list[dict]) -> float:
    return sum(r["acc"] for r in rows) / max(1, len(rows))


def _round_record(
    model: PeftModel, clients: list[ClientSplits], state: AdapterState, entry: RoundLog, totals: dict, cfg: RunConfig
) -> dict:
    """Per-round metrics: bytes, training loss, and FedIT's accuracy on every client's test split."""
    set_state(model, state)
    accs = [evaluate(model, c.test, cfg.eval_batch_size).acc for c in clients]
    return {
        "round": entry.round, "clients": entry.clients, "bytes_up": entry.bytes_up, "bytes_down": entry.bytes_down,
        "cum_bytes_up": totals["up"], "cum_bytes_down": totals["down"], "train_loss": entry.train_loss,
        "fedit_mean_acc": sum(accs) / len(accs),
    }
