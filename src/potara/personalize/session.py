"""One client after the federation: its local adapters, merges, Fisher and losses, computed lazily once.

Methods ask a :class:`ClientSession` for what they need; nothing here leaves the client.
"""

from __future__ import annotations

import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from peft import PeftModel

from ..data.encoding import Encoded
from ..merge.fisher import delta_gradient, model_fisher, parameter_fisher
from ..merge.mixing import complement
from ..merge.paper_weight import check_finite_pieces
from ..merge.spread import UpdateSpread
from ..merge.taskvec import (
    MERGES,
    AdapterState,
    Metric,
    Weights,
    check_finite,
    extra_keys,
    group_of,
    lora_modules,
    pad_rank,
)
from ..models.adapters import adapter_parameters, get_state, set_state
from ..models.loading import MERGE_ADAPTER, TRAIN_ADAPTER
from ..training.causal_lm import PromptTargets, evaluate_generative
from ..training.cost import Cost, PassMeter
from ..training.loop import Budget, Evaluation, Proximal, evaluate, predict, score, train

T = TypeVar("T")


@dataclass
class ClientSplits:
    name: str
    train: Encoded
    val: Encoded
    test: Encoded


@dataclass(frozen=True)
class SessionSettings:
    local_budget: Budget
    local_init: str
    scale: float
    merge_rank: int
    eval_batch_size: int = 64
    fisher_mode: str = "auto"
    fisher_samples: int = 1
    fisher_max_examples: int = 64
    seed: int = 0
    max_new_tokens: int = 16  # causal-LM data: greedy decoding length for accuracy
    merge_space: str = "delta"  # "delta" (exact) or "factors" (A and B averaged): potara.merge_space


def evaluate_split(
    model: PeftModel, data: Encoded, batch_size: int, max_new_tokens: int = 16, accuracy: bool = True
) -> Evaluation:
    """Loss and accuracy of the active adapter: classification from logits, causal LM by teacher forcing + generation.

    ``accuracy=False`` lets causal-LM data skip generation (``acc`` is then NaN); classification always has both.
    """
    if isinstance(data, PromptTargets):
        return evaluate_generative(model, data, batch_size, max_new_tokens, accuracy)
    return evaluate(model, data, batch_size)


@dataclass
class Timers:
    """Seconds spent per kind of work, and how many times (to report per-client means)."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, kind: str, seconds: float, count: int = 1) -> None:
        self.seconds[kind] += seconds
        self.counts[kind] += count

    def mean(self, kind: str) -> float:
        return self.seconds[kind] / self.counts[kind] if self.counts[kind] else 0.0


class ClientSession:
    """Local adapters (per init), half-data adapters, Fisher and held-out losses of merges, cached.

    Every cached piece of work keeps what computing it cost (``meter``: seconds and example passes), and the
    session notes which pieces the current method used, computed or not: :meth:`charge` is what the method's
    choice cost as if it had been alone on the client, so methods that share work compare fairly."""

    def __init__(
        self, model: PeftModel, splits: ClientSplits, fed: AdapterState, pretrained: AdapterState,
        settings: SessionSettings, timers: Timers, local: AdapterState | None = None,
        meter: PassMeter | None = None, spread: UpdateSpread | None = None,
    ) -> None:
        self.model, self.splits, self.fed, self.pretrained = model, splits, fed, pretrained
        self.update_spread = spread  # the last round's, as it came with ``fed`` (None: not sent, or no federation)
        self.settings, self.timers = settings, timers
        self.meter = meter or PassMeter()
        self._locals: dict[tuple, AdapterState] = {} if local is None else {(settings.local_init, "all"): local}
        # (merge, split) by identity -> causal-LM evaluation, has accuracy, and the keyed objects (kept alive: ids
        # stay unique); classification keeps the logits instead, which every score on the split (a part, a prior
        # correction, another λ's pick) reads without a forward pass
        self._evals: dict[tuple, tuple[Evaluation, bool, tuple]] = {}
        self._logits: dict[tuple, tuple[torch.Tensor, tuple]] = {}
        self._half_data: tuple[Encoded, Encoded] | None = None
        self._fishers: dict[str, Metric] = {}  # local init -> Fisher at that local adapter
        self._papers: dict[tuple, tuple[Metric, dict[str, torch.Tensor]]] = {}
        self._costs: dict[tuple, Cost] = {}  # cached piece of work -> what computing it cost
        self._used: set[tuple] = set()  # the pieces the current method used
        self._choices: dict[str, tuple[Any, Cost, Cost]] = {}  # key -> a method's choice, its charge, its local's
        self._reused, self._reused_local = Cost(), Cost()  # what the choices the current method reused cost
        self._began: Cost = self.meter.now()
        self._init, self._space = settings.local_init, settings.merge_space

    def begin(self, local_init: str | None = None, merge_space: str | None = None) -> None:
        """Start charging a new method: nothing used yet; ``local_init``/``merge_space`` are its own (default: the
        session's), what ``local()``, ``halves()``, ``fisher()`` and ``merged()`` mean until the next ``begin``."""
        self._used, self._began = set(), self.meter.now()
        self._reused, self._reused_local = Cost(), Cost()
        self._init = local_init or self.settings.local_init
        self._space = merge_space or self.settings.merge_space

    def charge(self) -> Cost:
        """The current method's cost so far: what it computed itself plus every cached piece it used, each at
        the cost of computing it (pieces computed during the method are counted once)."""
        elapsed = self.meter.now() - self._began
        fresh = [c for key, c in self._costs.items() if key in self._used and key[-1] >= self._began.seconds]
        return elapsed - sum(fresh, Cost()) + sum((self._costs[key] for key in self._used), self._reused)

    def charged_local(self) -> Cost:
        """What the client's full local adapter (``local()``) cost, if the current method used it."""
        key = self._local_key(self._init, "all")
        own = next((c for k, c in self._costs.items() if k[:-1] == key and k in self._used), Cost())
        return own + self._reused_local

    def choice(self, key: str, make: Callable[[], T]) -> T:
        """``make()``, a method's choice on this client, made once per ``key``: a method that calls it first thing
        after :meth:`begin` with a key already made (a prior-corrected variant, after its plain method) reuses that
        choice and is charged what making it cost."""
        if key in self._choices:
            made, cost, local = self._choices[key]
            self._reused, self._reused_local = self._reused + cost, self._reused_local + local
            return made
        made = make()
        self._choices[key] = (made, self.charge(), self.charged_local())
        return made

    def _measured(self, key: tuple, compute):
        """``compute()``, its cost kept under ``key`` (stamped with when it began) and marked used."""
        began = self.meter.now()
        value = compute()
        stamped = (*key, began.seconds)
        self._costs[stamped] = self.meter.now() - began
        self._used.add(stamped)
        return value

    def _forget(self, key: tuple) -> None:
        """Drop the costs kept under ``key`` (a piece computed again, whole, replaces them)."""
        for stale in [k for k in self._costs if k[:-1] == key]:
            del self._costs[stale]
            self._used.discard(stale)

    def _use(self, key: tuple) -> None:
        self._used.update(k for k in self._costs if k[:-1] == key)

    @staticmethod
    def _local_key(init: str, part: str) -> tuple:
        return ("local", init, part)

    @property
    def name(self) -> str:
        return self.splits.name

    def split(self, name: str) -> Encoded:
        return getattr(self.splits, name)

    def local(self, init: str | None = None) -> AdapterState:
        """The client's local adapter trained on all its training data from ``init``."""
        return self._local(init or self._init, "all")

    def halves(self, init: str | None = None) -> list[tuple[AdapterState, Encoded]]:
        """Two local adapters on disjoint halves of the training data, each with the *other* half."""
        init = init or self._init
        first, second = self._halves_data()
        return [(self._local(init, "half0", first), second), (self._local(init, "half1", second), first)]

    def _halves_data(self) -> tuple[Encoded, Encoded]:
        """The training data's two seeded halves, the same objects on every call (evaluations are cached by them)."""
        if self._half_data is None:
            n, train = len(self.splits.train), self.splits.train
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.settings.seed + 17))
            self._half_data = (train.subset(order[: n // 2]), train.subset(order[n // 2 :]))
        return self._half_data

    def _local(self, init: str, part: str, data: Encoded | None = None) -> AdapterState:
        key = (init, part)
        if key not in self._locals:
            self._locals[key] = self._measured(self._local_key(init, part), lambda: self._train_local(init, part, data))
        self._use(self._local_key(init, part))
        return self._locals[key]

    def _train_local(self, init: str, part: str, data: Encoded | None) -> AdapterState:
        start = self.fed if init == "federated" else self.pretrained
        data = self.splits.train if data is None else data
        set_state(self.model, start)
        began = time.perf_counter()
        train(self.model, data, self.settings.local_budget, self.generator(init, part))
        if part == "all" and len(data):
            self.timers.add("local_epoch", (time.perf_counter() - began) / self.settings.local_budget.epochs)
        state = get_state(self.model)
        check_finite(state, f"local adapter ({init}, {part}) of client {self.name}")
        return state

    def generator(self, init: str, part: str = "all") -> torch.Generator:
        """The seeded generator of the local training ``(init, part)`` (peers reuse it to see the same batches)."""
        seed = self.settings.seed * 1_000_003 + zlib.crc32(f"{self.name}/{init}/{part}".encode()) % 100_000
        return torch.Generator().manual_seed(seed)

    def fine_tuned(
        self, start: AdapterState, proximal: Proximal | None = None, budget: Budget | None = None,
        after_epoch: Callable[[int], None] | None = None,
    ) -> AdapterState:
        """``start`` trained on all training data with the local budget (or ``budget``) and the batches of
        ``local("federated")``; ``after_epoch`` as :func:`~potara.training.loop.train` calls it."""
        set_state(self.model, start)
        budget = budget or self.settings.local_budget
        train(self.model, self.splits.train, budget, self.generator("federated"), proximal, after_epoch=after_epoch)
        return get_state(self.model)

    def cost_apart(self, work: Callable[[], object]) -> Cost:
        """What ``work()`` costs when charged as a method of its own, less the local adapter (a method's
        ``lambda_cost``); charging restarts afterwards, so call it before the current method does anything."""
        init, space = self._init, self._space
        self.begin(init, space)
        work()
        spent = self.charge() - self.charged_local()
        self.begin(init, space)
        return spent

    def merged(
        self, states: Sequence[AdapterState], weights: Sequence[Weights], space: str | None = None
    ) -> AdapterState:
        """The merge in ``space`` (default ``merge_space``: exact in ΔW, or factors averaged), padded to the merge
        adapter's rank."""
        scales = [self.settings.scale] * len(states)
        return pad_rank(MERGES[space or self._space](states, weights, scales), self.settings.merge_rank)

    def predict_merged(
        self, states: Sequence[AdapterState], weights: Sequence[Weights], data: Encoded, space: str | None = None
    ) -> torch.Tensor:
        """Logits of the merge on ``data`` (not cached)."""
        set_state(self.model, self.merged(states, weights, space), MERGE_ADAPTER)
        self.model.set_adapter(MERGE_ADAPTER)
        try:
            return predict(self.model, data, self.settings.eval_batch_size)
        finally:
            self.model.set_adapter(TRAIN_ADAPTER)

    def evaluate(
        self, states: Sequence[AdapterState], weights: Sequence[Weights], data: Encoded, accuracy: bool = True
    ) -> Evaluation:
        """Evaluation of the exact merge on ``data``, cached per (merge, split); ``accuracy=False``: loss suffices
        (causal-LM data then skips generation)."""
        if not isinstance(data, PromptTargets):
            return score(self.logits(states, weights, data), data.tensors["labels"])
        states, weights, key = self._merge_key(states, weights, data)
        cached = self._evals.get(key)
        if cached is None or (accuracy and not cached[1]):
            if cached is not None:  # the loss-only pass is redone with generation: only the new one is charged
                self._forget(("eval", *key))
            ev = self._measured(("eval", *key), lambda: self._evaluate_now(states, weights, data, accuracy))
            self._evals[key] = (ev, accuracy, (tuple(states), data))
        self._use(("eval", *key))
        return self._evals[key][0]

    def logits(self, states: Sequence[AdapterState], weights: Sequence[Weights], data: Encoded) -> torch.Tensor:
        """Logits of the exact merge on classification ``data``, cached per (merge, split) and charged like
        :meth:`evaluate` (which scores them)."""
        states, weights, key = self._merge_key(states, weights, data)
        if key not in self._logits:
            out = self._measured(("eval", *key), lambda: self.predict_merged(states, weights, data))
            self._logits[key] = (out, (tuple(states), data))
        self._use(("eval", *key))
        return self._logits[key][0]

    def _merge_key(
        self, states: Sequence[AdapterState], weights: Sequence[Weights], data: Encoded
    ) -> tuple[list[AdapterState], list[Weights], tuple]:
        """The merge without its zero-weight adapters (so equal functions, λ = 0 or 1 and the plain models, share a
        pass), and its cache key: the adapters and split by identity, the weights, the merge space."""
        kept = [(s, w) for s, w in zip(states, weights) if not (isinstance(w, (int, float)) and w == 0)]
        states, weights = [s for s, _ in kept], [w for _, w in kept]
        return states, weights, (tuple(id(s) for s in states), _freeze(weights), id(data),
                                 self._space if len(states) > 1 else "")

    def _evaluate_now(
        self, states: Sequence[AdapterState], weights: Sequence[Weights], data: Encoded, accuracy: bool
    ) -> Evaluation:
        set_state(self.model, self.merged(states, weights), MERGE_ADAPTER)
        self.model.set_adapter(MERGE_ADAPTER)
        try:
            s = self.settings
            return evaluate_split(self.model, data, s.eval_batch_size, s.max_new_tokens, accuracy)
        finally:
            self.model.set_adapter(TRAIN_ADAPTER)

    def fed_local_eval(
        self, lam: Weights, data: Encoded, local: AdapterState | None = None, accuracy: bool = True
    ) -> Evaluation:
        """Evaluation of ``λ τ_F + (1−λ) τ_L``."""
        local = self.local() if local is None else local
        return self.evaluate([self.fed, local], [lam, complement(lam)], data, accuracy)

    def fisher(self) -> Metric:
        """Diagonal model Fisher at the local adapter on (up to ``fisher_max_examples``) training inputs."""
        if self._init not in self._fishers:
            local = self.local()
            set_state(self.model, local)
            data = self.splits.train
            data = data.subset(torch.arange(min(len(data), self.settings.fisher_max_examples)))
            began = time.perf_counter()
            try:
                self._fishers[self._init] = self._measured(("fisher", self._init), lambda: model_fisher(
                    self.model, data.batches(self.settings.eval_batch_size), lora_modules(local), _extra_groups(local),
                    mode=self.settings.fisher_mode, samples=self.settings.fisher_samples,
                    generator=torch.Generator().manual_seed(self.settings.seed + 5),
                ))
            except ValueError as err:
                raise ValueError(f"client {self.name}: {err}") from err
            self.timers.add("fisher", time.perf_counter() - began)
        self._use(("fisher", self._init))
        self._use(self._local_key(self._init, "all"))
        return self._fishers[self._init]

    def paper_pieces(self, at: str, space: str, labels: str, samples: int) -> tuple[Metric, dict[str, torch.Tensor]]:
        """Diagonal Fisher (``labels``: ``model`` or ``empirical``) and mean true-label loss gradient of the
        federated (``at="fed"``) or the local adapter on ``samples`` seeded training examples, the same for both,
        in LoRA factor space (``space="factors"``) or ΔW space (``"delta"``); cached per key and charged."""
        state = self.fed if at == "fed" else self.local()
        key = ("paper", at if at == "fed" else self._init, space, labels, samples)
        if key not in self._papers:
            self._papers[key] = self._measured(key, lambda: self._paper_now(state, at, space, labels, samples))
        self._use(key)
        return self._papers[key]

    def _paper_now(
        self, state: AdapterState, at: str, space: str, labels: str, samples: int
    ) -> tuple[Metric, dict[str, torch.Tensor]]:
        train = self.splits.train
        data = train.subset(torch.randperm(len(train), generator=self.generator("paper", "samples"))[:samples])
        draws = self.generator("paper", at)
        set_state(self.model, state)
        try:
            if space == "factors":
                params = adapter_parameters(self.model)
                fisher, grad = parameter_fisher(self.model, data.batches(1), params, labels=labels, generator=draws)
            else:
                groups, size = (lora_modules(state), _extra_groups(state)), self.settings.eval_batch_size
                fisher = model_fisher(self.model, data.batches(size), *groups, mode=self.settings.fisher_mode,
                                      samples=self.settings.fisher_samples, generator=draws, labels=labels)
                grad = delta_gradient(self.model, data.batches(size), *groups)
            check_finite_pieces(fisher, "Fisher")
            check_finite_pieces(grad, "loss gradient")
        except ValueError as err:
            raise ValueError(f"client {self.name}, {at} model: {err}") from err
        return fisher, grad


def _extra_groups(state: AdapterState) -> dict[str, list[str]]:
    """Each saved module's name with its parameter keys."""
    extras: dict[str, list[str]] = defaultdict(list)
    for key in extra_keys(state):
        extras[group_of(key)].append(key)
    return dict(extras)


def _freeze(weights: Sequence[Weights]) -> tuple:
    return tuple(round(w, 10) if isinstance(w, (int, float)) else tuple(sorted(w.items())) for w in weights)
