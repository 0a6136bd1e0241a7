"""``potara bench``: methods × settings × seeds from a suite file, one engine run per cell, resumable.

A suite (YAML, shipped in ``potara/bench/suites/<name>.yaml`` or given as a path) has ``seeds``, ``methods``,
shared ``overrides`` and ``settings`` (name → overrides), both as dotted config keys (``fed.rounds: 6``).
Cell (setting, seed) = shared overrides, then the setting's, then ``--set``; it is written atomically to
``OUT/cells/<setting>/seed-<s>/`` (``summary.json``, ``rounds.jsonl``, as ``potara run`` writes them). A cell whose
``summary.json`` exists is skipped when its stored config equals the one it would run, and is an error
otherwise (use another ``--out``, or delete the cell to re-run it).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from .. import config as config_mod
from ..config import ConfigError, RunConfig
from . import packaged_suites
from .totals import CPU_TIME

SUITE_KEYS = ("description", "seeds", "methods", "overrides", "settings", "compare", "sweep", "grid")
RESERVED = ("seed", "methods")  # set per cell by the suite (narrow with --seeds / --methods)
SETTING_METHODS = "methods"  # a setting may run a subset of the suite's methods


@dataclass(frozen=True)
class Suite:
    name: str
    seeds: list[int]
    methods: list[str]
    settings: dict[str, dict[str, Any]]
    overrides: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    compare: dict[str, str] = field(default_factory=dict)  # setting -> the setting its methods are compared with
    sweep: bool = False  # the compared settings change one thing: report them as a sweep (``bench.sweep``)
    grid: dict[str, list] = field(default_factory=dict)  # setting -> [row, column] of a map (``bench.grid``)

    def methods_of(self, setting: str) -> list[str]:
        """The methods a setting runs: its own ``methods`` (those of the suite's it names), else the suite's."""
        own = self.settings[setting].get(SETTING_METHODS)
        return [m for m in self.methods if own is None or m in own]

    def narrowed(
        self, seeds: list[int] | None = None, only: list[str] | None = None, methods: list[str] | None = None
    ) -> Suite:
        """The suite restricted to some of its seeds, settings (``--only``) and methods; a seed or setting it does
        not have is an error."""
        twice = _repeated(seeds or [])
        if twice is not None:
            raise ConfigError(f"--seeds: seed {twice} is given twice; give each seed once")
        outside = [s for s in seeds or [] if s not in self.seeds]
        if outside:  # its cell would run, and never be reported: the report covers the suite's seeds
            raise ConfigError(f"suite '{self.name}' has no seed {outside[0]}; seeds: {', '.join(map(str, self.seeds))}")
        unknown = [s for s in only or [] if s not in self.settings]
        if unknown:
            raise ConfigError(f"suite '{self.name}' has no setting '{unknown[0]}'; settings: {', '.join(self.settings)}")
        settings = {k: v for k, v in self.settings.items() if not only or k in only}
        compare = {k: v for k, v in self.compare.items() if k in settings and v in settings}
        grid = {k: v for k, v in self.grid.items() if k in settings}
        return replace(self, seeds=seeds or self.seeds, methods=methods or self.methods, settings=settings,
                       compare=compare, grid=grid)


def load_suite(name_or_path: str) -> Suite:
    """A packaged suite by name (``offline``), or a suite file by path; the file's shape is checked."""
    path = Path(name_or_path)
    if not path.is_file():
        if name_or_path not in packaged_suites():
            raise ConfigError(
                f"suite '{name_or_path}' is neither a file nor a packaged suite ({', '.join(packaged_suites())})"
            )
        path = Path(str(resources.files("potara.bench").joinpath("suites", f"{name_or_path}.yaml")))
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"suite file '{path}' is not valid YAML: {err}") from err
    return parse_suite(raw, path.stem)


def parse_suite(raw: Any, name: str) -> Suite:
    where = f"suite '{name}'"
    _require(isinstance(raw, dict), f"{where} must be a mapping with keys {', '.join(SUITE_KEYS)}")
    unknown = sorted(set(raw) - set(SUITE_KEYS))
    _require(not unknown, f"{where}: unknown key '{unknown[0] if unknown else ''}'; valid keys: {', '.join(SUITE_KEYS)}")
    seeds, methods = raw.get("seeds"), raw.get("methods")
    settings, overrides = raw.get("settings"), raw.get("overrides") or {}
    _require(
        isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds),
        f"{where}: 'seeds' must be a non-empty list of integers",
    )
    twice = _repeated(seeds)
    _require(twice is None, f"{where}: seed {twice} is listed twice; list each seed once")
    _require(
        isinstance(methods, list) and methods and all(isinstance(m, str) for m in methods),
        f"{where}: 'methods' must be a non-empty list of method names",
    )
    _require(isinstance(overrides, dict), f"{where}: 'overrides' must map dotted config keys to values")
    _require(
        isinstance(settings, dict) and settings and all(isinstance(v, dict | None) for v in settings.values()),
        f"{where}: 'settings' must map each setting name to its overrides (dotted config keys to values)",
    )
    for key in (*overrides, *(k for v in settings.values() for k in v or {} if k != SETTING_METHODS)):
        _require(key not in RESERVED, f"{where}: '{key}' is set by the suite's 'seeds'/'methods', not by overrides")
    for setting, values in settings.items():
        own = (values or {}).get(SETTING_METHODS)
        _require(
            own is None or (isinstance(own, list) and own and set(own) <= set(methods)),
            f"{where}, setting '{setting}': 'methods' must be a non-empty list of the suite's methods",
        )
    compare = raw.get("compare") or {}
    _require(
        isinstance(compare, dict) and all(k in settings and v in settings and k != v for k, v in compare.items()),
        f"{where}: 'compare' must map a setting to another setting of the suite (its methods are compared with "
        "that setting's on the same seeds and clients)",
    )
    sweep = raw.get("sweep", False)
    _require(isinstance(sweep, bool) and (not sweep or compare),
             f"{where}: 'sweep' must be true or false, and true only with 'compare' (the settings it sweeps)")
    grid = raw.get("grid") or {}
    _require(
        isinstance(grid, dict) and all(k in settings and isinstance(v, list) and len(v) == 2 for k, v in grid.items()),
        f"{where}: 'grid' must map settings of the suite to [row, column] (e.g. dirichlet_0.1_n16: [Dirichlet 0.1, 16])",
    )
    return Suite(name, seeds, methods, {k: v or {} for k, v in settings.items()}, overrides,
                 raw.get("description", ""), compare, sweep, grid)


def _repeated(seeds: list[int]) -> int | None:
    """The first seed listed a second time (None: each once)."""
    return next((seed for i, seed in enumerate(seeds) if seed in seeds[:i]), None)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def cell_config(suite: Suite, setting: str, seed: int, sets: list[str] = ()) -> RunConfig:
    """The config of one cell: shared overrides, the setting's, ``--set`` items, the seed and the methods."""
    values: dict[str, Any] = {}
    try:
        for key, value in {**suite.overrides, **suite.settings[setting]}.items():
            if key != SETTING_METHODS:
                config_mod.set_key(values, key, value)
        for item in sets:
            _require(item.split("=", 1)[0].strip() not in RESERVED, f"--set {item}: use --seeds / --methods instead")
            config_mod.apply_override(values, item)
        values.update(seed=seed, methods=suite.methods_of(setting))
        return config_mod.from_dict(values)
    except ConfigError as err:
        raise ConfigError(f"suite '{suite.name}', setting '{setting}': {err}") from err


def check_cells(suite: Suite, sets: list[str] = ()) -> None:
    """Build every setting's config and resolve its methods, so a bad suite fails before any cell runs."""
    from ..methods import resolve

    for setting in suite.settings:
        cfg = cell_config(suite, setting, suite.seeds[0], sets)
        try:
            resolve(cfg)
        except ConfigError as err:
            raise ConfigError(f"suite '{suite.name}', setting '{setting}': {err}") from err


def cell_dir(out: Path, setting: str, seed: int) -> Path:
    return out / "cells" / setting / f"seed-{seed}"


def check_same_cell(cfg: RunConfig, stored: dict, where: Path) -> None:
    """A finished cell's stored config must be the one ``cfg`` would run (the thread count aside), or it is not this
    suite's cell: an error naming the first difference."""
    wanted, there = _identity(json.loads(json.dumps(cfg.to_dict()))), _identity(_as_now(stored))
    if there != wanted:
        raise ConfigError(
            f"cell '{where}' was run with another config ({_first_difference(there, wanted)}); pass the --set items "
            f"it ran with, use another --out, or delete '{where}' to run it again"
        )


def run_cell(cfg: RunConfig, where: Path) -> bool:
    """Run one cell into ``where`` unless it is already there (same config); True if it ran."""
    if (where / "summary.json").is_file():
        check_same_cell(cfg, json.loads((where / "summary.json").read_text())["config"], where)
        return False
    from .. import engine
    from ..reporting import outputs

    where.parent.mkdir(parents=True, exist_ok=True)
    for stale in where.parent.glob(f".{where.name}.tmp-*"):  # left by a killed bench
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{where.name}.tmp-", dir=where.parent))
    try:
        began, cpu = time.perf_counter(), time.process_time()
        result = engine.run(cfg)
        summary = outputs.summary(cfg.to_dict(), result)
        summary["timing"].update(wall_s=time.perf_counter() - began)
        summary["timing"][CPU_TIME] = time.process_time() - cpu
        outputs.write_outputs(staging, summary, result.rounds, plots=False)
        if where.exists():  # a cell folder without summary.json is an incomplete one of ours
            shutil.rmtree(where)
        staging.rename(where)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return True


def _identity(config: dict) -> dict:
    """What makes a cell the same cell: its config but the thread count, which changes how fast it runs, not what it
    computes (beyond float summation order), so cells may run one thread each side by side on a small machine."""
    return {k: v for k, v in config.items() if k != "threads"}


def _as_now(stored: dict) -> dict:
    """A cell's stored config read by today's config code: keys added since it ran take their defaults, so a cell
    run before a new setting existed matches a cell that leaves it at its default (a stored config today's code
    rejects is compared as it is)."""
    try:
        return json.loads(json.dumps(config_mod.from_dict(stored).to_dict()))
    except ConfigError:
        return stored


def _first_difference(stored: Any, wanted: Any, path: str = "") -> str:
    if isinstance(stored, dict) and isinstance(wanted, dict):
        for key in sorted(set(stored) | set(wanted)):
            if stored.get(key) != wanted.get(key):
                return _first_difference(stored.get(key), wanted.get(key), f"{path}.{key}".strip("."))
    return f"{path or 'config'}: {stored!r} there, {wanted!r} now"


def run_suite(suite: Suite, out: Path, sets: list[str] = ()) -> tuple[int, int, dict[str, str]]:
    """Every cell of the suite (settings × seeds), skipping finished ones; a cell that fails is reported and
    the others still run. (cells run, cells skipped, {failed cell: error})."""
    check_cells(suite, sets)
    cells = [(s, seed) for s in suite.settings for seed in suite.seeds]
    ran, failed = 0, {}
    bar = tqdm(cells, desc=f"bench {suite.name}", unit="cell")
    for setting, seed in bar:
        bar.set_postfix_str(f"{setting} seed {seed}")
        try:
            ran += run_cell(cell_config(suite, setting, seed, sets), cell_dir(out, setting, seed))
        except ConfigError:
            raise
        except Exception as err:  # one broken cell must not cost the finished and the remaining ones
            failed[f"{setting} seed {seed}"] = f"{type(err).__name__}: {err}"
    return ran, len(cells) - ran - len(failed), failed
