"""The embedded simulation: one base model in memory, clients as adapters, methods side by side."""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from peft import PeftModel
from tqdm.auto import tqdm

from .config import ModelConfig, RunConfig
from .data import federated as data_mod
from .data import prompts
from .data.encoding import Encoded, encode_images, encode_text
from .data.profile import profile
from .federation import checkpoint
from .federation.privacy import privatized
from .federation.recipes import FEDIT, FedIT
from .federation.rounds import RoundLog, run_rounds
from .federation.strategies import FedAvg
from .merge.spread import SPREAD_BYTES, UpdateSpread
from .merge.taskvec import AdapterState
from .methods import Choice, Method, resolve
from .models.adapters import as_received, export_peft_dir, get_state, label_adapters, serialize, set_state
from .models.loading import load_image_processor, load_peft_model, load_tokenizer, model_task, resolve_device
from .personalize.session import ClientSession, ClientSplits, SessionSettings, Timers, evaluate_split
from .reporting.results import MethodResult, RunResult
from .training.causal_lm import encode_prompt_target
from .training.cost import PassMeter
from .training.loop import Budget, score

Log = Callable[[dict], None]


def load_federated_data(cfg: RunConfig) -> data_mod.FederatedData:
    d = cfg.data
    if d.source == "fortunes":
        ds = data_mod.load_fortunes()
    elif d.source.startswith(prompts.SUITE_PREFIX):
        load_fn = prompts.local_loader(d.suite_dir) if d.suite_dir else prompts.hub_loader
        tasks = prompts.suite_tasks(d.source)
        ds = prompts.load_suite(tasks, max_per_task=d.max_per_task, seed=cfg.seed, load_fn=load_fn)
    elif d.source == "digits":
        ds = data_mod.load_digits_images(size=8, classes=data_mod.FEDERATED_DIGITS)
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
    enc = split_encoder(cfg.model, fed_data.input_column)
    return [ClientSplits(c.name, enc(c.train), enc(c.val), enc(c.test)) for c in fed_data.clients]


def split_encoder(model: ModelConfig, input_column: str) -> Callable[[datasets.Dataset], Encoded]:
    """Tokenizer for a text model or a causal LM, image processor for an image model; the data's input must
    match the model."""
    task = model_task(model)
    expected = {"image": "image", "causal_lm": "prompt"}.get(task, "text")
    if input_column != expected:
        raise ValueError(
            f"model '{model.name}' (model.task {task}) reads '{expected}' inputs but the data's input column is "
            f"'{input_column}'; pick a model for that data, or data for that model"
        )
    if task == "image":
        processor = load_image_processor(model)
        return lambda split: encode_images(processor, split)
    tokenizer = load_tokenizer(model)
    encode = encode_prompt_target if task == "causal_lm" else encode_text
    return lambda split: encode(tokenizer, split, model.max_length)


def fed_budget(cfg: RunConfig) -> Budget:
    """The local budget of a federated round (shared with the Flower app)."""
    return Budget(cfg.fed.local_epochs, cfg.fed.local_steps, cfg.fed.lr, cfg.fed.batch_size, cfg.lora.head_lr_scale)


def session_settings(cfg: RunConfig) -> SessionSettings:
    return SessionSettings(
        local_budget=Budget(cfg.local.epochs, None, cfg.local.lr, cfg.local.batch_size, cfg.lora.head_lr_scale),
        local_init=cfg.local.init, scale=cfg.lora.alpha / cfg.lora.r, merge_rank=2 * cfg.lora.r,
        eval_batch_size=cfg.eval_batch_size, fisher_mode=cfg.potara.fisher,
        fisher_samples=cfg.potara.fisher_samples, fisher_max_examples=cfg.potara.fisher_max_examples,
        seed=cfg.seed, max_new_tokens=cfg.model.max_new_tokens, merge_space=cfg.potara.merge_space,
    )


def evaluated_clients(clients: list[ClientSplits], count: int | None, seed: int) -> list[ClientSplits]:
    """The clients personalized and scored: every one, or ``count`` of them drawn by ``seed`` (kept in order), so
    that the settings of one seed score the same clients (``data.eval_clients``)."""
    if count is None or count >= len(clients):
        return clients
    chosen = set(random.Random(seed).sample(range(len(clients)), count))
    return [c for i, c in enumerate(clients) if i in chosen]


def personalize(
    model: PeftModel, clients: list[ClientSplits], fed: AdapterState, pretrained: AdapterState,
    methods: list[Method], settings: SessionSettings, timers: Timers, desc: str = "personalize",
    export_dir: Path | None = None, fed_of: Mapping[str, AdapterState] | None = None, export_parts: bool = False,
    spread: UpdateSpread | None = None,
) -> dict[str, list[dict]]:
    """Every method on every client, each row with its test and validation accuracy and its ``cost``.
    ``fed_of`` gives clients their own federated model (a federation that keeps tensors on the client);
    ``spread`` is the last round's update spread, as it reaches every client with the global adapter.

    A row's ``cost`` is what the method's choice cost on the client (seconds, training and forward example
    passes; :class:`~potara.training.cost.Cost`), shared work such as the local adapter charged to every method that
    used it; methods that estimate λ also get ``lambda_cost``, their cost without the local adapter that
    the merge itself needs. The final evaluations are not part of either."""
    out: dict[str, list[dict]] = {m.name: [] for m in methods}
    meter = PassMeter()
    with meter.attached(model):
        for split in tqdm(clients, desc=desc, leave=False):
            client_fed = fed_of[split.name] if fed_of is not None else fed
            session = ClientSession(model, split, client_fed, pretrained, settings, timers, meter=meter, spread=spread)
            for method in methods:
                out[method.name].append(_personalize_one(session, method, export_dir))
            if export_dir is not None and export_parts:
                _export_parts(session, export_dir / session.name)
    return out


def _export_parts(session: ClientSession, out: Path) -> None:
    """A client's federated and local adapters as PEFT directories ``out/federated`` and ``out/local``."""
    for part, state in (("federated", session.fed), ("local", session.local(session.settings.local_init))):
        export_peft_dir(session.model, session.merged([state], [1.0]), out / part)


def _personalize_one(session: ClientSession, method: Method, export_dir: Path | None) -> dict:
    """One method's choice on one client, its cost, and its accuracy on the test and validation splits."""
    session.begin(method.local_init, method.merge_space)
    try:
        choice = session.choice(method.name, lambda: method.personalize(session))  # a corrected variant reuses it
    except ValueError as err:
        raise ValueError(f"method {method.name}, client {session.name}: {err}") from err
    cost = session.charge()
    lambda_cost = cost - session.charged_local() if method.estimates_lambda else None
    test, val = (_accuracy(session, choice, session.split(name)) for name in ("test", "val"))
    if export_dir is not None and method.exports:
        export_peft_dir(session.model, session.merged(choice.states, choice.weights), export_dir / session.name)
    n_test = len(session.split("test"))
    row = {"client": session.name, "n_train": len(session.split("train")), "acc": test, "val_acc": val,
           "n_test": n_test, "correct": round(test * n_test) if n_test else 0, "lambda": choice.lam,
           "cost": cost.as_dict()}
    if lambda_cost is not None:
        row["lambda_cost"] = lambda_cost.as_dict()
    return {**row, **({"note": choice.note} if choice.note else {})}


def _accuracy(session: ClientSession, choice: Choice, data: Encoded) -> float:
    """The chosen model's accuracy on ``data`` (NaN on an empty split)."""
    if not len(data):
        return float("nan")
    if choice.logits is not None:
        return score(choice.logits(data), data.tensors["labels"]).acc
    return session.evaluate(choice.states, choice.weights, data).acc


@dataclass
class Federated:
    """One federation's outcome: the global tensors, what each client kept, measured bytes of the rounds,
    per-round records, and ``final_broadcast``: the bytes of the final global tensors sent to every client
    after the last round (what every client needs to use or personalize the final model), with the last
    round's update spread when a method reads it (``spread_travels``) and the server released it."""

    state: AdapterState
    kept: dict[str, AdapterState]
    totals: dict[str, int]
    records: list[dict]
    final_broadcast: int = 0
    residuals: dict[str, AdapterState] = field(default_factory=dict)  # int8 uploads: each client's error feedback
    spread: UpdateSpread | None = None  # the last round's update spread (None: none yet, or not released under DP)
    spread_travels: bool = False  # a method reads the spread: it goes down with the global tensors

    def broadcast(self, clients: int, dtype: str) -> int:
        """The bytes of sending the global tensors (and the spread, when it travels) to ``clients`` clients."""
        extra = SPREAD_BYTES if self.spread_travels and self.spread is not None else 0
        return broadcast_bytes(self.state, clients, dtype, extra)

    def of(self, client: str, dtype: str = "fp32") -> AdapterState:
        """Client ``client``'s model: the global tensors as received over a ``dtype`` wire, with its own kept
        ones over them (they never travel, so are never rounded; a personal adapter, Ditto's, is all of it)."""
        return {**as_received(self.state, dtype), **self.kept.get(client, {})}


def run(
    cfg: RunConfig, log: Log | None = None, export_dir: Path | None = None, checkpoint_dir: Path | None = None,
    export_parts: bool = False,
) -> RunResult:
    """Federate, then personalize with every method; ``log`` gets per-round records; potara's merged
    adapters go to ``export_dir/<client>`` as PEFT adapter directories, each with its ``labels.json`` (with
    ``export_parts``, also its federated and local adapters in ``federated/`` and ``local/`` there). With ``checkpoint_dir`` the run
    state is saved there after every round, and a run that finds a checkpoint there continues from it.

    FedIT's federation always runs (it is every merging method's and the per-round records'); a peer with
    its own recipe (ffa_lora, fedsa_lora, ditto) gets its own federation after it, checkpointed in
    ``checkpoint_dir/<recipe>``, its per-round records under its name in FedIT's records."""
    methods = resolve(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    fed_data = load_federated_data(cfg)
    device = resolve_device(cfg.model.device)
    clients = [ClientSplits(c.name, c.train.to(device), c.val.to(device), c.test.to(device))
               for c in encode_clients(cfg, fed_data)]
    scored = evaluated_clients(clients, cfg.data.eval_clients, cfg.seed)
    model = load_peft_model(cfg.model, cfg.lora, len(fed_data.label_names), cfg.seed).to(device)
    pretrained = get_state(model)
    settings, timers = session_settings(cfg), Timers()
    fedit_methods = [m for m in methods if m.federation is FEDIT]
    intermediate = _intermediate_methods(cfg, fedit_methods)
    peers = list(dict.fromkeys(m.federation for m in methods if m.federation is not FEDIT))
    dtype = cfg.fed.payload_dtype
    spread_travels = any(m.needs_spread for m in fedit_methods)

    def fedit_record(entry: RoundLog, fed: Federated) -> dict:
        record = _round_record(model, clients, fed, entry, cfg, "fedit_mean_acc")
        if cfg.fed.eval_every and entry.round % cfg.fed.eval_every == 0 and entry.round < cfg.fed.rounds:
            per = personalize(
                model, scored, as_received(fed.state, dtype), pretrained, intermediate, settings, Timers(),
                f"round {entry.round}", spread=entry.spread,
            )
            record["methods"] = {name: _mean(rows) for name, rows in per.items()}
        return record

    def peer_record(entry: RoundLog, fed: Federated) -> dict:
        return _round_record(model, clients, fed, entry, cfg, "mean_acc")

    began = time.perf_counter()
    feds = {FEDIT.name: _federate(FEDIT, model, clients, pretrained, cfg, fedit_record, log, checkpoint_dir,
                                  spread_travels)}
    for recipe in peers:
        where = checkpoint_dir / recipe.name if checkpoint_dir else None
        feds[recipe.name] = _federate(recipe, model, clients, pretrained, cfg, peer_record, None, where)
    fed_seconds = time.perf_counter() - began
    per = personalize(
        model, scored, as_received(feds[FEDIT.name].state, dtype), pretrained, fedit_methods, settings, timers,
        export_dir=export_dir, export_parts=export_parts, spread=feds[FEDIT.name].spread,
    )
    if export_dir is not None:
        label_adapters(export_dir, fed_data.label_names, cfg.model.max_length)
    for recipe in peers:
        fed, own = feds[recipe.name], [m for m in methods if m.federation is recipe]
        fed_of = {c.name: fed.of(c.name, dtype) for c in scored}
        per.update(personalize(model, scored, fed.state, pretrained, own, settings, timers, recipe.name, fed_of=fed_of))
    results = {m.name: _method_result(m, per[m.name], feds[m.federation.name], cfg) for m in methods}
    fedit_client_s = feds[FEDIT.name].totals.get("client_s", 0.0) / max(1, len(clients))
    timing = {
        "local_epoch_s": timers.mean("local_epoch"), "fisher_s": timers.mean("fisher"), "federation_s": fed_seconds,
        "train_s": fedit_client_s + timers.mean("local_epoch") * cfg.local.epochs,
        "method_s": {m.name: _mean_of(per[m.name], "cost", "seconds") for m in methods},
        "lambda_s": {m.name: _mean_of(per[m.name], "lambda_cost", "seconds") for m in methods if m.estimates_lambda},
    }
    return RunResult(results, _joined_records(feds), timing, federation=profile(fed_data))


def _intermediate_methods(cfg: RunConfig, methods: list[Method]) -> list[Method]:
    """The federated methods personalized at intermediate rounds: those of ``fed.eval_methods`` this run
    has, or every federated one when it is unset."""
    wanted = cfg.fed.eval_methods
    return [m for m in methods if m.federated and (wanted is None or m.name in wanted)]


def _method_result(method: Method, rows: list[dict], fed: Federated, cfg: RunConfig) -> MethodResult:
    """A method's rows with its federation's bytes and rounds and its mean client compute (federated rounds
    plus its own personalization), when it takes part in the federation."""
    share = (lambda key: fed.totals.get(key, 0) / max(1, len(rows))) if method.federated else (lambda key: 0)
    compute = {
        "train_passes": share("train_passes") + _mean_of(rows, "cost", "train_passes"),
        "forward_passes": _mean_of(rows, "cost", "forward_passes"),
        "seconds": share("client_s") + _mean_of(rows, "cost", "seconds"),
    }
    on = method.federated
    return MethodResult(
        rows, fed.totals["up"] if on else 0, fed.totals["down"] + fed.final_broadcast if on else 0,
        cfg.fed.rounds if on else 0, compute, method.federation.name if on else "",
    )


def _mean_of(rows: list[dict], field_: str, key: str) -> float:
    values = [r[field_][key] for r in rows if field_ in r]
    return sum(values) / len(values) if values else 0.0


def _mean(rows: list[dict]) -> float:
    return sum(r["acc"] for r in rows) / max(1, len(rows))


def _federate(
    recipe: FedIT, model: PeftModel, clients: list[ClientSplits], pretrained: AdapterState, cfg: RunConfig,
    record_of: Callable[[RoundLog, Federated], dict], log: Log | None, checkpoint_dir: Path | None,
    spread_travels: bool = False,
) -> Federated:
    """One federation of ``recipe`` from the pretrained adapter (or its checkpoint in ``checkpoint_dir``)."""
    resumed = checkpoint.resume(checkpoint_dir, cfg.to_dict()) if checkpoint_dir else None
    shared, kept = recipe.split(pretrained)[0], recipe.kept_at_start(pretrained)
    fed = Federated(
        resumed.adapter if resumed else shared,
        dict(resumed.clients) if resumed else {c.name: kept for c in clients if kept},
        dict(resumed.totals) if resumed else {"up": 0, "down": 0},
        list(resumed.records) if resumed else [],
        residuals=dict(resumed.residuals) if resumed else {},
        spread=_last_spread(resumed.records) if resumed else None, spread_travels=spread_travels,
    )
    strategy = _strategy(recipe, cfg, len(clients))
    if resumed:
        strategy.restore(resumed.strategy)

    budget = fed_budget(cfg)
    budget = dataclasses.replace(budget, lr=budget.lr * recipe.lr_scale)
    meter = PassMeter()
    round_began = [meter.now()]

    def on_round(entry: RoundLog, state: AdapterState) -> None:
        spent = meter.now() - round_began[0]  # the round's client steps and aggregation, not its evaluation
        fed.totals["train_passes"] = fed.totals.get("train_passes", 0) + spent.train_passes
        fed.totals["client_s"] = fed.totals.get("client_s", 0.0) + spent.seconds
        with meter.paused():
            _conclude_round(entry, state, fed, record_of, log, checkpoint_dir, cfg, strategy)
        round_began[0] = meter.now()

    with meter.attached(model):
        round_began[0] = meter.now()
        fed.state = run_rounds(
            model, {c.name: c.train for c in clients}, fed.state, strategy,
            rounds=cfg.fed.rounds, fraction=cfg.fed.fraction, budget=budget, seed=cfg.seed,
            start_round=resumed.round + 1 if resumed else 1, limits=cfg.validation, on_round=on_round,
            progress=lambda it, desc: tqdm(it, desc=f"{recipe.name} {desc}", leave=False), recipe=recipe,
            kept=fed.kept, payload_dtype=cfg.fed.payload_dtype, residuals=fed.residuals,
        )
    fed.final_broadcast = fed.broadcast(len(clients), cfg.fed.payload_dtype)
    return fed


def _last_spread(records: list[dict]) -> UpdateSpread | None:
    """The update spread of the last round a checkpoint recorded (None when it was not released)."""
    last = records[-1] if records else {}
    spread = last.get("update_spread")
    return None if spread is None else UpdateSpread(float(spread), int(last["update_count"]))


def _strategy(recipe: FedIT, cfg: RunConfig, clients: int) -> FedAvg:
    """The recipe's aggregation, wrapped in client-level DP when ``privacy.noise_multiplier`` > 0."""
    sampled = max(1, round(cfg.fed.fraction * clients))
    return privatized(recipe.strategy(cfg.fed.aggregation), cfg.privacy, sampled, cfg.seed)


def broadcast_bytes(state: AdapterState, clients: int, dtype: str, extra: int = 0) -> int:
    """The bytes of sending ``state`` to every client: its serialized payload's length (plus ``extra`` bytes that
    go with it), ``clients`` times."""
    return (len(serialize(state, dtype)) + extra) * clients


def _conclude_round(
    entry: RoundLog, state: AdapterState, fed: Federated, record_of: Callable[[RoundLog, Federated], dict],
    log: Log | None, checkpoint_dir: Path | None, cfg: RunConfig, strategy: FedAvg,
) -> None:
    """After a round: bytes into the totals, the round's record (evaluation), the log line, the checkpoint."""
    fed.state, fed.spread = state, entry.spread
    fed.totals["up"] += entry.bytes_up
    fed.totals["down"] += entry.bytes_down
    record = record_of(entry, fed)
    record.update(entry.extra)
    fed.records.append(record)
    if log:
        log(record)
    if checkpoint_dir:
        checkpoint.save(
            checkpoint_dir,
            checkpoint.RoundState(
                entry.round, state, fed.records, fed.totals, cfg.to_dict(), fed.kept,
                residuals=fed.residuals, strategy=strategy.state(),
            ),
        )


def _joined_records(feds: dict[str, Federated]) -> list[dict]:
    """FedIT's per-round records, each with the other federations' record of the same round under their name."""
    records = [dict(r) for r in feds[FEDIT.name].records]
    for name, fed in feds.items():
        by_round = {r["round"]: r for r in fed.records}
        for record in records if name != FEDIT.name else []:
            if record["round"] in by_round:
                record[name] = {k: v for k, v in by_round[record["round"]].items() if k != "round"}
    return records


def _round_record(
    model: PeftModel, clients: list[ClientSplits], fed: Federated, entry: RoundLog, cfg: RunConfig, acc_key: str
) -> dict:
    """Per-round metrics: bytes, training loss, and the federation's accuracy on every client's test split
    (None when ``fed.eval_rounds`` is off).
    ``cum_bytes_*`` count the rounds so far; ``broadcast_bytes`` is what sending this round's global tensors
    to every client costs on top (what personalizing, or stopping, at this round needs; after the last
    round it is the run's final broadcast, in ``bytes_down`` of every federated method). ``update_spread`` is
    the spread ``s²`` of the ``update_count`` aggregated updates (None under DP)."""
    accs = []
    for c in clients if cfg.fed.eval_rounds else []:
        set_state(model, fed.of(c.name, cfg.fed.payload_dtype))
        accs.append(evaluate_split(model, c.test, cfg.eval_batch_size, cfg.model.max_new_tokens).acc)
    return {
        "round": entry.round, "clients": entry.clients, "bytes_up": entry.bytes_up, "bytes_down": entry.bytes_down,
        "cum_bytes_up": fed.totals["up"], "cum_bytes_down": fed.totals["down"],
        "broadcast_bytes": fed.broadcast(len(clients), cfg.fed.payload_dtype),
        "train_loss": entry.train_loss,
        "update_spread": entry.spread.spread if entry.spread else None, "update_count": entry.aggregated,
        acc_key: sum(accs) / len(accs) if accs else None,
    }
