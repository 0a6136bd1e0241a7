"""potara bench: suite files, a tiny resumable suite, the communication analysis, payload precision."""

from __future__ import annotations

import json
import struct

import pytest
import yaml

from potara import config, engine
from potara.bench import report as bench_report
from potara.bench import suite as bench_suite
from potara.bench.report import Cell, communication_table
from potara.cli.main import main
from potara.config import ConfigError
from potara.models.adapters import serialize
from potara.reporting.communication import Reach, analyse, curve, median_round

TINY_METHODS = ["local", "fedit", "fedit_ft", "potara"]


def tiny_suite(tiny_model_dir, synthetic_csv) -> dict:
    return {
        "seeds": [0, 1],
        "methods": TINY_METHODS,
        "overrides": {
            "model.name": str(tiny_model_dir), "data.source": str(synthetic_csv), "data.num_clients": 3,
            "data.train_sizes": [12, 40], "data.test_size": 20, "fed.rounds": 2, "local.epochs": 2,
            "model.max_length": 16, "lora.r": 2, "lora.alpha": 4, "threads": 1,
            "fed.eval_every": 1, "fed.eval_methods": ["potara", "fedit_ft"],
        },
        "settings": {"two_classes": {"data.classes_per_client": 2}, "iid": {"data.partition": "iid"}},
    }


def write_suite(path, suite: dict):
    path.write_text(yaml.safe_dump(suite))
    return path


def bench_cli(args, capsys):
    code = main(["bench", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_packaged_offline_suite_names_every_setting_and_method():
    suite = bench_suite.load_suite("offline")
    assert len(suite.seeds) >= 3
    assert {"classes", "dirichlet_0.1", "dirichlet_1.0", "vision_digits"} == set(suite.settings)
    assert suite.settings["dirichlet_0.1"]["data.alpha"] == 0.1
    assert suite.settings["vision_digits"]["data.source"] == "digits"
    assert {"potara", "oracle_val", "ffa_lora", "fedsa_lora", "ditto", "apfl", "feddpa"} <= set(suite.methods)
    assert suite.overrides["fed.eval_methods"] == ["potara", "fedit_ft"]  # the communication target, per round
    today = suite.narrowed(only=["classes"], methods=["local", "fedit", "potara"])
    assert bench_suite.cell_config(today, "classes", 2).data.num_clients == 6
    bench_suite.check_cells(today)
    bench_suite.check_cells(suite)  # every cell of the whole suite is a valid config with known methods


@pytest.mark.parametrize(
    "change,message",
    [
        ({"rounds": 3}, "suite 's': unknown key 'rounds'"),
        ({"seeds": []}, "'seeds' must be a non-empty list"),
        ({"seeds": [3, 4, 3]}, "suite 's': seed 3 is listed twice; list each seed once"),
        ({"settings": {"a": {"fed.nope": 1}}}, "suite 's', setting 'a': unknown config key 'fed.nope'"),
        ({"settings": {"a": {"seed": 1}}}, "'seed' is set by the suite"),
        ({"methods": ["fedit", "magic"]}, "setting 'a': methods names unknown method 'magic'"),
        ({"overrides": {"fed.payload_dtype": "fp8"}}, "fed.payload_dtype must be one of fp32, bf16, fp16, int8"),
        ({"overrides": {"fed.eval_methods": ["nope"]}}, "setting 'a': fed.eval_methods names unknown method 'nope'"),
    ],
)
def test_suite_errors_are_clear(change, message, tmp_path):
    raw = {"seeds": [0], "methods": ["fedit"], "settings": {"a": {}}, **change}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        bench_suite.check_cells(bench_suite.load_suite(str(write_suite(tmp_path / "s.yaml", raw))))


def test_unknown_suite_and_setting(tmp_path, capsys):
    code, _, err = bench_cli(["--suite", "nope", "--out", str(tmp_path / "o")], capsys)
    assert {"dev", "offline", "precision", "report"} <= set(bench_suite.packaged_suites())
    assert code == 2 and f"neither a file nor a packaged suite ({', '.join(bench_suite.packaged_suites())})" in err
    code, _, err = bench_cli(["--suite", "offline", "--only", "cifar", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "suite 'offline' has no setting 'cifar'" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_tiny_suite_runs_reports_and_resumes(tiny_model_dir, synthetic_csv, tmp_path, capsys):
    path = write_suite(tmp_path / "tiny.yaml", tiny_suite(tiny_model_dir, synthetic_csv))
    out = tmp_path / "out"
    code, printed, err = bench_cli(["--suite", str(path), "--out", str(out)], capsys)
    assert code == 0, err
    assert "4 cell(s) run, 0 already done" in printed
    cells = sorted(p.relative_to(out / "cells").as_posix() for p in (out / "cells").glob("*/seed-*"))
    assert cells == ["iid/seed-0", "iid/seed-1", "two_classes/seed-0", "two_classes/seed-1"]
    summary = json.loads((out / "cells/iid/seed-1/summary.json").read_text())
    assert list(summary["methods"]) == TINY_METHODS and summary["config"]["seed"] == 1
    assert set(summary["timing"]["method_s"]) == set(TINY_METHODS) and summary["timing"]["wall_s"] > 0
    assert 0 < summary["timing"]["cpu_s"]  # the process's CPU seconds on the cell, every thread
    rounds = [json.loads(x) for x in (out / "cells/iid/seed-1/rounds.jsonl").read_text().splitlines()]
    assert set(rounds[0]["methods"]) == {"potara", "fedit_ft"}  # fed.eval_methods, at intermediate rounds
    assert "methods" not in rounds[-1]  # the last round's are the final results
    reach = analyse(rounds, summary["methods"])
    assert set(reach.reach) == {"local", "fedit", "fedit_ft", "potara"}
    assert reach.reach["fedit_ft"].round in (1, 2)  # the target's own curve reaches its final accuracy
    final = summary["methods"]["fedit_ft"]
    assert curve(rounds, "fedit_ft", final["mean_acc"])[-1].cum_bytes == final["bytes_up"] + final["bytes_down"]

    report = (out / "report.md").read_text()
    assert report in printed
    for line in ("## two_classes", "## iid", "| potara | 0.", "| local | 0.", "## Communication", "| iid | 2 | 0.",
                 "## Compute", "| all | 4 | 0.0"):
        assert line in report
    for setting in ("two_classes", "iid"):
        for kind in ("accuracy_vs_bytes", "per_client"):
            assert (out / "plots" / f"{setting}.{kind}.png").stat().st_size > 1000
    code, printed, err = bench_cli(["--suite", str(path), "--report-from", str(out), "--out", str(tmp_path / "again")],
                                   capsys)
    assert code == 0, err
    assert (tmp_path / "again" / "report.md").read_text() == report  # real records, float32 accuracies included

    kept = {p: p.stat().st_mtime_ns for p in (out / "cells").glob("*/seed-*/summary.json")}
    gone = out / "cells/two_classes/seed-0"
    for f in gone.iterdir():
        f.unlink()
    gone.rmdir()
    (gone.parent / ".seed-0.tmp-killed").mkdir()  # what a bench killed mid-cell leaves behind
    code, printed, err = bench_cli(["--suite", str(path), "--out", str(out)], capsys)
    assert code == 0, err
    assert "1 cell(s) run, 3 already done" in printed
    assert (gone / "summary.json").is_file() and not (gone.parent / ".seed-0.tmp-killed").exists()
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items() if gone not in p.parents)

    code, _, err = bench_cli(["--suite", str(path), "--out", str(out), "--set", "fed.rounds=3"], capsys)
    assert code == 2 and "was run with another config (fed.rounds: 2 there, 3 now)" in err
    code, printed, err = bench_cli(["--suite", str(path), "--out", str(out), "--set", "threads=1"], capsys)
    assert code == 0 and "0 cell(s) run, 4 already done" in printed, err  # threads: how fast, not what
    units = (out / "tiny-units.csv").read_text()
    code, printed, _ = bench_cli(["--suite", str(path), "--out", str(out), "--only", "iid", "--seeds", "1"], capsys)
    assert code == 0 and "0 cell(s) run, 1 already done" in printed
    assert "## two_classes" in printed and (out / "tiny-units.csv").read_text() == units  # the whole suite's records
    for seeds, message in ((["1", "1"], "seed 1 is given twice"), (["7"], "suite 'tiny' has no seed 7; seeds: 0, 1")):
        code, _, err = bench_cli(["--suite", str(path), "--out", str(out), "--seeds", *seeds], capsys)
        assert code == 2 and message in err
    code, _, err = bench_cli(["--suite", str(path), "--out", str(out), "--report-only", "--set", "fed.rounds=3"], capsys)
    assert code == 2 and "was run with another config (fed.rounds: 2 there, 3 now)" in err  # never reported as this
    assert (out / "tiny-units.csv").read_text() == units


def record(round_: int, fedit: float, per_round: int = 100, **methods: float) -> dict:
    """A hand-made round record: ``per_round`` bytes each way per round, a broadcast of ``per_round // 2``."""
    r = {"round": round_, "cum_bytes_up": per_round * round_, "cum_bytes_down": per_round * round_,
         "broadcast_bytes": per_round // 2, "fedit_mean_acc": fedit}
    return {**r, "methods": methods} if methods else r


def finals(**accs: float) -> dict[str, dict]:
    """The summary's methods: every one federated over 3 rounds of ``record``, but ``local`` (0 bytes)."""
    return {name: {"mean_acc": acc, "bytes_up": 0 if name == "local" else 300,
                   "bytes_down": 0 if name == "local" else 350} for name, acc in accs.items()}


def test_a_failing_cell_is_reported_and_the_others_still_run(tiny_model_dir, synthetic_csv, tmp_path, capsys):
    suite = tiny_suite(tiny_model_dir, synthetic_csv)
    suite.update(seeds=[0], methods=["fedit"], settings={"broken": {"data.source": str(tmp_path / "gone.csv")}, "iid": {}})
    suite["overrides"].update({"fed.rounds": 1, "fed.eval_every": 0})
    out = tmp_path / "out"
    code = main(["bench", "--suite", str(write_suite(tmp_path / "s.yaml", suite)), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "cell broken seed 0 failed" in err and "gone.csv" in err
    assert (out / "cells" / "iid" / "seed-0" / "summary.json").is_file()
    assert not (out / "cells" / "broken").exists() or not any((out / "cells" / "broken").iterdir())


def test_communication_against_fedit_ft_final_accuracy():
    """potara reaches fedit_ft's final accuracy at round 2, fedit never, fedit_ft at the last round; a peer
    under its own name with its own bytes; local, which sends nothing, at 0 bytes; ditto (final only) is
    left out."""
    peer = {"cum_bytes_up": 10, "cum_bytes_down": 10, "broadcast_bytes": 5}
    records = [
        {**record(1, 0.2, potara=0.40, fedit_ft=0.30), "ffa_lora": {**peer, "mean_acc": 0.1}},
        {**record(2, 0.3, potara=0.55, fedit_ft=0.45), "ffa_lora": {**peer, "cum_bytes_up": 20, "mean_acc": 0.6}},
        record(3, 0.35),
    ]
    found = analyse(records, finals(local=0.5, fedit=0.35, fedit_ft=0.5, potara=0.6, ffa_lora=0.2, ditto=0.9))
    assert found.rounds == 3 and found.target_method == "fedit_ft" and found.target == 0.5
    assert found.reach == {
        "local": Reach(0, 0), "fedit": Reach(None, None), "fedit_ft": Reach(3, 650), "potara": Reach(2, 450),
        "ffa_lora": Reach(2, 35),
    }
    behind = analyse(records, finals(local=0.4, fedit_ft=0.5))
    assert behind.reach["local"] == Reach(None, None)
    assert median_round([Reach(1, 1), Reach(None, None), Reach(3, 3)]) == 2 and median_round([Reach(None, None)]) is None


def test_communication_table_rows_per_method_and_skips_old_cells():
    records = [record(1, 0.2, potara=0.55, fedit_ft=0.3), record(2, 0.3)]
    methods = finals(local=0.5, fedit=0.3, fedit_ft=0.5, potara=0.6)
    old = [{k: v for k, v in r.items() if k != "broadcast_bytes"} for r in records]
    summaries = [{"methods": methods}] * 3
    table = communication_table({"s": [Cell(0, summaries[0], records), Cell(1, summaries[1], records),
                                       Cell(2, summaries[2], old)]})
    assert "| s | 2 | 0.500 ± 0.000 | potara | 2/2 | r1 | s0: r1 (0.2 kB), s1: r1 (0.2 kB) |" in table
    assert "| s | 2 | 0.500 ± 0.000 | local | 2/2 | r0 | s0: 0 bytes, s1: 0 bytes |" in table
    assert "| fedit | 0/2 | – | s0: never, s1: never |" in table
    assert "Not analysed" in table and "s seed 2" in table


def _data_bytes(payload: bytes) -> int:
    """A safetensors payload's tensor bytes: everything after the 8-byte length and the JSON header."""
    return len(payload) - 8 - struct.unpack("<Q", payload[:8])[0]


def test_half_precision_payloads_halve_the_measured_bytes(tiny_overrides):
    runs = {}
    for dtype in ("fp32", "bf16", "fp16"):
        cfg = config.load(None, tiny_overrides + ["methods=fedit,potara", "fed.rounds=1", f"fed.payload_dtype={dtype}"])
        assert cfg.validation.dtypes == ["fp32"]  # the configured wire dtype is accepted without listing it
        runs[dtype] = engine.run(cfg)
    model = engine.load_peft_model(cfg.model, cfg.lora, 6, 0)
    state = engine.get_state(model)
    for dtype, result in runs.items():
        assert "rejected" not in result.rounds[0]
        payload = len(serialize(state, dtype))
        assert result.methods["fedit"].bytes_up == 3 * payload
        assert result.methods["fedit"].bytes_down == 2 * 3 * payload  # round 1, then the final broadcast
        assert result.rounds[-1]["broadcast_bytes"] == 3 * payload
        assert 0.0 < result.methods["potara"].mean_acc() <= 1.0
    assert 2 * _data_bytes(serialize(state, "fp16")) == _data_bytes(serialize(state, "fp32"))
    assert 2 * _data_bytes(serialize(state, "bf16")) == _data_bytes(serialize(state, "fp32"))
    assert runs["fp16"].methods["fedit"].bytes_up < 0.7 * runs["fp32"].methods["fedit"].bytes_up


def test_wrong_payload_dtype_is_one_clear_line(tmp_path, capsys):
    code = main(["run", "--out", str(tmp_path / "o"), "--set", "fed.payload_dtype=float8"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "fed.payload_dtype must be one of fp32, bf16, fp16, int8, got 'float8'" in err


FAKE_SEEDS = {"a": list(range(6)), "b": list(range(6)), "c": [0]}  # setting c has one seed: no interval there
BASE = [0.25, 0.5, 0.25, 0.5]  # fedit_ft, per client


def fake_accs(setting: str, seed: int) -> dict[str, list[float]]:
    """potara is fedit_ft + 0.25 everywhere; apfl equals fedit_ft but for one unit; fedit is 0.25 below."""
    apfl = [x + (0.25 if (setting, seed, k) == ("b", 2, 0) else 0.0) for k, x in enumerate(BASE)]
    return {"fedit": [x - 0.25 for x in BASE], "fedit_ft": BASE, "apfl": apfl,
            "potara": [x + 0.25 for x in BASE], "oracle_test": [1.0] * 4}


def fake_method(accs: list[float], federated: bool = False) -> dict:
    """Four clients with 4 test examples each; 10 training passes of their own and 20 in federated rounds;
    ``federated``: 2 rounds of 300 bytes up and 350 down (final broadcast included) and 1 s of them."""
    rows = [{"client": f"client_{k:02d}", "n_train": 10 + k, "acc": x, "val_acc": x / 2, "n_test": 4,
             "correct": round(4 * x), "lambda": 0.25 * k, "cost": {"seconds": 0.5, "train_passes": 10, "forward_passes": 0}}
            for k, x in enumerate(accs)]
    return {"mean_acc": sum(accs) / 4, "worst_acc": min(accs), "bytes_up": 300 * federated,
            "bytes_down": 350 * federated, "rounds": 2 * federated, "per_client": rows,
            "compute": {"train_passes": 30, "forward_passes": 0, "seconds": 0.5 + federated}}


def fake_round(r: int, federated: bool) -> dict:
    """Round ``r`` of a fake cell; ``federated``: with its bytes and apfl's own federation under its name."""
    if not federated:
        return record(r, 0.1 * r, potara=0.2 * r)
    apfl = {"bytes_up": 10, "bytes_down": 10, "cum_bytes_up": 10 * r, "cum_bytes_down": 10 * r, "broadcast_bytes": 5,
            "mean_acc": 0.15 * r}
    return {**record(r, 0.1 * r, 150, potara=0.2 * r), "bytes_up": 150, "bytes_down": 150, "apfl": apfl}


def write_fake_cells(out, federated: bool = False) -> bench_suite.Suite:
    """Finished cells as `potara run` writes them, with made-up accuracies: no engine. ``federated``: every
    method but the oracle sends bytes over 2 rounds, apfl in a federation of its own; cell times vary."""
    suite = bench_suite.Suite("fake", list(range(6)), list(fake_accs("a", 0)), {s: {} for s in FAKE_SEEDS})
    for setting, seeds in FAKE_SEEDS.items():
        for seed in seeds:
            methods = {name: fake_method(accs, federated and name != "oracle_test")
                       for name, accs in fake_accs(setting, seed).items()}
            timing = {"wall_s": 1.0 + federated * seed, "federation_s": 0.5, "local_epoch_s": 0.1,
                      "method_s": dict.fromkeys(methods, 0.5)}
            where = bench_suite.cell_dir(out, setting, seed)
            where.mkdir(parents=True)
            code = {"code": {"commit": "0123abcd"}} if seed == 0 else {}  # the others as before commits were kept
            config = bench_suite.cell_config(suite, setting, seed).to_dict()
            summary = {"config": config, "methods": methods, "timing": timing, **code}
            (where / "summary.json").write_text(json.dumps(summary))
            (where / "rounds.jsonl").write_text("".join(json.dumps(fake_round(r, federated)) + "\n" for r in (1, 2)))
    return suite


def pooling_a_and_b(suite: bench_suite.Suite) -> bench_suite.Suite:
    """The fake suite with c compared with a, not pooled: a and b give 12 clusters, enough for a verdict."""
    return bench_suite.Suite(suite.name, suite.seeds, suite.methods, suite.settings, compare={"c": "a"})


def test_setting_tables_show_paired_differences_and_mark_bounds(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(bench_report, "save_png", lambda fig, path: drawn.update(
        {line.get_label(): line.get_markerfacecolor() for ax in fig.axes for line in ax.get_lines()}))
    report = bench_report.write_report(tmp_path, write_fake_cells(tmp_path))
    a, c = report.split("## a\n")[1].split("## b\n")[0], report.split("## c\n")[1].split("## Communication")[0]
    assert "| Δ vs fedit_ft [95% CI] | W/T/L |" in a
    assert "| potara | 0.625 ± 0.000 | 0.500 ± 0.000 | +0.250 [+0.250, +0.250] | 24/0/0 |" in a
    assert "| apfl | 0.375 ± 0.000 | 0.250 ± 0.000 | +0.000 [+0.000, +0.000] | 0/24/0 |" in a
    assert "| fedit (not personalized) | 0.125 ± 0.000 | 0.000 ± 0.000 | -0.250 [-0.250, -0.250] | 0/0/24 |" in a
    assert "| fedit_ft | 0.375 ± 0.000 | 0.250 ± 0.000 | – | – |" in a
    assert "| oracle_test (bound) | 1.000 ± 0.000 | 1.000 ± 0.000 | +0.625 [+0.625, +0.625] | 24/0/0 |" in a
    assert "| potara | 0.625 ± 0.000 | 0.500 ± 0.000 | +0.250 [–] | 4/0/0 |" in c  # one seed: no interval
    assert drawn["oracle_test (bound)"] == "none" and drawn["potara (per round)"] != "none"
    assert "**Statistics.**" in report and "Welch–Satterthwaite" in report and "Holm" in report


def test_pooled_paired_differences_in_report_md_and_json(tmp_path):
    report = bench_report.write_report(tmp_path, pooling_a_and_b(write_fake_cells(tmp_path)))
    pooled = report.split("## Paired differences, pooled over every setting")[1].split("\n## ")[0]
    assert "**Uncorrected, exploratory**" in pooled
    assert ("| potara | +0.250 [+0.250, +0.250] | 0.000 / 0.000 | 48/0/0 | win "
            "| apfl | +0.245 [+0.231, +0.258] | 0.000 / 0.000 | 47/1/0 | win |") in pooled
    assert "| apfl | +0.005 [-0.008, +0.019] | 0.363 / 1.000 | 1/47/0 | tie |" in pooled
    assert "| fedit (not personalized) | -0.250 [-0.250, -0.250] | 0.000 / 0.000 | 0/0/48 | loss | apfl |" in pooled
    assert "oracle_test" not in pooled

    written = json.loads((tmp_path / "report.json").read_text())
    assert set(written) == {"suite", "unit", "cluster", "stratum", "statistics", "bounds", "non_personalized",
                            "settings", "overall", "potara_versus", "compare"}
    assert written["bounds"] == ["oracle_test"] and set(written["settings"]) == {"a", "b", "c"}
    assert written["non_personalized"] == ["fedit", "ffa_lora"]
    potara = written["overall"]["potara"]
    assert potara["vs_fedit_ft"] == {
        "against": "fedit_ft", "mean": 0.25, "ci": [0.25, 0.25], "level": 0.95, "df": 10.0, "p_t": 0.0,
        "p_signflip": 2 / 4096, "wins": 48, "ties": 0, "losses": 0, "units": 48, "clusters": 12, "verdict": "win",
    }
    peer = potara["vs_best_peer"]
    assert peer["against"] == "apfl" and peer["mean"] == pytest.approx(0.25 - 0.25 / 4 / 12)
    assert written["overall"]["apfl"]["vs_fedit_ft"]["verdict"] == "tie"  # one unit better, in one of 12 cells
    assert written["overall"]["apfl"]["vs_best_peer"]["against"] == "fedit_ft"
    assert written["settings"]["c"]["potara"]["vs_fedit_ft"]["ci"] == [None, None]
    assert written["settings"]["a"]["potara"]["vs_fedit_ft"]["verdict"] == "too few clusters"  # 6 seeds
    assert "oracle_test" not in written["overall"]


def test_potara_against_every_method_is_holm_corrected_and_a_compared_setting(tmp_path):
    report = bench_report.write_report(tmp_path, pooling_a_and_b(write_fake_cells(tmp_path)))
    versus = report.split("## `potara` against every method")[1].split("\n## ")[0]
    assert "**Holm-corrected family**" in versus
    assert ("| fedit (not personalized) | +0.500 [+0.500, +0.500] 98.33% | 0.000 / 0.000 / Holm 0.000 | 48/0/0 "
            "| win | too few clusters (+0.500) | too few clusters (+0.500) |") in versus
    assert "| oracle_test (bound) † | -0.375 [-0.375, -0.375] | 0.000 / 0.000 | 0/0/48 | loss |" in versus
    cross = report.split("## `c` against `a` (same seeds and clients)")[1]
    assert "| potara | 30 | 0 | fedit_ft | 30 | 0 | +0.250 [–] | – | 4/0/0 | too few clusters |" in cross
    written = json.loads((tmp_path / "report.json").read_text())
    assert set(written["potara_versus"]) == {"pooled", "a", "b"}
    pooled = written["potara_versus"]["pooled"]
    assert {k for k, d in pooled.items() if d["holm_family"]} == {"fedit", "fedit_ft", "apfl"}
    assert pooled["apfl"]["p_holm"] == pooled["apfl"]["p_t"] > 0  # the largest p of 3: factor 1, level 95%
    assert [pooled[k]["level"] for k in ("fedit", "fedit_ft", "apfl")] == pytest.approx([1 - 0.05 / 3, 0.975, 0.95])
    assert "p_holm" not in pooled["oracle_test"]
    assert written["compare"]["c"]["potara"]["versus"]["fedit_ft"]["units"] == 4


def test_the_report_regenerates_from_its_csv_records_alone(tmp_path, monkeypatch):
    suite = pooling_a_and_b(write_fake_cells(tmp_path / "run", federated=True))
    drawn: dict[str, dict] = {}
    monkeypatch.setattr(bench_report, "save_png", lambda fig, path: drawn.update({str(path): figure_data(fig)}))
    original = bench_report.write_report(tmp_path / "run", suite)
    units = (tmp_path / "run" / "fake-units.csv").read_text().splitlines()
    assert units[0] == ("setting,seed,client,method,n_test,correct,val_acc,lambda,train_passes,personalize_s,acc,n_train,"
                        "label_skew")
    assert "a,0,client_01,potara,4,3,0.375,0.25,30.0,0.5,0.75,11," in units and len(units) == 1 + 13 * 5 * 4
    rounds = (tmp_path / "run" / "fake-rounds.csv").read_text().splitlines()
    assert rounds[0] == ("setting,seed,round,kind,name,bytes_up,bytes_down,cum_bytes_up,cum_bytes_down,"
                         "broadcast_bytes,mean_acc")
    assert "b,3,2,federation,apfl,10,10,20,20,5,0.3" in rounds and "b,3,2,method,potara,,,,,,0.4" in rounds
    cells = (tmp_path / "run" / "fake-cells.csv").read_text().splitlines()
    assert "b,3,apfl,apfl,300,350,30,0,1.5,20.0,1.0,4.0,0.5,0.1,,," in cells  # no DP, CPU or commit: blank
    assert "b,3,oracle_test,,0,0,30,0,0.5,20.0,0.0,4.0,0.5,0.1,,," in cells
    assert "a,0,oracle_test,,0,0,30,0,0.5,20.0,0.0,1.0,0.5,0.1,,,0123abcd" in cells

    regenerated = bench_report.report_from_units(tmp_path / "run" / "fake-units.csv", suite, tmp_path / "again")
    assert regenerated == original
    assert ("Code that ran the cells: `0123abcd` (3 cells), not recorded (10 cells, run before cells recorded their "
            "commit).") in original
    assert "| apfl | 0.375 ± 0.000 | 0.250 ± 0.000 | +0.000 [+0.000, +0.000] | 0/24/0 | 0.3 kB | 0.3 kB |" in original
    assert "| b | 2 | 0.375 ± 0.000 | apfl | 6/6 | r2 | s0: r2 (0.0 kB)," in original  # its own federation's bytes
    assert "| b | 2 | 0.375 ± 0.000 | potara | 6/6 | r2 | s0: r2 (0.7 kB)," in original
    assert "cell wall time 4 ± 2 s" in original
    first, again = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("run", "again"))
    assert again == first
    plots = sorted(p.removeprefix(str(tmp_path / "run")) for p in drawn if p.startswith(str(tmp_path / "run")))
    assert len(plots) == 3 * 3  # accuracy vs bytes, per client, λ against the oracle, per setting
    for plot in plots:
        assert drawn[str(tmp_path / "again") + plot] == drawn[str(tmp_path / "run") + plot], plot
    lam = drawn[str(tmp_path / "run" / "plots" / "b.lambda_vs_oracle.png")]
    assert len(lam["scatter"][0][0]) == 24 and len(set(lam["scatter"][0][1])) == 4  # sized by n_train, 10 to 13
    assert drawn[str(tmp_path / "again" / "plots" / "a.per_client.png")]["ticks"][0][3] == "client_03\nn=13"


def test_a_report_from_the_units_csv_alone_shows_no_bytes(tmp_path):
    suite = pooling_a_and_b(write_fake_cells(tmp_path / "run", federated=True))
    original = bench_report.write_report(tmp_path / "run", suite)
    for kind in ("rounds", "cells"):
        (tmp_path / "run" / f"fake-{kind}.csv").unlink()
    regenerated = bench_report.report_from_units(tmp_path / "run", suite, tmp_path / "again")
    for title in ("## Paired differences, pooled over every setting", "## `potara` against every method"):
        assert section(regenerated, title) == section(original, title)
    for setting in "abc":  # the setting tables, but for the bytes columns (not per unit)
        assert without_bytes(section(regenerated, f"## {setting}\n")) == without_bytes(section(original, f"## {setting}\n"))
    assert "| apfl | 0.375 ± 0.000 | 0.250 ± 0.000 | +0.000 [+0.000, +0.000] | 0/24/0 | – | – |" in regenerated
    assert "Not analysed (no `fedit_ft`, or round records without `broadcast_bytes`): a seed 0" in regenerated


def test_bench_report_from_regenerates_the_report_from_committed_csvs(tmp_path, capsys):
    suite = pooling_a_and_b(write_fake_cells(tmp_path / "run", federated=True))
    original = bench_report.write_report(tmp_path / "run", suite)
    records = tmp_path / "committed"
    records.mkdir()
    for kind in ("units", "rounds", "cells"):
        (records / f"fake-{kind}.csv").write_bytes((tmp_path / "run" / f"fake-{kind}.csv").read_bytes())
    path = write_suite(tmp_path / "fake.yaml", {"seeds": suite.seeds, "methods": suite.methods,
                                                "settings": {s: {} for s in suite.settings}, "compare": {"c": "a"}})
    for source in (records, records / "fake-units.csv"):
        out = tmp_path / f"again-{source.name}"
        code, printed, err = bench_cli(["--suite", str(path), "--report-from", str(source), "--out", str(out)], capsys)
        assert code == 0, err
        assert (out / "report.md").read_text() == original and original in printed
        assert (out / "report.json").read_text() == (tmp_path / "run" / "report.json").read_text()
        assert (out / "plots" / "b.accuracy_vs_bytes.png").stat().st_size > 1000
        assert not (out / "cells").exists()
    (tmp_path / "nothing").mkdir()
    code, _, err = bench_cli(["--suite", str(path), "--report-from", str(tmp_path / "nothing"), "--out",
                              str(tmp_path / "o")], capsys)
    assert code == 2 and "no units CSV at" in err and "nothing/fake-units.csv" in err
    (records / "fake-units.csv").write_text("setting,seed,client\n")
    code, _, err = bench_cli(["--suite", str(path), "--report-from", str(records), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "not a units CSV" in err


def section(report: str, title: str) -> str:
    return report.split(title)[1].split("\n## ")[0]


def without_bytes(table: str) -> list[list[str]]:
    return [cells[:6] + cells[8:] for cells in (line.split("|") for line in table.splitlines() if line.startswith("|"))]


def figure_data(fig) -> dict:
    """What a figure draws: its titles, lines, scatter points (offsets and sizes), bars and tick labels."""
    return {
        "titles": [ax.get_title() for ax in fig.axes],
        "lines": [(line.get_label(), list(line.get_xdata()), list(line.get_ydata())) for ax in fig.axes
                  for line in ax.get_lines()],
        "scatter": [(c.get_offsets().tolist(), c.get_sizes().tolist()) for ax in fig.axes for c in ax.collections
                    if not hasattr(c, "get_segments")],
        "segments": [[s.tolist() for s in c.get_segments()] for ax in fig.axes for c in ax.collections
                     if hasattr(c, "get_segments")],
        "bars": [(p.get_x(), p.get_height()) for ax in fig.axes for p in ax.patches],
        "ticks": [[t.get_text() for t in ax.get_xticklabels()] for ax in fig.axes],
    }
