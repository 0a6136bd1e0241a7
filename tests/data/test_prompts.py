"""Task loaders and prompt formatting, offline on fixture rows in each hub dataset's real schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from potara import config, engine
from potara.data import prompts

ROOT = Path(__file__).parents[2]
FIXTURES = Path(__file__).parents[1] / "fixtures" / "tasks"
LOCAL = prompts.local_loader(FIXTURES)

# (first prompt line, options block or "", target) of each fixture's first row; the full text of two below.
GOLDEN = {
    "arc_challenge": ("Question: An astronomer observes that a planet rotates faster after a meteorite impact. "
                      "Which is the most likely effect of this increase in rotation?", "C. Planetary days will become shorter.", "C"),
    "arc_easy": ("Question: Which factor will most likely cause a person to develop a fever?",
                 "B. a bacterial population in the bloodstream", "B"),
    "cosmos_qa": ("Good Old War and person L : I saw both of these bands Wednesday night , and they both blew me away . "
                  "seriously . Good Old War is acoustic and makes me smile .", "A. None of the above choices .", "B"),
    "definite_pronoun_resolution": ("The bee landed on the flower because it had pollen.", "B. the flower", "B"),
    "glue_qqp": ("Question 1: How is the life of a math student? Could you describe your own experiences?",
                 "Options: no, yes", "no"),
    "hellaswag": ("Removing ice from car: Then, the man writes over the snow covering the window of a car, and a woman "
                  "wearing winter clothes smiles. then", "D. , the man continues removing the snow on his car.", "D"),
    "mnli": ("Premise: Conceptually cream skimming has two basic dimensions - product and geography.",
             "Options: yes, maybe, no", "maybe"),
    "squad_v1": ("Architecturally, the school has a Catholic character. Atop the Main Building's gold dome is a golden "
                 "statue of the Virgin Mary. Immediately in front of the Main Building and facing it, is a copper statue "
                 "of Christ with arms upraised.", "", "a golden statue of the Virgin Mary"),
    "sst2": ("Review: hide new secretions from the parental units ", "Options: negative, positive", "negative"),
    "boolq": ("Persian language -- Persian, also known by its endonym Farsi, is one of the Western Iranian languages. "
              "It is primarily spoken in Iran, Afghanistan (officially known as Dari since 1958), and Tajikistan.",
              "Options: no, yes", "yes"),
    "piqa": ("Goal: When boiling butter, when it's ready, you can", "B. Pour it into a jar", "B"),
    "siqa": ("Cameron decided to have a barbecue and gathered her friends together.", "A. like attending", "A"),
    "winogrande": ("Ian volunteered to eat Dennis's menudo after already having a bowl because _ despised eating "
                   "intestine.", "B. Dennis", "B"),
    "openbookqa": ("Question: The sun is responsible for", "D. plants sprouting, blooming and wilting", "D"),
}


def first_row(task: str) -> dict:
    return json.loads((FIXTURES / f"{task}.jsonl").read_text().splitlines()[0])


def test_every_task_has_a_fixture_and_a_golden_row():
    assert set(GOLDEN) == set(prompts.TASKS) == {p.stem for p in FIXTURES.glob("*.jsonl")}
    assert all(set(tasks) <= set(prompts.TASKS) and len(tasks) == 8 for tasks in prompts.SUITES.values())


@pytest.mark.parametrize("task", sorted(GOLDEN))
def test_first_row_formats_to_the_golden_prompt(task):
    first_line, option, target = GOLDEN[task]
    prompt, got_target = prompts.TASKS[task].format(first_row(task))
    assert prompt.splitlines()[0] == first_line
    assert prompt.endswith("\nAnswer:")
    assert option in prompt.splitlines()
    assert got_target == target


def test_full_text_of_a_multiple_choice_and_a_span_prompt():
    assert prompts.format_definite_pronoun_resolution(first_row("definite_pronoun_resolution")) == (
        'The bee landed on the flower because it had pollen.\n\nWho or what does the pronoun "it" refer to?\n\n'
        "Options:\nA. The bee\nB. the flower\nAnswer:",
        "B",
    )
    prompt, target = prompts.format_squad_v1(first_row("squad_v1"))
    assert prompt.endswith("\n\nQuestion: What sits on top of the Main Building at Notre Dame?\nAnswer:")
    assert target == "a golden statue of the Virgin Mary"


def test_answer_keys_map_to_letters_whatever_their_encoding():
    arc = [json.loads(line) for line in (FIXTURES / "arc_challenge.jsonl").read_text().splitlines()]
    assert [prompts.format_arc(r)[1] for r in arc] == ["C", "B", "A", "A"]  # third row uses keys "1".."4"
    siqa = [json.loads(line) for line in (FIXTURES / "siqa.jsonl").read_text().splitlines()]
    assert [prompts.format_siqa(r)[1] for r in siqa] == ["A", "B", "A", "B"]  # labels are strings "1".."3"
    assert prompts.format_boolq({"question": "is it", "answer": False, "passage": "p"})[1] == "no"


def test_loader_builds_one_dataset_with_a_task_column():
    ds = prompts.load_suite(prompts.suite_tasks("suite:flan8"), load_fn=LOCAL)
    assert ds.column_names == ["prompt", "target", "task"]
    counts = {t: ds["task"].count(t) for t in prompts.SUITES["flan8"]}
    assert counts == {t: len((FIXTURES / f"{t}.jsonl").read_text().splitlines()) for t in prompts.SUITES["flan8"]}


def test_loader_caps_rows_per_task_reproducibly():
    tasks = prompts.suite_tasks("suite:sst2+mnli")
    first = prompts.load_suite(tasks, max_per_task=2, seed=3, load_fn=LOCAL)
    assert first["task"] == ["sst2", "sst2", "mnli", "mnli"]
    assert first["prompt"] == prompts.load_suite(tasks, max_per_task=2, seed=3, load_fn=LOCAL)["prompt"]


def test_suite_names_and_errors():
    assert prompts.suite_tasks("suite:commonsense")[0] == "boolq"
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        prompts.suite_tasks("suite:sst2+nope")
    with pytest.raises(FileNotFoundError, match="no file"):
        prompts.load_suite(["sst2"], load_fn=prompts.local_loader(FIXTURES / "missing"))


def test_an_unlabelled_row_is_a_clear_error(tmp_path):
    row = first_row("hellaswag") | {"label": ""}
    (tmp_path / "hellaswag.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match="task 'hellaswag'.*unlabelled"):
        prompts.load_suite(["hellaswag"], load_fn=prompts.local_loader(tmp_path))


@pytest.mark.parametrize("name", ["flan8_causal_lm.yaml", "commonsense_causal_lm.yaml"])
def test_shipped_configs_give_one_task_per_client(name):
    overrides = [f"data.suite_dir={FIXTURES}", "data.train_sizes=null", "data.min_val=1"]
    cfg = config.load(ROOT / "configs" / name, overrides)
    clients = engine.load_federated_data(cfg).clients
    tasks = prompts.suite_tasks(cfg.data.source)
    assert sorted(c.name.split("_", 2)[2] for c in clients) == sorted(tasks)
    for client in clients:
        task = client.name.split("_", 2)[2]
        rows = len((FIXTURES / f"{task}.jsonl").read_text().splitlines())
        assert client.n_train + client.val.num_rows + client.test.num_rows == rows
        assert client.train.column_names == ["prompt", "target"]
