"""Causal-LM tasks: prompt masking, exact match, generative accuracy, the exact merge, a whole offline run."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import datasets
import pytest
import torch
from torch import nn

from potara import config, engine
from potara.config import LoraSettings, ModelConfig
from potara.merge.fisher import model_fisher
from potara.merge.taskvec import delta_weight, lora_modules, merge, pad_rank
from potara.models.adapters import get_state, set_state
from potara.models.loading import (
    MERGE_ADAPTER,
    TRAIN_ADAPTER,
    ModelError,
    load_peft_causal_lm,
    load_tokenizer,
    resolve_device,
)
from potara.training.causal_lm import (
    IGNORE_INDEX,
    encode_prompt_target,
    evaluate_generative,
    exact_match,
    generative_accuracy,
    normalize_answer,
    targets_of,
    teacher_forced_loss,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "tasks"
LORA = LoraSettings(r=2, alpha=4, target_modules=["q_proj", "v_proj"])
SPLIT = datasets.Dataset.from_dict({
    "prompt": ["Question: what colour is the sky?\nAnswer:", "Review: a fine film\nOptions: negative, positive\nAnswer:"],
    "target": ["blue", "positive"],
})


def save_tiny_llama(out: Path) -> Path:
    """A 2-layer, 32-wide random Llama with the MiniLM tokenizer ([SEP] as eos), saved like a hub checkpoint."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from potara.models.loading import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path("offline:minilm"))
    tok.eos_token = tok.sep_token
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=256, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, bos_token_id=None, tie_word_embeddings=True,
    )
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="module")
def tokenizer(llama_dir):
    return load_tokenizer(ModelConfig(name=str(llama_dir)))


@pytest.fixture(scope="module")
def lm(llama_dir):
    return load_peft_causal_lm(ModelConfig(name=str(llama_dir), task="causal_lm"), LORA, seed=0)


def test_encoding_masks_prompt_and_padding(tokenizer):
    enc = encode_prompt_target(tokenizer, SPLIT, max_length=64)
    ids, labels, mask = (enc.tensors[k] for k in ("input_ids", "labels", "attention_mask"))
    for i, target in enumerate(SPLIT["target"]):
        p, n = int(enc.prompt_lengths()[i]), int(mask[i].sum())
        assert (labels[i, :p] == IGNORE_INDEX).all() and (labels[i, n:] == IGNORE_INDEX).all()
        assert labels[i, p:n].tolist() == ids[i, p:n].tolist()
        assert ids[i, n - 1] == tokenizer.eos_token_id
        assert tokenizer.decode(ids[i, :p]) == tokenizer.decode(tokenizer(SPLIT["prompt"][i], add_special_tokens=False)["input_ids"])
    assert targets_of(enc) == ["blue", "positive"]


def test_prompts_are_truncated_from_the_left(tokenizer):
    enc = encode_prompt_target(tokenizer, SPLIT, max_length=6)
    assert enc.tensors["input_ids"].shape[1] <= 6
    assert targets_of(enc) == ["blue", "positive"]  # targets survive, the prompt keeps its end ("answer :")
    assert tokenizer.decode(enc.tensors["input_ids"][0, : int(enc.prompt_lengths()[0])]).endswith("answer :")


def test_exact_match_normalises_like_squad():
    assert normalize_answer("The  Golden statue!") == "golden statue"
    assert exact_match("a golden statue of the Virgin Mary.", "golden statue of Virgin Mary")
    assert exact_match(" A", "A") and not exact_match("B", "A")  # an option letter is not an article
    assert not exact_match("", "A") and not exact_match("An", "A")


class Answerer(nn.Module):
    """Continues each prompt with a fixed answer, then eos, then junk: a model forced to answer."""

    def __init__(self, answers: dict[tuple, list[int]], eos: int) -> None:
        super().__init__()
        self.answers, self.eos = answers, eos

    def generate(self, input_ids, attention_mask, max_new_tokens, **_) -> torch.Tensor:
        rows = []
        for ids, mask in zip(input_ids, attention_mask):
            new = self.answers[tuple(ids[mask.bool()].tolist())] + [self.eos] + [7] * max_new_tokens
            rows.append(torch.cat([ids, torch.tensor(new[:max_new_tokens])]))
        return torch.stack(rows)


def answers_of(enc, shift: int = 0) -> dict[tuple, list[int]]:
    """Prompt ids -> the target ids of example ``i + shift`` (shift 0: the right answer)."""
    p, ids, labels = enc.prompt_lengths(), enc.tensors["input_ids"], enc.tensors["labels"]
    targets = [[t for t in row.tolist() if t not in (IGNORE_INDEX, enc.tokenizer.eos_token_id)] for row in labels]
    return {tuple(ids[i, : p[i]].tolist()): targets[(i + shift) % len(enc)] for i in range(len(enc))}


def test_generative_accuracy_is_one_when_forced_right_and_zero_when_wrong(tokenizer):
    enc = encode_prompt_target(tokenizer, SPLIT, max_length=64)  # prompts of different lengths: left padding
    eos = tokenizer.eos_token_id
    assert generative_accuracy(Answerer(answers_of(enc), eos), enc, batch_size=2, max_new_tokens=5) == 1.0
    assert generative_accuracy(Answerer(answers_of(enc, shift=1), eos), enc, batch_size=2, max_new_tokens=5) == 0.0


def test_teacher_forced_loss_is_the_mean_nll_of_target_tokens(lm, tokenizer):
    enc = encode_prompt_target(tokenizer, SPLIT, max_length=64)
    lm.eval()
    with torch.no_grad():
        logits = lm(input_ids=enc.tensors["input_ids"], attention_mask=enc.tensors["attention_mask"]).logits
    targets = enc.tensors["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    want = nn.functional.cross_entropy(logits[:, :-1][keep], targets[keep])
    assert teacher_forced_loss(lm, enc, batch_size=1) == pytest.approx(float(want), rel=1e-5)
    ev = evaluate_generative(lm, enc, batch_size=2, max_new_tokens=3)
    assert math.isfinite(ev.loss) and 0.0 <= ev.acc <= 1.0 and ev.n == 2


def test_model_fisher_on_target_tokens(lm, tokenizer):
    enc = encode_prompt_target(tokenizer, SPLIT, max_length=64)
    fisher = model_fisher(lm, enc.batches(2), lora_modules(get_state(lm)), {}, generator=torch.Generator().manual_seed(0))
    assert set(fisher) == set(lora_modules(get_state(lm)))
    assert all(torch.isfinite(v).all() and v.sum() > 0 for v in fisher.values())


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_merge_is_exact_for_the_causal_lm(lm, lam):
    template = get_state(lm)
    g = torch.Generator().manual_seed(1)
    fed, local = ({k: torch.randn(v.shape, generator=g) * 0.3 for k, v in template.items()} for _ in range(2))
    set_state(lm, pad_rank(merge([fed, local], [lam, 1 - lam], [2.0, 2.0]), 4), MERGE_ADAPTER)
    lm.set_adapter(MERGE_ADAPTER)
    base = copy.deepcopy(lm.get_base_model())
    with torch.no_grad():
        for module in lora_modules(fed):
            name = module.removeprefix("base_model.model.")
            layer = base.get_submodule(name).base_layer
            layer.weight += lam * delta_weight(fed, module, 2.0) + (1 - lam) * delta_weight(local, module, 2.0)
            parent, child = name.rsplit(".", 1)
            setattr(base.get_submodule(parent), child, layer)
    inputs = {"input_ids": torch.randint(0, 1000, (3, 9)), "attention_mask": torch.ones(3, 9, dtype=torch.long)}
    lm.eval()
    base.eval()
    with torch.no_grad():
        got, want = lm(**inputs).logits, base(**inputs).logits
    lm.set_adapter(TRAIN_ADAPTER)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_config_ties_suites_to_causal_lms():
    with pytest.raises(config.ConfigError, match="model.task=causal_lm"):
        config.load(None, ["data.source=suite:flan8"])
    with pytest.raises(config.ConfigError, match="data.partition 'classes'"):
        config.load(None, ["data.source=suite:flan8", "model.task=causal_lm"])
    with pytest.raises(config.ConfigError, match="model.task must be one of"):
        config.load(None, ["model.task=seq2seq"])
    causal = ["data.source=suite:flan8", "model.task=causal_lm", "data.partition=task"]
    for methods in ("methods=[potara,feddpa]", "methods=[oracle_split]", "methods=[local@potara.prior_correction=counts]"):
        with pytest.raises(config.ConfigError, match="scores a classifier's logits; causal-LM data"):
            config.load(None, [*causal, methods])  # refused before any training, not after the federation
    with pytest.raises(config.ConfigError, match="potara.prior_correction=counts shifts a classifier head's logits"):
        config.load(None, [*causal, "potara.prior_correction=counts"])
    with pytest.raises(config.ConfigError, match="model.device must be"):
        config.load(None, ["model.device=gpu"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU answers")
def test_device_without_a_gpu():
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ModelError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_offline_run_with_two_fixture_tasks(llama_dir, tmp_path):
    for task in ("arc_challenge", "squad_v1"):  # each fixture five times: 20 rows per client
        (tmp_path / f"{task}.jsonl").write_text((FIXTURES / f"{task}.jsonl").read_text() * 5)
    cfg = config.load(None, [
        f"model.name={llama_dir}", "model.task=causal_lm", "model.max_length=96", "model.max_new_tokens=4",
        "data.source=suite:arc_challenge+squad_v1", f"data.suite_dir={tmp_path}", "data.partition=task",
        "data.group_column=task", "data.num_clients=2", "data.train_sizes=null", "data.test_size=4", "data.min_val=2",
        "fed.rounds=1", "local.epochs=1", "lora.r=2", "lora.alpha=4", "lora.target_modules=[q_proj,v_proj]",
        "potara.fisher_max_examples=4", "threads=1", "methods=[local,fedit,fedit_ft,potara,potara_fisher]",
    ])
    result = engine.run(cfg)
    assert math.isfinite(result.rounds[0]["train_loss"]) and 0.0 <= result.rounds[0]["fedit_mean_acc"] <= 1.0
    for name, method in result.methods.items():
        assert len(method.per_client) == 2
        for row in method.per_client:
            assert 0.0 <= row["acc"] <= 1.0 and row["n_train"] == 13 and row["n_test"] == 4
            assert row["lambda"] is None if name == "local" else 0.0 <= row["lambda"] <= 1.0
    rows = {name: {r["client"]: r for r in m.per_client} for name, m in result.methods.items()}
    for client, potara in rows["potara"].items():  # every method runs unchanged: the merge's endpoints are its parents
        assert rows["fedit"][client]["lambda"] == 1.0 and rows["fedit_ft"][client]["lambda"] == 0.0
        assert rows["fedit_ft"][client]["acc"] == rows["local"][client]["acc"]  # local.init=federated: one adapter
        if potara["lambda"] in (0.0, 1.0):
            parent = "fedit" if potara["lambda"] == 1.0 else "local"
            assert potara["acc"] == rows[parent][client]["acc"]
