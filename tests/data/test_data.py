"""Tests for potara.data: loaders and the split into client tasks (no network)."""

import warnings
from pathlib import Path

import datasets
import numpy as np
import pytest

from potara.data import federated
from potara.data.federated import (
    FederatedData,
    load_digits_images,
    load_fortunes,
    load_hf_dataset,
    load_local_files,
    make_clients,
    normalize_columns,
)

FIXTURES = Path(__file__).parents[1] / "fixtures"
FORTUNES = Path(federated.FORTUNES_ROOT)
needs_fortunes = pytest.mark.skipif(
    not FORTUNES.is_dir(), reason=f"{FORTUNES} missing (install with `apt-get install fortunes`)"
)


def _clients(ds: datasets.Dataset, seed: int = 0, **kwargs) -> FederatedData:
    """make_clients with the default fortunes setup, flwr's unused-class warning silenced."""
    options = dict(num_clients=10, scheme="classes", classes_per_client=4, seed=seed) | kwargs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return make_clients(ds, **options)


@pytest.fixture(scope="module")
def fortunes() -> datasets.Dataset:
    return load_fortunes()


@pytest.fixture(scope="module")
def fortune_clients(fortunes: datasets.Dataset) -> FederatedData:
    return _clients(fortunes)


@needs_fortunes
def test_fortunes_has_many_clean_categories(fortunes: datasets.Dataset) -> None:
    names = fortunes.features["label"].names
    assert len(names) >= 10 and names == sorted(names)
    assert fortunes.column_names == ["text", "label"]
    labels = np.array(fortunes["label"])
    assert labels.dtype.kind == "i" and set(labels) == set(range(len(names)))
    texts = fortunes["text"]
    assert min(map(len, texts)) >= 20 and len(set(texts)) == len(texts)
    assert all(t == " ".join(t.split()) for t in texts)


@needs_fortunes
def test_fortunes_clients_shape(fortune_clients: FederatedData) -> None:
    clients = fortune_clients.clients
    assert [c.name for c in clients] == [f"client_{i:02d}" for i in range(10)]
    assert fortune_clients.input_column == "text"
    label_sets = [frozenset(c.train["label"]) | frozenset(c.test["label"]) for c in clients]
    assert all(len(s) == 4 for s in label_sets) and len(set(label_sets)) > 1
    sizes = [c.n_train for c in clients]
    assert min(sizes) <= max(sizes) / 5


@needs_fortunes
def test_fortunes_clients_splits(fortune_clients: FederatedData) -> None:
    for c in fortune_clients.clients:
        n_nontest = c.n_train + c.val.num_rows
        assert c.val.num_rows == max(3, round(0.2 * n_nontest))
        assert 15 <= n_nontest <= 200 and c.test.num_rows == 100
        train, val, test = (set(split["text"]) for split in (c.train, c.val, c.test))
        assert not (train & val or train & test or val & test)
        assert c.train.column_names == ["text", "label"]


@needs_fortunes
def test_fortunes_clients_deterministic(fortunes: datasets.Dataset, fortune_clients: FederatedData) -> None:
    def texts(fd: FederatedData) -> list[list[str]]:
        return [[*c.train["text"], *c.val["text"], *c.test["text"]] for c in fd.clients]

    assert texts(_clients(fortunes, seed=0)) == texts(fortune_clients)
    assert texts(_clients(fortunes, seed=1)) != texts(fortune_clients)


def test_missing_fortunes_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get install fortunes"):
        load_fortunes(tmp_path / "nope")


def test_fortunes_parsing(tmp_path: Path) -> None:
    quote = "A long enough quote number {}."
    (tmp_path / "alpha").write_text("\n%\n".join([quote.format(1), "short", quote.format(2), quote.format(2)]))
    (tmp_path / "beta").write_text(f"{quote.format(3)}\n%\n  {quote.format(4)}  \n  spread\n%\n")
    (tmp_path / "alpha.dat").write_bytes(b"\x00\x01")
    (tmp_path / "off").mkdir()
    (tmp_path / "off" / "gamma").write_text(quote.format(5))
    ds = load_fortunes(tmp_path, min_quotes=2)
    assert ds.features["label"].names == ["alpha", "beta"]
    assert ds["text"] == [quote.format(1), quote.format(2), quote.format(3), quote.format(4) + " spread"]
    assert ds["label"] == [0, 0, 1, 1]


def test_tiny_clients_error_names_client() -> None:
    ds = datasets.Dataset.from_dict({"text": [f"t{i}" for i in range(12)], "label": [i % 2 for i in range(12)]})
    with pytest.raises(ValueError, match="client_0.* no training examples.*fewer clients"):
        make_clients(ds, num_clients=4, scheme="iid", seed=0)


def test_make_clients_task_scheme_without_sizes() -> None:
    ds = datasets.Dataset.from_dict(
        {"text": [f"t{i}" for i in range(90)], "label": [i % 3 for i in range(90)], "task": [i // 30 for i in range(90)]}
    )
    fd = make_clients(ds, num_clients=3, scheme="task", group_column="task", seed=0, train_sizes=None, test_size=10)
    assert [(c.n_train, c.val.num_rows, c.test.num_rows) for c in fd.clients] == [(16, 4, 10)] * 3
    assert fd.label_names == ["0", "1", "2"]
    with pytest.raises(ValueError, match="group_column"):
        make_clients(ds, num_clients=3, scheme="task", seed=0)


@pytest.mark.parametrize(
    ("name", "kwargs", "label_names"),
    [
        ("tiny.csv", {"text_column": "sentence", "label_column": "category"}, ["animals", "finance", "weather"]),
        ("tiny.json", {}, ["animals", "finance"]),
        ("tiny.jsonl", {}, None),
        ("tiny.parquet", {"text_column": "review", "label_column": "stars"}, None),
    ],
)
def test_load_local_files(name: str, kwargs: dict, label_names: list[str] | None) -> None:
    ds = load_local_files(FIXTURES / name, **kwargs)
    assert ds.column_names == ["text", "label"]
    assert all(isinstance(y, int) for y in ds["label"]) and all(ds["text"])
    if label_names is not None:
        assert ds.features["label"].names == label_names


def test_load_local_files_errors() -> None:
    with pytest.raises(ValueError, match=r"tiny\.csv.*'text'.*available columns: sentence, category, source"):
        load_local_files(FIXTURES / "tiny.csv")
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        load_local_files(FIXTURES / "missing.csv")
    with pytest.raises(ValueError, match="unsupported file type '.txt'"):
        load_local_files(FIXTURES / "notes.txt")


def test_load_hf_dataset_normalises_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = datasets.Dataset.from_dict(
        {"idx": [0, 1, 2], "sentence": ["good", "bad", "fine"], "sentiment": ["pos", "neg", "pos"]}
    )
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kw: calls.append((args, kw)) or raw)
    ds = load_hf_dataset("someone/sst", "validation", label_column="sentiment", config_name="default")
    assert calls == [(("someone/sst", "default"), {"split": "validation"})]
    assert ds.column_names == ["text", "label"]
    assert ds["text"] == ["good", "bad", "fine"] and ds["label"] == [1, 0, 1]
    assert ds.features["label"].names == ["neg", "pos"]


def test_normalize_columns_images_and_errors() -> None:
    images = datasets.Dataset.from_dict(
        {"img": [np.zeros((3, 2, 2), np.float32)], "fine_label": [7]},
        features=datasets.Features(
            {"img": datasets.Array3D((3, 2, 2), "float32"), "fine_label": datasets.Value("int64")}
        ),
    )
    assert normalize_columns(images, label_column="fine_label").column_names == ["image", "label"]
    numbers = datasets.Dataset.from_dict({"x": [1.0], "label": [0]})
    with pytest.raises(ValueError, match="pass text_column= one of x, label"):
        normalize_columns(numbers)


def test_load_digits_images() -> None:
    ds = load_digits_images(size=16).with_format("numpy")
    assert ds.num_rows == 1797 and ds.features["label"].names == [str(d) for d in range(10)]
    image = ds[0]["image"]
    assert image.shape == (3, 16, 16) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.max() > 0.5
