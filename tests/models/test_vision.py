"""Image classification through the same engine: encoding, ViT + LoRA, exact merge, export, pretraining, CIFAR format."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file
from test_adapters import assert_export_reloads
from test_taskvec import assert_merge_is_exact, random_state
from transformers import AutoImageProcessor, AutoModelForImageClassification, ViTConfig, ViTImageProcessorPil, ViTModel

from potara import config, engine
from potara.config import LoraSettings, ModelConfig
from potara.data.encoding import encode_images
from potara.data.federated import FEDERATED_DIGITS, load_digits_images
from potara.merge.taskvec import merge, pad_rank
from potara.models import vision
from potara.models.adapters import get_state
from potara.models.loading import ModelError, load_peft_classifier, model_task

ROOT = Path(__file__).parents[2]
TINY_RECIPE = vision.ViTDigitsRecipe(image_size=8, patch_size=4, hidden_size=16, layers=1, heads=2, epochs=1, batch_size=64)
VIT_LORA = LoraSettings(r=2, alpha=4, target_modules=["q_proj", "v_proj"])


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory) -> Path:
    """The offline digits ViT through the real pretraining code, with a tiny recipe."""
    torch.set_num_threads(1)
    return vision.vit_digits(TINY_RECIPE, tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def model(pretrained_dir):
    return load_peft_classifier(ModelConfig(name=str(pretrained_dir)), VIT_LORA, 3, seed=0)


def pixel_batch(pretrained_dir: Path, n: int = 4) -> dict:
    processor = AutoImageProcessor.from_pretrained(pretrained_dir)
    digits = load_digits_images(size=8).select(range(n))
    return {"pixel_values": next(encode_images(processor, digits).batches(n))["pixel_values"]}


def test_encode_images_stores_uint8_and_processes_per_batch(pretrained_dir):
    processor = AutoImageProcessor.from_pretrained(pretrained_dir)
    enc = encode_images(processor, load_digits_images(size=8).select(range(5)))
    assert enc.lengths is None and set(enc.tensors) == {"pixel_values", "labels"}
    assert enc.tensors["pixel_values"].dtype == torch.uint8 and enc.tensors["pixel_values"].shape == (5, 8, 8, 3)
    batch = next(enc.subset(torch.tensor([4, 0])).batches(2))
    assert batch["pixel_values"].shape == (2, 3, 8, 8) and batch["pixel_values"].dtype == torch.float32
    assert -1.0 <= float(batch["pixel_values"].min()) and float(batch["pixel_values"].max()) <= 1.0
    torch.testing.assert_close(batch["labels"], enc.tensors["labels"][[4, 0]])
    mixed = datasets.Dataset.from_dict(
        {"image": [PIL.Image.new("L", (5, 7), 200), PIL.Image.new("RGB", (9, 6), (1, 2, 3))], "label": [0, 1]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )
    assert encode_images(processor, mixed).tensors["pixel_values"].shape == (2, 8, 8, 3)


def test_model_task_is_read_from_the_config_and_validated(pretrained_dir, tiny_model_dir, tmp_path):
    assert model_task(ModelConfig(name=str(pretrained_dir))) == "image"
    assert model_task(ModelConfig(name=str(tiny_model_dir))) == "text"
    assert model_task(ModelConfig(name=str(tiny_model_dir), task="image")) == "image"
    with pytest.raises(config.ConfigError, match="model.task must be one of"):
        config.load(None, ["model.task=audio"])
    with pytest.raises(ValueError, match="reads 'image' inputs but the data's input column is 'text'"):
        engine.split_encoder(ModelConfig(name=str(pretrained_dir)), "text")
    with pytest.raises(ModelError, match=r"match no layer.*q_proj"):
        load_peft_classifier(ModelConfig(name=str(pretrained_dir)), LoraSettings(r=2), 3, seed=0)
    with pytest.raises(config.ConfigError, match="model.device must be"):
        config.load(None, ["model.device=tpu"])
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA GPU; use model.device=cpu"):
            load_peft_classifier(ModelConfig(name=str(pretrained_dir), device="cuda"), VIT_LORA, 3, seed=0)


def test_lora_on_vit_trains_attention_and_the_new_head(model):
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(("lora_" in n and ("q_proj" in n or "v_proj" in n)) or "classifier" in n for n in trainable)
    state = get_state(model)
    assert state["base_model.model.classifier.weight"].shape == (3, 16)
    assert sum(k.endswith("lora_A.weight") for k in state) == 2 * TINY_RECIPE.layers


@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_merge_is_exact_for_a_vit(model, pretrained_dir, lam):
    assert_merge_is_exact(model, pixel_batch(pretrained_dir), lam)


def test_exported_adapter_loads_with_peft(model, pretrained_dir, tmp_path):
    template = get_state(model)
    merged = pad_rank(merge([random_state(template, 3), random_state(template, 4)], [0.6, 0.4], [2.0, 2.0]), 4)
    base = lambda: AutoModelForImageClassification.from_pretrained(pretrained_dir, num_labels=3)  # noqa: E731
    assert_export_reloads(model, merged, pixel_batch(pretrained_dir), base, tmp_path)


def test_pretraining_is_cached_and_deterministic(pretrained_dir, tmp_path, monkeypatch):
    report = (pretrained_dir / vision.REPORT).read_text()
    assert '"heldout_acc"' in report and (pretrained_dir / "preprocessor_config.json").is_file()
    again = vision.vit_digits(TINY_RECIPE, tmp_path / "other")
    first, second = load_file(pretrained_dir / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert vision.ViTDigitsRecipe(seed=1).key() != vision.ViTDigitsRecipe().key()
    monkeypatch.setattr(vision, "pretrain", lambda *a: pytest.fail("a cached recipe was trained again"))
    assert vision.vit_digits(TINY_RECIPE, tmp_path / "other") == again
    monkeypatch.setattr(vision, "DEFAULT_RECIPE", TINY_RECIPE)
    monkeypatch.setenv("POTARA_CACHE", str(tmp_path / "other"))
    assert model_task(ModelConfig(name="offline:vit-digits")) == "image"
    assert not list((tmp_path / "other").glob(".*tmp*"))


def test_one_round_on_digits(pretrained_dir, tmp_path):
    cfg = config.load(ROOT / "configs" / "vision_digits.yaml", [
        f"model.name={pretrained_dir}", "data.num_clients=3", "fed.rounds=1", "local.epochs=1", "lora.r=2",
        "methods=fedit,fedit_ft,potara,potara_fisher", "threads=1",
    ])
    result = engine.run(cfg, export_dir=tmp_path / "adapters")
    assert {len(r.per_client) for r in result.methods.values()} == {3}
    assert all(0.0 <= row["lambda"] <= 1.0 for row in result.methods["potara_fisher"].per_client)
    assert sorted(p.name for p in (tmp_path / "adapters").iterdir()) == ["client_00", "client_01", "client_02"]
    assert engine.load_federated_data(cfg).label_names == [str(d) for d in FEDERATED_DIGITS]


def cifar_fixture(path: Path, classes: int = 6, per_class: int = 20) -> Path:
    """A few random 32x32 PIL images in CIFAR-100's format (img: Image, fine_label: ClassLabel), as parquet."""
    rng = np.random.default_rng(0)
    labels = [y for y in range(classes) for _ in range(per_class)]
    images = [PIL.Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in labels]
    features = datasets.Features(
        {"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=[f"c{y}" for y in range(classes)])}
    )
    datasets.Dataset.from_dict({"img": images, "fine_label": labels}, features=features).to_parquet(str(path))
    return path


def random_vit(out: Path) -> Path:
    """A tiny random ViT (16 px, patch 8) and an image processor that resizes to 16 px, saved like a hub model."""
    torch.manual_seed(0)
    vit = ViTConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32)
    ViTModel(vit, add_pooling_layer=False).save_pretrained(out)
    ViTImageProcessorPil(size={"height": 16, "width": 16}).save_pretrained(out)
    return out


def test_cifar_config_through_the_hub_loader(tmp_path, monkeypatch):
    parquet = cifar_fixture(tmp_path / "cifar.parquet")
    load = datasets.load_dataset
    calls = []

    def offline_hub(name, config_name=None, split=None):
        calls.append((name, split))
        return load("parquet", data_files=str(parquet), split="train")

    monkeypatch.setattr(datasets, "load_dataset", offline_hub)
    small = [
        f"model.name={random_vit(tmp_path / 'vit')}", "model.device=cpu", "data.num_clients=3", "data.test_size=10",
        "threads=1", "fed.rounds=1", "local.epochs=1", "lora.r=2", "methods=fedit,potara,ditto,apfl,feddpa",
    ]
    fed = engine.load_federated_data(config.load(ROOT / "configs" / "cifar100_vit_dirichlet.yaml", [*small, "data.alpha=1.0"]))
    assert fed.input_column == "image" and fed.label_names[:2] == ["c0", "c1"] and len(fed.clients) == 3
    cfg = config.load(ROOT / "configs" / "cifar100_vit_classes.yaml", [*small, "data.classes_per_client=2"])
    result = engine.run(cfg)
    assert calls == [("uoft-cs/cifar100", "train")] * 2
    assert {len(r.per_client) for r in result.methods.values()} == {3} and result.rounds[0]["bytes_up"] > 0
