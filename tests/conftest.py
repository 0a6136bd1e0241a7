"""Shared fixtures: a tiny random BERT (offline, seconds to train) and a small synthetic corpus."""

from __future__ import annotations

import importlib.util
import random
import sys
import warnings
from pathlib import Path

import pytest

warnings.filterwarnings("ignore")

WORDS = {
    0: "apple banana cherry grape lemon mango melon peach pear plum",
    1: "engine wheel brake clutch gear piston axle tire chassis motor",
    2: "violin piano guitar drum flute cello harp trumpet oboe bass",
    3: "river lake ocean stream pond creek bay delta lagoon harbor",
    4: "python kernel compiler socket thread mutex buffer cache stack heap",
    5: "tiger lion zebra giraffe eagle falcon otter badger wolf bear",
}


def save_tiny_bert(out: Path, **config) -> Path:
    """Save a 2-layer, 32-wide random BERT with the MiniLM tokenizer, like a hub checkpoint."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from potara.models.loading import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path("offline:minilm"))
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, **config,
    )
    BertModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny BERT used by fast whole-run tests."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def synthetic_rows(n_per_label: int, seed: int = 0) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    rows = []
    for label, words in WORDS.items():
        vocab = words.split()
        for _ in range(n_per_label):
            rows.append((" ".join(rng.choice(vocab) for _ in range(rng.randint(3, 8))), label))
    rng.shuffle(rows)
    return rows


@pytest.fixture(scope="session")
def synthetic_csv(tmp_path_factory) -> Path:
    """A labelled text corpus with 6 topics, written as csv."""
    import csv

    path = tmp_path_factory.mktemp("corpus") / "topics.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(synthetic_rows(60))
    return path


@pytest.fixture
def tiny_overrides(tiny_model_dir, synthetic_csv) -> list[str]:
    """``--set`` overrides for a whole run in a few seconds."""
    return [
        f"model.name={tiny_model_dir}", f"data.source={synthetic_csv}", "data.num_clients=3",
        "data.classes_per_client=2", "data.train_sizes=[12,40]", "data.test_size=20", "fed.rounds=2",
        "local.epochs=2", "model.max_length=16", "lora.r=2", "lora.alpha=4", "potara.fisher_max_examples=8",
        "lora.head_lr_scale=10",  # the tiny runs' expectations hold at the scale they were written for, not the default
    ]


def without_seconds(value):
    """``value`` with every ``seconds`` entry dropped: measured times differ between equal runs."""
    if isinstance(value, dict):
        return {k: without_seconds(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [without_seconds(v) for v in value]
    return value


def benchmark_script(name: str):
    """``benchmarks/<name>.py`` loaded as a module (a script, not part of potara)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def choose():
    return benchmark_script("choose")


@pytest.fixture(scope="module")
def rule():
    return benchmark_script("rule")


@pytest.fixture(scope="module")
def random_pair(tiny_model_dir, synthetic_csv):
    """The tiny model, its clients' splits, and two random adapters standing in for τ_F and τ_L."""
    from types import SimpleNamespace

    import torch

    from potara import config, engine
    from potara.models.adapters import get_state

    cfg = config.load(None, [
        f"model.name={tiny_model_dir}", f"data.source={synthetic_csv}", "data.num_clients=3",
        "data.classes_per_client=2", "data.train_sizes=[12,40]", "data.test_size=20", "model.max_length=16",
        "lora.r=2", "lora.alpha=4",
    ])
    fed_data = engine.load_federated_data(cfg)
    model = engine.load_peft_model(cfg.model, cfg.lora, len(fed_data.label_names), cfg.seed)
    pretrained = get_state(model)
    g = torch.Generator().manual_seed(0)
    fed, local = ({k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in pretrained.items()} for _ in range(2))
    return SimpleNamespace(cfg=cfg, model=model, clients=engine.encode_clients(cfg, fed_data), fed=fed, local=local,
                           pretrained=pretrained)


class Interrupted(Exception):
    """Stands in for a kill right after a checkpoint is written."""


def interrupt_after(monkeypatch, where: Path, round_: int) -> None:
    """Raise :class:`Interrupted` once ``where``'s checkpoint of ``round_`` is on disk."""
    from potara.federation import checkpoint

    save = checkpoint.save

    def saving(root, state, keep=2):
        out = save(root, state, keep)
        if Path(root) == where and state.round == round_:
            raise Interrupted
        return out

    monkeypatch.setattr(checkpoint, "save", saving)


def straight_and_resumed(cfg, where: Path, monkeypatch, round_: int = 1):
    """``cfg`` run through once, then run with checkpoints in ``where``, interrupted once round ``round_`` is on disk,
    and run again (it resumes): the two results."""
    from potara import engine

    straight = engine.run(cfg)
    with monkeypatch.context() as mp:
        interrupt_after(mp, where, round_)
        with pytest.raises(Interrupted):
            engine.run(cfg, checkpoint_dir=where)
    return straight, engine.run(cfg, checkpoint_dir=where)
