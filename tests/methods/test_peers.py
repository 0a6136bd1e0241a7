"""The personalized-FL peers: each one's defining rule, and a whole run with all five beside FedIT."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import Interrupted, interrupt_after, without_seconds

from potara import config, engine, methods
from potara.config import ConfigError, PeersConfig
from potara.federation import checkpoint
from potara.federation import rounds as fed_rounds
from potara.federation.personal import unpack_apfl
from potara.federation.recipes import APFL, FEDIT, FEDSA_LORA, FFA_LORA, Ditto
from potara.flower.settings import from_run_config
from potara.merge.taskvec import LORA_A, LORA_B, extra_keys, group_of, lora_modules
from potara.methods import apfl_posthoc, ditto_posthoc, feddpa
from potara.models.adapters import get_state, parse_payload, serialize, set_state
from potara.models.loading import load_peft_classifier
from potara.personalize.session import ClientSession, Timers
from potara.training.loop import train, train_through_merge

PEERS = ["ffa_lora", "fedsa_lora", "ditto", "ditto_posthoc", "apfl", "apfl_posthoc", "feddpa"]


def tiny_cfg(tiny_model_dir, synthetic_csv, *extra: str) -> config.RunConfig:
    return config.load(None, [
        f"model.name={tiny_model_dir}", f"data.source={synthetic_csv}", "data.num_clients=3",
        "data.classes_per_client=2", "data.train_sizes=[12,40]", "data.test_size=20", "fed.rounds=2",
        "local.epochs=2", "model.max_length=16", "lora.r=2", "lora.alpha=4", "threads=1", "lora.head_lr_scale=10",
        *extra,
    ])


@pytest.fixture(scope="module")
def tiny(tiny_model_dir, synthetic_csv):
    """The tiny model, its clients, and the pretrained adapter (what every federation starts from)."""
    cfg = tiny_cfg(tiny_model_dir, synthetic_csv)
    torch.set_num_threads(1)
    fed_data = engine.load_federated_data(cfg)
    model = load_peft_classifier(cfg.model, cfg.lora, len(fed_data.label_names), cfg.seed)
    return SimpleNamespace(
        cfg=cfg, model=model, clients=engine.encode_clients(cfg, fed_data), pretrained=get_state(model),
        dirs=(tiny_model_dir, synthetic_csv),
    )


def federate(tiny, recipe, rounds: int = 2, kept_after: list | None = None, fraction: float = 1.0):
    """``rounds`` rounds of ``recipe``; the final global tensors and what each client kept (also after every
    round, into ``kept_after``)."""
    shared, kept = recipe.split(tiny.pretrained)[0], recipe.kept_at_start(tiny.pretrained)
    held = {c.name: kept for c in tiny.clients} if kept else {}
    budget = engine.fed_budget(tiny.cfg)
    state = fed_rounds.run_rounds(
        tiny.model, {c.name: c.train for c in tiny.clients}, shared, recipe.strategy("factors"), rounds=rounds,
        fraction=fraction, budget=dataclasses.replace(budget, lr=budget.lr * recipe.lr_scale), seed=0, recipe=recipe,
        kept=held,
        on_round=None if kept_after is None else lambda entry, state: kept_after.append(dict(held)),
    )
    return state, held


def spy_payloads(monkeypatch) -> list[set[str]]:
    """The tensor names of every payload serialized for the wire (both directions), parsed from its bytes."""
    seen: list[set[str]] = []

    def spying(state, dtype="fp32"):
        payload = serialize(state, dtype)
        seen.append(set(parse_payload(payload)))
        return payload

    monkeypatch.setattr(fed_rounds, "serialize", spying)
    return seen


def session_of(tiny, fed, client: int = 0) -> ClientSession:
    return ClientSession(
        tiny.model, tiny.clients[client], fed, tiny.pretrained, engine.session_settings(tiny.cfg), Timers()
    )


@pytest.fixture(scope="module")
def fedit_state(tiny):
    return federate(tiny, FEDIT, rounds=1)[0]


def test_ffa_lora_keeps_every_a_at_the_shared_init_and_never_sends_it(tiny, monkeypatch):
    payloads = spy_payloads(monkeypatch)
    a_keys = [k for k in tiny.pretrained if k.endswith(LORA_A)]
    snapshots: list[dict] = []
    state, _ = federate(tiny, FFA_LORA, kept_after=snapshots)
    assert len(payloads) == 2 * (1 + len(tiny.clients))
    assert all(keys and not any(k.endswith(LORA_A) for k in keys) for keys in payloads)
    assert len(snapshots) == 2 and all(len(s) == len(tiny.clients) for s in snapshots)
    for snapshot in snapshots:
        for kept in snapshot.values():
            assert all(kept[k].equal(tiny.pretrained[k]) for k in a_keys)  # bit-equal, every round, every client
    assert any(state[k].abs().sum() > 0 for k in state if k.endswith(LORA_B))  # B did train


def test_fedsa_lora_sends_only_a_and_keeps_each_b_and_head_on_its_client(tiny, monkeypatch):
    payloads = spy_payloads(monkeypatch)
    steps = []
    original = fed_rounds.client_step

    def spying(*args, **kwargs):
        update = original(*args, **kwargs)
        steps.append((args[1], kwargs["kept"], update.kept))
        return update

    monkeypatch.setattr(fed_rounds, "client_step", spying)
    state, held = federate(tiny, FEDSA_LORA)
    a_keys = {k for k in tiny.pretrained if k.endswith(LORA_A)}
    local_keys = set(tiny.pretrained) - a_keys  # every B and the head
    assert len(payloads) == 2 * (1 + len(tiny.clients))
    assert all(keys == a_keys for keys in payloads)  # A, all of it, and nothing else, both directions
    assert set(state) == a_keys and set(held["client_00"]) == local_keys and extra_keys(held["client_00"])
    first, second = steps[: len(tiny.clients)], steps[len(tiny.clients) :]
    for (client, _, after_round_1), (same, given_in_round_2, _) in zip(first, second):
        assert client == same and all(given_in_round_2[k].equal(after_round_1[k]) for k in local_keys)
    assert all(held[c][k].equal(second[i][2][k]) for i, c in enumerate(held) for k in local_keys)
    for keys in ([k for k in local_keys if k.endswith(LORA_B)], extra_keys(held["client_00"])):
        assert not all(held["client_00"][k].equal(held["client_01"][k]) for k in keys)  # one B, one head per client


def spy_wire(monkeypatch) -> list[bytes]:
    """Every payload serialized for the wire (both directions), as bytes."""
    seen: list[bytes] = []

    def spying(state, dtype="fp32"):
        seen.append(serialize(state, dtype))
        return seen[-1]

    monkeypatch.setattr(fed_rounds, "serialize", spying)
    return seen


def distance(a: dict, b: dict) -> float:
    return sum(float((a[k] - b[k]).pow(2).sum()) for k in a)


def test_ditto_sends_exactly_fedits_payloads_and_keeps_each_personal_model_home(tiny, monkeypatch):
    wire = spy_wire(monkeypatch)
    fedit_state, _ = federate(tiny, FEDIT)
    fedit_wire, wire[:] = list(wire), []
    state, held = federate(tiny, Ditto(0.1))
    assert wire == fedit_wire  # the same bytes, both directions: v_k adds nothing and perturbs nothing
    assert all(state[k].equal(fedit_state[k]) for k in state)
    assert set(held) == {c.name for c in tiny.clients}
    for personal in held.values():
        assert set(personal) == set(tiny.pretrained) and serialize(personal) not in wire
        assert distance(personal, state) > 0
    assert distance(held["client_00"], held["client_01"]) > 0  # one v per client


def test_ditto_personal_model_moves_only_in_the_rounds_its_client_is_sampled(tiny):
    snapshots: list[dict] = []
    federate(tiny, Ditto(0.1), rounds=3, kept_after=snapshots, fraction=0.34)
    names = [c.name for c in tiny.clients]
    before = {c: tiny.pretrained for c in names}  # v_k starts from the initial adapter
    for r, after in enumerate(snapshots, start=1):
        chosen = fed_rounds.sample_clients(names, 0.34, 0, r)
        assert len(chosen) == 1
        for c in names:
            moved = any(not after[c][k].equal(before[c][k]) for k in before[c])
            assert moved == (c in chosen), (r, c)
        before = after


def test_ditto_mu_zero_is_local_training_and_a_large_mu_holds_v_near_w(tiny):
    _, free = federate(tiny, Ditto(0.0))
    model, budget = tiny.model, engine.fed_budget(tiny.cfg)
    for i, c in enumerate(tiny.clients):  # fraction 1: client i is the i-th sampled in every round
        set_state(model, tiny.pretrained)
        for r in (1, 2):
            train(model, c.train, budget, torch.Generator().manual_seed(fed_rounds.client_seed(0, r, i)))
        alone = get_state(model)
        assert all(free[c.name][k].equal(alone[k]) for k in alone)  # v never saw w
    w1, _ = federate(tiny, FEDIT, rounds=1)  # what every client received in round 2
    far = {mu: federate(tiny, Ditto(mu))[1]["client_00"] for mu in (1.0, 1000.0)}
    assert distance(free["client_00"], w1) > distance(far[1.0], w1) > distance(far[1000.0], w1)


def test_ditto_posthoc_pulls_toward_the_federated_adapter_and_mu_zero_is_fedit_ft(tiny, fedit_state):
    session = session_of(tiny, fedit_state)
    dist = {}
    for mu in (0.0, 1.0, 100.0):
        cfg = dataclasses.replace(tiny.cfg, peers=PeersConfig(ditto_mu=mu))
        personal = ditto_posthoc.build(cfg).personalize(session).states[0]
        dist[mu] = distance(personal, fedit_state)
        if mu == 0.0:
            plain = session.local("federated")
            assert all(personal[k].equal(plain[k]) for k in plain)
    assert dist[0.0] > dist[1.0] > dist[100.0] > 0


def test_apfl_posthoc_learns_alpha_and_reports_one_minus_alpha(tiny, fedit_state, monkeypatch):
    """α read off the trained parameter (α = sigmoid(s)): the reported λ is 1 − α, and the chosen merge is the
    mixture APFL trained, ``α v + (1 − α) w_F``, module by module."""
    trained = []

    def spying(model, data, budget, gen, groups, mixture):
        loss = train_through_merge(model, data, budget, gen, groups, mixture)
        trained.append((groups[-1]["params"][0], mixture))
        return loss

    monkeypatch.setattr(apfl_posthoc, "train_through_merge", spying)
    session = session_of(tiny, fedit_state)
    choice = apfl_posthoc.build(tiny.cfg).personalize(session)
    (logit, mixture), = trained
    alpha = float(torch.sigmoid(logit))
    assert abs(alpha - 0.5) > 1e-3 and choice.lam == pytest.approx(1 - alpha)  # α moved from APFL's ½
    assert choice.weights == [choice.lam, alpha] and choice.states[0] is fedit_state
    local = choice.states[1]
    assert any(not local[k].equal(fedit_state[k]) for k in local)  # v trained with α
    assert_same_function(session.merged(choice.states, choice.weights), mixture())


def assert_same_function(first: dict, second: dict) -> None:
    """Two exact merges (rank-concatenated, scale 1) with the same ΔW = B·A per module and the same saved modules."""
    with torch.no_grad():
        for module in lora_modules(first):
            torch.testing.assert_close(first[module + LORA_B] @ first[module + LORA_A],
                                       second[module + LORA_B] @ second[module + LORA_A])
        for key in extra_keys(first):
            torch.testing.assert_close(first[key], second[key])


def test_feddpa_weights_depend_on_the_instance(tiny, fedit_state):
    session = session_of(tiny, fedit_state)
    before = {k: v.clone() for k, v in fedit_state.items()}
    # a cap below saturation on the tiny model (the dev-chosen default, 2, sends every α there to 1)
    choice = variant(tiny, "feddpa@peers.feddpa_weight_cap=0.2").personalize(session)
    assert all(fedit_state[k].equal(before[k]) for k in before)  # the global adapter stayed frozen
    test = session.split("test")
    alphas = feddpa.instance_weights(session, test, 0.2)
    assert alphas.min() >= 0 and alphas.max() <= 1 and alphas.unique().numel() > 1
    trained_on = feddpa.instance_weights(session, session.split("train"), 0.2)
    assert choice.lam == pytest.approx(1 - float(trained_on.mean()))  # reported over train: test is only scored
    fed, local = choice.states
    assert any(local[k].abs().sum() > 0 for k in local if k.endswith(LORA_B))  # the local adapter trained
    with_local_head = {**fed, **{k: local[k] for k in extra_keys(fed)}}
    at_zero = session.predict_merged(choice.states, feddpa.dual_weights(fed, 0.0), test)
    assert torch.allclose(at_zero, session.predict_merged([with_local_head], [1.0], test), atol=1e-5)
    logits, levels = choice.logits(test), torch.round(alphas * 20) / 20
    for i in (int(alphas.argmin()), int(alphas.argmax())):
        one = session.predict_merged(choice.states, feddpa.dual_weights(fed, float(levels[i])), test.subset(torch.tensor([i])))
        assert torch.allclose(logits[i], one[0], atol=1e-5)  # each instance gets its own weight's model


def test_feddpa_passes_over_its_training_inputs_once_and_never_over_test(tiny, fedit_state):
    """Its cost: the representations of the training inputs, one forward pass each (they were taken twice, and the
    test split's a third time, only to report λ)."""
    session = session_of(tiny, fedit_state)
    with session.meter.attached(session.model):
        session.begin()
        variant(tiny, "feddpa@peers.feddpa_weight_cap=0.2").personalize(session)
        cost = session.charge()
    assert cost.forward_passes == len(session.split("train"))


def test_feddpa_scales_only_the_local_lora_by_alpha_and_keeps_the_local_head_whole(tiny, fedit_state):
    heads, lora = extra_keys(fedit_state), lora_modules(fedit_state)
    for alpha in (0.0, 0.3, 1.0):
        fed_w, local_w = feddpa.dual_weights(fedit_state, alpha)
        assert all(fed_w[m] == 1.0 and local_w[m] == alpha for m in lora)
        assert all(fed_w[group_of(k)] == 0.0 and local_w[group_of(k)] == 1.0 for k in heads)


def test_feddpa_trains_the_head_at_head_lr_scale(tiny, fedit_state, monkeypatch):
    seen = []
    monkeypatch.setattr(feddpa, "train_through_levels", lambda model, data, budget, gen, groups, *_: seen.append(groups))
    feddpa.build(tiny.cfg).personalize(session_of(tiny, fedit_state))
    lr, scale = tiny.cfg.local.lr, tiny.cfg.lora.head_lr_scale
    assert scale != 1.0 and sorted(g["lr"] for g in seen[0]) == sorted([lr, lr * scale])
    head = next(g for g in seen[0] if g["lr"] == lr * scale)
    assert len(head["params"]) == len(extra_keys(fedit_state))


@pytest.fixture(scope="module")
def peers_run(tiny):
    cfg = tiny_cfg(*tiny.dirs, f"methods=[fedit,{','.join(PEERS)}]")
    return cfg, engine.run(cfg)


def test_a_run_with_every_peer_reports_finite_accuracies_and_measured_bytes(tiny, peers_run):
    cfg, result = peers_run
    m, n, rounds = result.methods, len(tiny.clients), cfg.fed.rounds
    assert list(m) == ["fedit", *PEERS]
    for name, r in m.items():
        assert len(r.per_client) == n and all(math.isfinite(row["acc"]) for row in r.per_client)
        assert r.bytes_up > 0 and r.bytes_down > 0 and r.rounds == rounds
    for name, recipe in (("ffa_lora", FFA_LORA), ("fedsa_lora", FEDSA_LORA)):
        payload = len(serialize(recipe.split(tiny.pretrained)[0]))
        assert m[name].bytes_up == rounds * n * payload < m["fedit"].bytes_up
        assert m[name].bytes_down == (rounds + 1) * n * payload  # the rounds, then the final broadcast
        assert sum(r[name]["bytes_up"] for r in result.rounds) == m[name].bytes_up
        assert result.rounds[-1][name]["broadcast_bytes"] == n * payload
    assert m["fedit"].bytes_up == rounds * n * len(serialize(tiny.pretrained))
    assert m["fedit"].bytes_down == (rounds + 1) * n * len(serialize(tiny.pretrained))
    assert all(m[name].bytes_up == m["fedit"].bytes_up for name in ("ditto", "apfl", "apfl_posthoc", "feddpa"))
    assert all(row["lambda"] != 0.5 for row in m["apfl_posthoc"].per_client)
    assert any(row["lambda"] != 0.5 for row in m["apfl"].per_client)  # α's AdamW steps may cancel on a 1-batch client
    assert all(0 <= row["lambda"] <= 1 for row in m["feddpa"].per_client)


def test_fedit_is_unchanged_by_the_peers(tiny, peers_run):
    _, with_peers = peers_run
    alone = engine.run(tiny_cfg(*tiny.dirs, "methods=[fedit]"))
    a, b = alone.methods["fedit"], with_peers.methods["fedit"]
    assert (a.bytes_up, a.bytes_down) == (b.bytes_up, b.bytes_down)
    assert [r["acc"] for r in a.per_client] == [r["acc"] for r in b.per_client]


def client_steps(monkeypatch) -> list[str]:
    """The client of every client step from now on."""
    step, stepped = fed_rounds.client_step, []

    def stepping(model, client, *args, **kwargs):
        stepped.append(client)
        return step(model, client, *args, **kwargs)

    monkeypatch.setattr(fed_rounds, "client_step", stepping)
    return stepped


def test_peer_federations_interrupted_mid_run_resume_to_the_uninterrupted_result(tiny, tmp_path, monkeypatch):
    """Interrupted after fedsa_lora's round 1, then after ditto's, then after apfl's (each client's own B and head,
    its personal adapter, or its v_k and α_k, only on disk), each rerun continues from the checkpoints, running only
    the rounds left, and the run ends as the uninterrupted one: rows (APFL's λ = 1 − α_k), bytes and round records."""
    cfg = tiny_cfg(*tiny.dirs, "methods=[fedit,fedsa_lora,ditto,apfl]")
    straight, n = engine.run(cfg), len(tiny.clients)
    # FedIT 2 + fedsa 1; fedsa 1 + ditto 1; ditto 1 + apfl 1
    for recipe, rounds_left in (("fedsa_lora", 2 + 1), ("ditto", 1 + 1), ("apfl", 1 + 1)):
        with monkeypatch.context() as mp:
            stepped = client_steps(mp)
            interrupt_after(mp, tmp_path / recipe, 1)
            with pytest.raises(Interrupted):
                engine.run(cfg, checkpoint_dir=tmp_path)
        assert len(stepped) == rounds_left * n
        assert [p.name for p in checkpoint.rounds(tmp_path / recipe)] == ["round-000001"]
    stepped = client_steps(monkeypatch)
    resumed = engine.run(cfg, checkpoint_dir=tmp_path)
    assert len(stepped) == n  # apfl's round 2 alone
    for name in ("fedit", "fedsa_lora", "ditto", "apfl"):
        assert without_seconds(resumed.methods[name].per_client) == without_seconds(straight.methods[name].per_client)
        assert resumed.methods[name].bytes_up == straight.methods[name].bytes_up
    assert without_seconds(resumed.rounds) == without_seconds(straight.rounds)


@pytest.mark.parametrize("peer", ["ffa_lora", "fedsa_lora", "ditto", "apfl"])
def test_flower_refuses_peers_with_their_own_federation(peer):
    with pytest.raises(ConfigError, match=f"{peer}.*only the embedded engine"):
        from_run_config({"overrides": f"methods=[fedit,{peer}]"})
    for posthoc in ("ditto_posthoc", "apfl_posthoc"):
        assert from_run_config({"overrides": f"methods=[fedit,{posthoc}]"}).run.methods == ["fedit", posthoc]


def variant(tiny, spec: str):
    """The method named ``spec`` (a name or a ``name@key=value`` variant) under the tiny run's config."""
    return methods.build(spec, tiny.cfg)


def logits_of(tiny, session: ClientSession, choice) -> torch.Tensor:
    """The chosen model's logits on the session's test split."""
    test = session.split("test")
    return choice.logits(test) if choice.logits else session.predict_merged(choice.states, choice.weights, test)


def test_feddpa_local_adapter_is_trained_under_alpha_of_each_input(tiny, fedit_state):
    """With a tiny cap every training input has α(x) = 0, so the local LoRA gets no gradient and stays at its
    initialisation (only the head trains); with a large cap it trains (the old code trained it at α = 1)."""
    session = session_of(tiny, fedit_state)
    lora_keys = [k for k in tiny.pretrained if k.endswith((LORA_A, LORA_B))]
    local = {}
    for cap in (1e-6, 50.0):
        local[cap] = variant(tiny, f"feddpa@peers.feddpa_weight_cap={cap}").personalize(session).states[1]
    assert all(local[1e-6][k].equal(tiny.pretrained[k]) for k in lora_keys)
    assert any(not local[1e-6][k].equal(fedit_state[k]) for k in extra_keys(fedit_state))  # the head trained
    assert any(not local[50.0][k].equal(tiny.pretrained[k]) for k in lora_keys if k.endswith(LORA_B))


def test_feddpa_training_loss_is_the_loss_of_the_weighted_models(tiny, fedit_state, monkeypatch):
    """Each training input goes through the merge at its own (rounded) α(x): the levels handed to training are
    the instance weights of the training inputs."""
    seen = []
    monkeypatch.setattr(feddpa, "train_through_levels", lambda *args: seen.append(args))
    session = session_of(tiny, fedit_state)
    variant(tiny, "feddpa@peers.feddpa_weight_cap=0.5").personalize(session)
    (_, data, _, _, _, merged_at, level), = seen
    alphas = feddpa.instance_weights(session, session.split("train"), 0.5)
    assert data is session.split("train") and torch.equal(level, torch.round(alphas * 20) / 20)
    assert level.unique().numel() > 1
    fed = fedit_state
    local = {**tiny.pretrained, **{k: fed[k] for k in extra_keys(fed)}}  # untrained here: training is stubbed out
    assert_same_function(merged_at(0.35), session.merged([fed, local], feddpa.dual_weights(fed, 0.35), "delta"))


def test_feddpa_weight_cap_above_one_is_valid_and_changes_predictions(tiny, fedit_state):
    session = session_of(tiny, fedit_state)
    outs = [logits_of(tiny, session, variant(tiny, f"feddpa@peers.feddpa_weight_cap={cap}").personalize(session))
            for cap in (0.2, 2.0)]
    assert not torch.allclose(outs[0], outs[1])
    for bad in ("0", "-1", "inf", "nan"):
        with pytest.raises(ConfigError, match="feddpa_weight_cap"):
            tiny_cfg(*tiny.dirs, f"peers.feddpa_weight_cap={bad}")


def apfl_recipe(tiny, alpha_lr: float = 0.1) -> APFL:
    cfg = tiny.cfg
    return APFL(alpha_lr, cfg.lora.alpha / cfg.lora.r, 2 * cfg.lora.r)


def test_apfl_in_rounds_sends_fedits_payloads_and_keeps_v_and_alpha_home(tiny, monkeypatch):
    wire = spy_wire(monkeypatch)
    fedit_state, _ = federate(tiny, FEDIT)
    fedit_wire, wire[:] = list(wire), []
    snapshots: list[dict] = []
    state, held = federate(tiny, apfl_recipe(tiny), kept_after=snapshots)
    assert wire == fedit_wire  # v_k and α_k add nothing to the wire and perturb nothing
    assert all(state[k].equal(fedit_state[k]) for k in state)
    alphas = [[unpack_apfl(s[c.name])[2] for c in tiny.clients] for s in snapshots]
    assert all(abs(a - 0.5) > 1e-3 for a in alphas[0]) and alphas[1] != alphas[0]  # α moves, and again next round
    _, personal, _ = unpack_apfl(held["client_00"])
    assert set(personal) == set(tiny.pretrained) and distance(personal, tiny.pretrained) > 0
    assert distance(personal, unpack_apfl(held["client_01"])[1]) > 0  # one v per client


def test_apfl_personal_model_is_the_mixture_and_alpha_changes_predictions(tiny):
    state, held = federate(tiny, apfl_recipe(tiny))
    session = session_of(tiny, {**state, **held["client_00"]})
    choice = variant(tiny, "apfl").personalize(session)
    glob, personal, alpha = unpack_apfl(session.fed)
    assert choice.weights == [1 - alpha, alpha] and choice.lam == pytest.approx(1 - alpha)
    assert all(choice.states[0][k].equal(state[k]) for k in state) and set(choice.states[0]) == set(state)
    assert all(choice.states[1][k].equal(personal[k]) for k in personal) and set(choice.states[1]) == set(personal)
    test = session.split("test")
    other = session.predict_merged([glob, personal], [alpha, 1 - alpha], test)
    assert not torch.allclose(session.predict_merged(choice.states, choice.weights, test), other)


def test_apfl_alpha_lr_moves_alpha_more(tiny):
    moved = {lr: abs(unpack_apfl(federate(tiny, apfl_recipe(tiny, lr))[1]["client_00"])[2] - 0.5) for lr in (0.01, 0.3)}
    assert moved[0.3] > moved[0.01] > 0


@pytest.mark.parametrize("spec", ["ditto", "apfl"])
def test_lr_scale_of_a_peer_in_its_rounds_changes_its_models(tiny, spec):
    """``peers.<peer>_lr_scale`` through the variant syntax: the recipe's lr is scaled, and the personal models
    (logits on a test split) differ."""
    outs = []
    for scale in (1.0, 3.0):
        method = variant(tiny, f"{spec}@peers.{spec}_lr_scale={scale}")
        assert method.federation.lr_scale == scale
        state, held = federate(tiny, method.federation)
        session = session_of(tiny, {**state, **held["client_00"]})
        outs.append(logits_of(tiny, session, method.personalize(session)))
    assert not torch.allclose(outs[0], outs[1])


@pytest.mark.parametrize("spec, key", [
    ("ditto_posthoc", "ditto_lr_scale"), ("apfl_posthoc", "apfl_lr_scale"), ("feddpa", "feddpa_lr_scale"),
])
def test_lr_scale_of_a_posthoc_peer_changes_its_models(tiny, fedit_state, spec, key):
    session = session_of(tiny, fedit_state)
    outs = [logits_of(tiny, session, variant(tiny, f"{spec}@peers.{key}={scale}").personalize(session))
            for scale in (1.0, 3.0)]
    assert not torch.allclose(outs[0], outs[1])


@pytest.mark.parametrize("key", ["ditto_lr_scale", "apfl_lr_scale", "feddpa_lr_scale"])
def test_lr_scales_must_be_positive(tiny, key):
    with pytest.raises(ConfigError, match=key):
        tiny_cfg(*tiny.dirs, f"peers.{key}=0")
