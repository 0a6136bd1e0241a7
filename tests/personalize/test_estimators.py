"""The paper's estimator as read: its λ formula, traces and cross term, its Fisher in factor space, and a run."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from potara import config, engine
from potara.merge.fisher import delta_gradient, model_fisher, parameter_fisher
from potara.merge.mixing import CROSS_TERMS, clipped_cross, closed_form_lambda, joint_lambda
from potara.merge.paper_weight import POOLED, cosine, grouped_weights, inverse_traces, joint_weight
from potara.methods import build
from potara.models.adapters import set_state
from potara.personalize.estimators import PaperOptions, paper
from potara.personalize.session import ClientSession, Timers, evaluate_split
from potara.training.causal_lm import PromptTargets
from potara.training.loop import Evaluation


def test_without_a_cross_term_the_weight_is_the_closed_form():
    for a, b in [(1.0, 3.0), (4.0, 1.0), (2.0, 2.0)]:
        assert joint_lambda(a, b, 0.0) == (pytest.approx(b / (a + b)), "")
        assert joint_lambda(a, b)[0] == pytest.approx(closed_form_lambda(a, b))


def test_hand_computed_cross_terms():
    assert joint_lambda(1.0, 3.0, 0.5)[0] == pytest.approx((3.0 - 0.5) / (1.0 + 3.0 - 1.0))  # 2.5 / 3
    # c = min(a, b): all the weight on the smaller variance (perfectly correlated errors)
    assert joint_lambda(1.0, 3.0, 1.0)[0] == 1.0
    assert joint_lambda(3.0, 1.0, 1.0)[0] == 0.0
    lam, note = joint_lambda(2.0, 2.0, 2.0)  # a + b − 2c = 0
    assert lam == 0.5 and "0.5" in note


def test_the_cross_term_is_clipped_and_bounded_by_both_marginals():
    assert clipped_cross(-0.4, 1.0, 3.0) == 0.0
    assert clipped_cross(0.5, 1.0, 3.0) == 0.5
    assert clipped_cross(1.7, 1.0, 3.0) == 1.0
    assert cosine(1.0, 0.0, 4.0) == 0.0 and cosine(2.0, 1.0, 4.0) == pytest.approx(1.0)


def test_swapping_the_assignment_swaps_the_traces():
    plain, swapped = joint_weight(1.0, 3.0, 0.2), joint_weight(1.0, 3.0, 0.2, fed_is_a=False)
    assert plain.lam == pytest.approx((3.0 - 0.2) / (4.0 - 0.4))
    assert swapped.lam == pytest.approx((1.0 - 0.2) / (4.0 - 0.4))
    assert (swapped.v_fed, swapped.v_local) == (plain.v_local, plain.v_fed)
    assert joint_weight(1.0, 3.0, 0.9, cross="none").lam == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("form", "cos", "expected_c"),
    [("cosine", -0.5, 0.0), ("signed", -0.5, -0.5), ("signed", 0.5, 0.5), ("geometric", 0.5, 0.5 * 3**0.5),
     ("geometric", -0.5, 0.0), ("none", 0.9, 0.0)],
)
def test_each_cross_form_gives_its_trace_and_the_weight_that_minimises_the_joint_bound(form, cos, expected_c):
    """a = 1 (federated), b = 3: c as the form says, λ = (b − c)/(a + b − 2c) the minimiser of the joint bound."""
    weight = joint_weight(1.0, 3.0, cos, cross=form)
    assert CROSS_TERMS[form](cos, 1.0, 3.0) == pytest.approx(expected_c) == pytest.approx(weight.cross)
    grid = [i / 1000 for i in range(1001)]
    best = min(grid, key=lambda lam: lam**2 * 1.0 + (1 - lam) ** 2 * 3.0 + 2 * lam * (1 - lam) * expected_c)
    assert weight.lam == pytest.approx(best, abs=1e-3)


def test_traces_on_a_known_diagonal():
    fisher = {"w": torch.tensor([1.0, 3.0]), "kfac": (torch.tensor([1.0, 2.0]), torch.tensor([0.5, 1.0]))}
    traces = inverse_traces(fisher, 1.0)
    assert traces["w"] == pytest.approx(1 / 2 + 1 / 4)
    assert traces["kfac"] == pytest.approx(1 / 1.5 + 1 / 2 + 1 / 2 + 1 / 3)  # g ⊗ x = [[.5, 1], [1, 2]]
    with pytest.raises(ValueError):
        inverse_traces(fisher, 0.0)


def test_grouped_weights_pool_or_split_by_module():
    f_fed = {"m1.lora_A.weight": torch.full((2,), 1.0), "m2.lora_A.weight": torch.full((2,), 4.0)}
    f_loc = {"m1.lora_A.weight": torch.full((2,), 4.0), "m2.lora_A.weight": torch.full((2,), 1.0)}
    g = {k: torch.zeros(2) for k in f_fed}
    pooled = grouped_weights(f_fed, f_loc, g, g, 1e-12, lambda _: POOLED)
    assert list(pooled) == [POOLED] and pooled[POOLED].lam == pytest.approx(0.5)  # traces 2.5 and 2.5
    per = grouped_weights(f_fed, f_loc, g, g, 1e-12, lambda k: k.split(".")[0])
    assert per["m1"].lam == pytest.approx(0.5 / 2.5) and per["m2"].lam == pytest.approx(2.0 / 2.5)


def test_inverse_fisher_weight_is_the_minimum_variance_merge_of_two_gaussians():
    """Known answer: F = 1/σ² per coordinate makes the traces Σσ², and λ = b/(a+b) the minimum-variance weight."""
    gen = torch.Generator().manual_seed(0)
    sd_fed, sd_loc = torch.rand(50, generator=gen) + 0.2, torch.rand(50, generator=gen) * 2 + 0.2
    est = joint_weight(*inverse_traces({"f": sd_fed**-2, "l": sd_loc**-2}, 1e-12).values(), 0.0)
    a, b = float(sd_fed.pow(2).sum()), float(sd_loc.pow(2).sum())
    assert est.lam == pytest.approx(b / (a + b), rel=1e-6)
    e_fed = torch.randn(20_000, 50, generator=gen) * sd_fed
    e_loc = torch.randn(20_000, 50, generator=gen) * sd_loc
    grid = torch.linspace(0, 1, 101)
    variance = torch.stack([(lam * e_fed + (1 - lam) * e_loc).pow(2).sum(1).mean() for lam in grid])
    assert float(grid[variance.argmin()]) == pytest.approx(est.lam, abs=0.02)


def test_the_cross_term_weight_is_the_minimum_variance_merge_of_correlated_gaussians():
    gen = torch.Generator().manual_seed(1)
    shared = torch.randn(20_000, 40, generator=gen)
    e_fed = shared + 0.5 * torch.randn(20_000, 40, generator=gen)
    e_loc = shared + 1.5 * torch.randn(20_000, 40, generator=gen)
    a, b, c = (float((x * y).sum(1).mean()) for x, y in ((e_fed, e_fed), (e_loc, e_loc), (e_fed, e_loc)))
    lam, _ = joint_lambda(a, b, c)
    grid = torch.linspace(0, 1, 101)
    variance = torch.stack([(x * e_fed + (1 - x) * e_loc).pow(2).sum(1).mean() for x in grid])
    assert float(grid[variance.argmin()]) == pytest.approx(lam, abs=0.015)
    assert abs(lam - b / (a + b)) > 0.05  # the cross term matters here


class Out:
    def __init__(self, logits):
        self.logits = logits


class Lora(nn.Module):
    """A LoRA layer stand-in: ``base_layer`` is the adapted map, ``a`` and ``b`` its factors."""

    def __init__(self, d_in: int, d_out: int, r: int = 2):
        super().__init__()
        self.base_layer = nn.Linear(d_in, d_out)
        self.base_layer.requires_grad_(False)
        self.a, self.b = nn.Parameter(torch.randn(r, d_in)), nn.Parameter(torch.randn(d_out, r) * 0.5)

    def forward(self, x):
        return self.base_layer(x) + x @ self.a.T @ self.b.T


class Tiny(nn.Module):
    def __init__(self, classes: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.proj = Lora(5, 4)
        self.head = nn.Linear(4, classes)

    def forward(self, x, **_):
        return Out(self.head(torch.tanh(self.proj(x)).mean(1)))


def trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def per_example_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Brute force: one autograd call per example."""
    params = trainable(model)
    out = []
    for i in range(len(x)):
        loss = nn.functional.cross_entropy(model(x[i : i + 1]).logits, y[i : i + 1])
        out.append(dict(zip(params, torch.autograd.grad(loss, list(params.values())))))
    return out


def data(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_factor_space_empirical_fisher_and_gradient_match_brute_force():
    model, (x, y) = Tiny(), data()
    fisher, grad = parameter_fisher(model, one_by_one(x, y), trainable(model), labels="empirical")
    brute = per_example_grads(model, x, y)
    for key in trainable(model):
        torch.testing.assert_close(fisher[key], torch.stack([g[key] ** 2 for g in brute]).mean(0))
        torch.testing.assert_close(grad[key], torch.stack([g[key] for g in brute]).mean(0))
    assert set(fisher) == {"proj.a", "proj.b", "head.weight", "head.bias"}


def test_factor_space_model_fisher_converges_to_the_expectation_over_classes():
    model, (x, _) = Tiny(), data(1)
    copies = x.expand(3000, -1, -1)
    fisher, _ = parameter_fisher(model, one_by_one(copies, torch.zeros(3000, dtype=torch.long)), trainable(model),
                                 generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        p = model(x).logits.softmax(-1)[0]
    per_class = per_example_grads(model, x.expand(3, -1, -1), torch.arange(3))
    for key in ("proj.a", "head.weight"):
        expected = sum(p[c] * per_class[c][key] ** 2 for c in range(3))
        torch.testing.assert_close(fisher[key], expected, rtol=0.1, atol=1e-4)


def test_delta_space_gradient_and_empirical_fisher_match_autograd_on_the_weight():
    model, (x, y) = Tiny(), data()
    model.proj.base_layer.weight.requires_grad_(True)
    brute = per_example_grads(model, x, y)
    model.proj.base_layer.weight.requires_grad_(False)
    extra = {"head": ["head.weight", "head.bias"]}
    grad = delta_gradient(model, [{"x": x, "labels": y}], ["proj"], extra)
    torch.testing.assert_close(grad["proj"], torch.stack([g["proj.base_layer.weight"] for g in brute]).mean(0))
    torch.testing.assert_close(grad["head.bias"], torch.stack([g["head.bias"] for g in brute]).mean(0))
    emp = model_fisher(model, [{"x": x, "labels": y}], ["proj"], extra, mode="exact", labels="empirical")
    torch.testing.assert_close(emp["proj"], torch.stack([g["proj.base_layer.weight"] ** 2 for g in brute]).mean(0))


def test_factor_space_fisher_takes_one_example_at_a_time():
    model, (x, y) = Tiny(), data()
    with pytest.raises(ValueError, match="one example"):
        parameter_fisher(model, [{"x": x, "labels": y}], trainable(model))
    with pytest.raises(ValueError, match="zero examples"):
        parameter_fisher(model, [], trainable(model))


def one_by_one(x: torch.Tensor, y: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    return [{"x": x[i : i + 1], "labels": y[i : i + 1]} for i in range(len(x))]


@pytest.fixture(scope="module")
def tiny(random_pair):
    """The tiny model, one client's splits, and two random adapters standing in for τ_F and τ_L."""
    return random_pair


def session_of(tiny, fed=None, client: int = 0, splits=None) -> ClientSession:
    return ClientSession(tiny.model, splits or tiny.clients[client], tiny.fed if fed is None else fed, tiny.pretrained,
                         engine.session_settings(tiny.cfg), Timers(), local=tiny.local)


def test_cached_evaluations_never_answer_for_a_freed_split(tiny):
    """The cache is keyed by identity; a split built, evaluated and dropped must not lend its answer to the next
    one CPython allocates at the same address (it did to ``halves()``' fresh subsets before)."""
    session, train = session_of(tiny), tiny.clients[0].train
    g = torch.Generator().manual_seed(1)
    for _ in range(6):
        part = train.subset(torch.randperm(len(train), generator=g)[: len(train) // 2])
        cached = session.evaluate([tiny.local], [1.0], part).loss
        set_state(tiny.model, tiny.local)
        assert cached == pytest.approx(evaluate_split(tiny.model, part, batch_size=8).loss)


def test_the_bounds_and_a_prior_correction_read_one_lambda_sweep_of_the_test_split(tiny, monkeypatch):
    """oracle_test's sweep over the grid on the test split is the only forward pass on it that oracle_split and a
    prior-corrected merge need: they score the cached logits (oracle_split made three sweeps before)."""
    session, test = session_of(tiny), tiny.clients[0].test
    passes = []
    forward = session.predict_merged
    monkeypatch.setattr(session, "predict_merged", lambda *args, **kw: passes.append(args[2]) or forward(*args, **kw))
    grid = list(tiny.cfg.potara.grid)
    for spec in ("oracle_test", "oracle_split", "oracle_test@potara.prior_correction=counts"):
        session.begin()
        choice = build(spec, tiny.cfg).personalize(session)
        (choice.logits or (lambda data: session.logits(choice.states, choice.weights, data)))(test)
        assert len(passes) == len(grid) and all(data is test for data in passes), spec
    cached = session.logits([tiny.fed, tiny.local], [0.3, 0.7], test)
    assert torch.equal(cached, forward([tiny.fed, tiny.local], [0.3, 0.7], test))
    assert not torch.equal(cached, session.logits([tiny.fed, tiny.local], [0.4, 0.6], test))


def test_a_loss_pass_redone_with_generation_is_charged_once(tiny, monkeypatch):
    """Causal-LM data: a merge scored for its loss alone, then with accuracy (generation), keeps one cost: the
    second pass redid the first (both were charged to every later method before)."""
    session = session_of(tiny)
    prompts = PromptTargets({"input_ids": torch.ones(3, 4, dtype=torch.long), "labels": torch.ones(3, 4, dtype=torch.long)})
    monkeypatch.setattr(session, "_evaluate_now", lambda states, weights, data, accuracy: Evaluation(1.0, 0.5, 3))
    session.evaluate([tiny.local], [1.0], prompts, accuracy=False)
    session.evaluate([tiny.local], [1.0], prompts)
    assert len([key for key in session._costs if key[0] == "eval"]) == 1


def test_halves_are_the_same_data_on_every_call(tiny):
    session = session_of(tiny)
    (_, second), (_, first) = session.halves()
    (_, second_again), (_, first_again) = session.halves()
    assert second is second_again and first is first_again
    assert len(first) + len(second) == len(tiny.clients[0].train)


@pytest.mark.parametrize("options", [
    PaperOptions(),
    PaperOptions(space="delta", traces="module"),
    PaperOptions(fisher="empirical", cross="none", assign="fed_is_b", samples=5, damping=1e-2),
])
def test_paper_gives_a_weight_in_the_unit_interval(tiny, options):
    est = paper(session_of(tiny), options=options)
    lams = est.lam.values() if isinstance(est.lam, dict) else [est.lam]
    assert all(0.0 <= lam <= 1.0 for lam in lams) and est.v_fed > 0 and est.v_local > 0
    if options.traces == "module":
        assert set(est.lam) == {"base_model.model.classifier", *(k.rsplit(".", 2)[0] for k in tiny.fed if "lora_A" in k)}


def test_swapping_the_assignment_on_a_client_gives_the_other_trace_to_the_federated_model(tiny):
    session = session_of(tiny)
    plain = paper(session, options=PaperOptions(cross="none"))
    swapped = paper(session, options=PaperOptions(cross="none", assign="fed_is_b"))
    assert (swapped.v_fed, swapped.v_local) == (plain.v_local, plain.v_fed)
    assert swapped.lam == pytest.approx(1.0 - plain.lam)


def test_paper_without_training_data_is_federated_and_non_finite_input_names_the_client(tiny):
    split = tiny.clients[0]
    empty = engine.ClientSplits(split.name, split.train.subset(torch.arange(0)), split.val, split.test)
    est = paper(session_of(tiny, splits=empty))
    assert est.lam == 1.0 and "no training data" in est.note
    broken = {k: v.clone() for k, v in tiny.fed.items()}
    next(v for k, v in broken.items() if "lora_B" in k).fill_(float("nan"))
    with pytest.raises(ValueError, match=f"client {split.name}.*non-finite"):
        paper(session_of(tiny, fed=broken))


def test_potara_paper_and_its_variants_run_end_to_end_with_a_lambda_cost(tiny_overrides):
    variants = ["potara_paper@potara.paper_traces=module@potara.paper_space=delta",
                "potara_paper@potara.paper_fisher=empirical@potara.paper_damping=1e-2"]
    cfg = config.load(None, [*tiny_overrides, "threads=1", f"methods=fedit,potara_paper,{','.join(variants)}"])
    rows = {name: m.per_client for name, m in engine.run(cfg).methods.items()}
    for row in rows["potara_paper"]:
        assert 0.0 <= row["lambda"] <= 1.0
        assert row["lambda_cost"]["train_passes"] == 2 * min(row["n_train"], 30)  # one pass per example per model
    assert all(0.0 <= lam <= 1.0 for row in rows[variants[0]] for lam in row["lambda"].values())
    assert [r["lambda"] for r in rows[variants[1]]] != [r["lambda"] for r in rows["potara_paper"]]


def test_a_run_merges_in_factor_space_and_exports_the_merge(tiny_overrides, tmp_path):
    """``potara.merge_space=factors`` takes effect: the factor average is what every merge uses (rank r, zero-padded
    to the merge adapter's 2r in the export), where the ΔW merge concatenates both adapters' factors."""
    base = [*tiny_overrides, "threads=1", "methods=fedit,fixed,potara", "potara.estimator=paper"]
    delta_run = engine.run(config.load(None, base), export_dir=tmp_path / "delta")
    delta = {n: m.per_client for n, m in delta_run.methods.items()}
    run = engine.run(config.load(None, [*base, "potara.merge_space=factors"]), export_dir=tmp_path / "factors")
    factors = {n: m.per_client for n, m in run.methods.items()}
    assert [r["lambda"] for r in factors["potara"]] == [r["lambda"] for r in delta["potara"]]
    assert [r["acc"] for r in factors["fedit"]] == [r["acc"] for r in delta["fedit"]]
    for space, zero_rows in (("delta", False), ("factors", True)):
        exported = sorted((tmp_path / space).iterdir())
        assert len(exported) == 3 and json.loads((exported[0] / "adapter_config.json").read_text())["r"] == 4  # 2r
        tensors = load_file(exported[0] / "adapter_model.safetensors")
        a_factors = [t for k, t in tensors.items() if "lora_A" in k]
        assert a_factors and all(bool((a[2:] == 0).all()) == zero_rows for a in a_factors), space


@pytest.mark.parametrize("item", ["potara.paper_space=weights", "potara.paper_fisher=true", "potara.paper_damping=0",
                                  "potara.paper_samples=0", "potara.merge_space=product", "potara.paper_assign=a"])
def test_bad_paper_settings_are_config_errors(item):
    with pytest.raises(config.ConfigError, match=item.split("=")[0]):
        config.load(None, [item])


def test_paper_settings_the_merge_space_and_the_local_init_are_variant_keys():
    cfg = config.load(None, ["methods=potara_paper@potara.paper_traces=module"])
    assert build("potara_paper@potara.paper_traces=module", cfg).name == "potara_paper@potara.paper_traces=module"
    variant = build("potara_paper@potara.merge_space=factors@local.init=pretrained", cfg)
    assert (variant.merge_space, variant.local_init) == ("factors", "pretrained")
    assert (build("potara", cfg).merge_space, build("potara", cfg).local_init) == (None, None)  # the run's
    assert PaperOptions.of(config.RunConfig().potara) == PaperOptions()  # paper(session) is potara_paper's default
    factors = config.load(None, ["potara.merge_space=factors"])
    for spec in ("apfl", "apfl_posthoc", "apfl@potara.merge_space=factors"):  # scored as trained: the exact merge
        assert build(spec, factors).merge_space == "delta", spec


def test_a_variant_with_its_own_local_init_and_merge_space_is_that_run(tiny_overrides):
    """On one federation, ``potara@local.init=pretrained`` and ``…@potara.merge_space=factors`` give what runs
    with those settings for every method give (λ and accuracy per client)."""
    base = [*tiny_overrides, "threads=1", "potara.estimator=heldout"]
    mixed = engine.run(config.load(None, [*base, "methods=potara,potara@local.init=pretrained,"
                                                 "potara@potara.merge_space=factors"])).methods
    for item, spec in (("local.init=pretrained", "potara@local.init=pretrained"),
                       ("potara.merge_space=factors", "potara@potara.merge_space=factors")):
        alone = engine.run(config.load(None, [*base, "methods=potara", item])).methods["potara"].per_client
        assert [(r["lambda"], r["acc"]) for r in mixed[spec].per_client] == [(r["lambda"], r["acc"]) for r in alone]
