"""Experiment files: a base config, a grid, extra cells and named budgets, expanded into cells.

``experiments/<name>.toml``::

    title = "encoder family"                 # the report's panel title
    [base]                                   # dotted config values shared by every cell
    "env.task" = "door"
    [grid]                                   # every combination is a cell
    "encode.encoder" = ["resnet18", "shufflenet_v2_x1_0"]
    "policy.seed" = [0, 1]
    [[cells]]                                # extra cells outside the product (baselines)
    name = "DAPG (state)"
    "policy.obs_mode" = "state"
    "policy.seed" = [0, 1]                   # a list here is a small grid of its own
    budgets = ["paper"]                      # only in these budgets (default: every budget)
    [[cells]]
    name = "RAD (pixels)"
    stage = "rad"                            # the cell is this stage's output (default: evaluate)
    [budgets.smoke]                          # how long to run
    seeds = [0]                              # replaces policy.seed's values in every cell
    parallel = 1                             # cells at once (default: from the CPU count)
    "dapg.iterations" = 3

``include = "_rrl_door.toml"`` (a path beside the file) takes [base] and [budgets] from another
file, so the ablations share one base and one set of budgets (and thus their common cells).

A cell's config is the caller's base config, then [base], then the budget, then the cell's own
values (so a grid over a budget field wins over the budget). A list value of a tuple field
(``policy.hidden = [64, 64]``) is one value; a grid over it is a list of lists.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import SECTIONS, PipelineConfig, split_field
from pipeline.errors import ConfigError, PipelineError, unknown_name
from pipeline.settings import field_type, parse_value

SEED_FIELD = "policy.seed"  # cells differing only in this are one curve (mean and spread)
TOP_LEVEL = ("title", "description", "include", "base", "grid", "cells", "budgets")
INCLUDABLE = ("description", "base", "budgets")
RUN_SETTINGS = ("parallel", "seeds")  # budget entries that are not config fields
# The stage whose output a cell is: the policy learned from a cached store and evaluated, or a
# RAD agent, which learns from the pixels it renders (its own stage, no upstream).
CELL_STAGES = ("evaluate", "rad")
REPO_EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


@dataclass(frozen=True)
class Budget:
    name: str
    overrides: dict[str, str]
    parallel: int | None  # cells at once on a local cluster; None: from the CPU count
    seeds: tuple[int, ...] | None  # every cell once per seed; None: the file's policy.seed values


@dataclass(frozen=True)
class Cell:
    name: str  # "encoder=resnet18 seed=0": unique within the experiment
    group: str  # the name without the seed: one curve of the report
    values: tuple[tuple[str, str], ...]  # the cell's own (dotted field, value) pairs
    config: PipelineConfig
    target: str = CELL_STAGES[0]  # the stage whose output the cell is

    @property
    def slug(self) -> str:
        """The name as a file name."""
        keep = [c if c.isalnum() or c in "-_." else "_" for c in self.name.replace("=", "-")]
        return "".join(keep).strip("_") or "cell"


@dataclass(frozen=True)
class Experiment:
    name: str
    path: Path
    title: str
    base: dict[str, str]
    grid: dict[str, list[str]]
    extra: tuple[tuple[str, dict[str, list[str]]], ...]
    budgets: dict[str, Budget]
    description: str = ""
    # extra cell name -> the budgets it belongs to (``budgets = ["paper"]`` in its [[cells]]
    # entry); cells not named here belong to every budget
    cell_budgets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    targets: tuple[tuple[str, str], ...] = ()  # extra cell name -> its stage, where not evaluate

    def budget(self, name: str) -> Budget:
        if name not in self.budgets:
            raise unknown_name(f"budget of {self.path}", name, list(self.budgets))
        return self.budgets[name]

    def cells(self, budget: str, base: PipelineConfig | None = None) -> list[Cell]:
        """Every cell of the grid and the extra cells, each with its validated config."""
        b = self.budget(budget)
        start = base or PipelineConfig()
        tables = ([("", self.grid)] if self.grid else []) + [
            (name, table) for name, table in self.extra
            if b.name in self.cell_budgets.get(name, (b.name,))]
        cells = []
        for prefix, table in tables:
            if b.seeds is not None:
                table = {**{k: v for k, v in table.items() if k != SEED_FIELD},
                         SEED_FIELD: [str(seed) for seed in b.seeds]}
            varied = [k for k, v in table.items() if len(v) > 1]  # one-value axes go unnamed
            for values in _product(table):
                shown = {k: values[k] for k in varied}
                name = _join(prefix, _label(shown))
                group = _join(prefix, _label({k: v for k, v in shown.items() if k != SEED_FIELD}))
                cell = self._cell(name, group, values, start, b, prefix or "[grid]")
                cells.append(dataclasses.replace(cell, target=dict(self.targets).get(
                    prefix, CELL_STAGES[0])))
        names = [c.name for c in cells]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise self.error("cells", f"two cells are both named {dupes[0]!r}",
                             "give the extra cells distinct names, or vary a field")
        if not cells:
            raise self.error("grid", "the file defines no cells", "add a [grid] or [[cells]]")
        return cells

    def _cell(self, name: str, group: str, values: dict[str, str], start: PipelineConfig,
              budget: Budget, table: str) -> Cell:
        source = {**dict.fromkeys(self.base, "[base]"),
                  **dict.fromkeys(budget.overrides, f"[budgets.{budget.name}]"),
                  **dict.fromkeys(values, table if table == "[grid]" else f"[[cells]] {table!r}")}
        try:
            config = start.with_overrides({**self.base, **budget.overrides, **values})
        except PipelineError as exc:
            # Name the table each field in the message came from (a range or a cross-field rule).
            named = [f"{source[f]} {f}" for f in source if f in str(exc)]
            raise self.error(", ".join(named) or f"cell {name!r}", f"{exc} (cell {name!r})",
                             "correct that value in the file") from None
        return Cell(name, group, tuple(values.items()), config)

    def error(self, where: str, problem: str, fix: str) -> ConfigError:
        return ConfigError(f"{self.path}: {where}: {problem}. Fix: {fix}")


def _label(values: dict[str, str]) -> str:
    """``encoder=resnet18 seed=0``: field names without their section unless that is ambiguous."""
    short = {k.split(".")[1] for k in values}
    names = {k: k.split(".")[1] if len(short) == len(values) else k for k in values}
    return " ".join(f"{names[k]}={v}" for k, v in values.items())


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p) or "base"


def _product(table: dict[str, list[str]]) -> list[dict[str, str]]:
    keys = list(table)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*table.values())]


def find_experiment(name: str, search: tuple[Path, ...] = ()) -> Path:
    """``smoke`` -> ``experiments/smoke.toml`` (here, else in the repository); a path as given."""
    if name.endswith(".toml") or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"experiment file {path} not found. Fix: check the path")
        return path
    folders = (*search, Path("experiments"), REPO_EXPERIMENTS)
    for folder in folders:
        if (folder / f"{name}.toml").is_file():
            return folder / f"{name}.toml"
    known = sorted({p.stem for folder in folders if folder.is_dir() for p in folder.glob("*.toml")
                    if not p.name.startswith("_")})  # _name.toml: included parts, not experiments
    raise unknown_name("experiment", name, known)


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate an experiment file: unknown tables or fields, bad values fail here."""
    path = Path(path)
    raw = _read_toml(path, TOP_LEVEL)
    draft = Experiment(path.stem, path, str(raw.get("title", path.stem)), {}, {}, (), {})
    if "include" in raw:
        raw = _merge_include(raw, _read_toml(path.parent / str(raw["include"]), INCLUDABLE))
    base = _values(draft, "[base]", _table(draft, raw, "base"))
    grid = _axes(draft, "[grid]", _table(draft, raw, "grid"))
    extra, targets = [], []
    cell_budgets: dict[str, tuple[str, ...]] = {}
    for i, cell in enumerate(raw.get("cells", [])):
        where = f"[[cells]] #{i + 1}"
        if not isinstance(cell, dict) or not isinstance(cell.get("name"), str) or not cell["name"]:
            raise draft.error(where, "each extra cell needs a name", 'add name = "..."')
        stage = cell.get("stage", CELL_STAGES[0])
        if stage not in CELL_STAGES:
            raise draft.error(f"{where} ({cell['name']}) stage", f"{stage!r} is not a stage a cell "
                              "can end at", f"use one of {', '.join(CELL_STAGES)}")
        if stage != CELL_STAGES[0]:
            targets.append((cell["name"], stage))
        extra.append((cell["name"], _axes(draft, f"{where} ({cell['name']})",
                                          {k: v for k, v in cell.items()
                                           if k not in ("name", "budgets", "stage")})))
        if "budgets" in cell:
            only = cell["budgets"]
            if not isinstance(only, list) or not all(isinstance(b, str) for b in only):
                raise draft.error(f"{where} budgets", f"{only!r} is not a list of budget names",
                                  'write budgets = ["smoke"]')
            cell_budgets[cell["name"]] = tuple(only)
    budgets = {}
    for name, table in _table(draft, raw, "budgets").items():
        if not isinstance(table, dict):
            raise draft.error(f"budgets.{name}", "expected a table", f"write [budgets.{name}]")
        budgets[name] = _budget(draft, name, table)
    if not budgets:
        raise draft.error("[budgets]", "no budget defined", "add [budgets.smoke] (and paper)")
    for cell_name, only in cell_budgets.items():
        for name in only:
            if name not in budgets:
                raise draft.error(f"[[cells]] {cell_name!r} budgets", f"no budget {name!r}",
                                  f"use one of {', '.join(budgets)}")
    exp = Experiment(path.stem, path, draft.title, base, grid, tuple(extra), budgets,
                     str(raw.get("description", "")).strip(), cell_budgets,
                     tuple(targets))
    for budget in budgets:
        exp.cells(budget)  # every budget's every cell is a valid config
    return exp


def _read_toml(path: Path, allowed: tuple[str, ...]) -> dict[str, Any]:
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found. Fix: check the experiment name or include") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}). Fix: correct the syntax") from None
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{path}: top-level key {key!r} is unknown. Fix: use only "
                              f"{', '.join(allowed)}")
    return raw


def _merge_include(raw: dict[str, Any], included: dict[str, Any]) -> dict[str, Any]:
    """The included [base] and [budgets] under this file's own (this file wins per field)."""
    own, inc = raw.get("budgets", {}), included.get("budgets", {})
    budgets = {name: {**inc.get(name, {}), **own.get(name, {})} for name in dict.fromkeys([*inc, *own])}
    return {"description": included.get("description", ""), **raw,
            "base": {**included.get("base", {}), **raw.get("base", {})}, "budgets": budgets}


def _table(exp: Experiment, raw: dict[str, Any], name: str) -> dict[str, Any]:
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise exp.error(name, "expected a table", f"write [{name}] with dotted keys in quotes")
    return table


def _budget(exp: Experiment, name: str, table: dict[str, Any]) -> Budget:
    parallel = table.get("parallel")
    if parallel is not None and (not isinstance(parallel, int) or isinstance(parallel, bool)
                                 or parallel < 1):
        raise exp.error(f"[budgets.{name}] parallel", f"{parallel!r} is not a positive integer",
                        "give the number of cells to run at once, e.g. parallel = 1")
    seeds = table.get("seeds")
    if seeds is not None and (not isinstance(seeds, list) or not seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise exp.error(f"[budgets.{name}] seeds", f"{seeds!r} is not a list of seeds",
                        "give non-negative integers, e.g. seeds = [0, 1, 2]")
    for k in table:
        if k not in RUN_SETTINGS and "." not in k:
            close = difflib.get_close_matches(k, RUN_SETTINGS, n=1)
            raise exp.error(f"[budgets.{name}] {k}", "is neither a run setting "
                            f"({', '.join(RUN_SETTINGS)}) nor a dotted config field",
                            f"did you mean {close[0]!r}?" if close else
                            'write a run setting, or a field such as "dapg.iterations"')
    fields = {k: v for k, v in table.items() if k not in RUN_SETTINGS}
    return Budget(name, _values(exp, f"[budgets.{name}]", fields), parallel,
                  tuple(seeds) if seeds is not None else None)


def _values(exp: Experiment, where: str, table: dict[str, Any]) -> dict[str, str]:
    return {dotted: _text(exp, where, dotted, value) for dotted, value in table.items()}


def _axes(exp: Experiment, where: str, table: dict[str, Any]) -> dict[str, list[str]]:
    """Each field's list of values (a single value is a one-value list)."""
    out = {}
    for dotted, value in table.items():
        values = value if isinstance(value, list) and _is_axis(exp, where, dotted, value) else [value]
        if not values:
            raise exp.error(f"{where} {dotted}", "empty list of values", "give at least one value")
        out[dotted] = [_text(exp, where, dotted, v) for v in values]
    return out


def _is_axis(exp: Experiment, where: str, dotted: str, value: list[Any]) -> bool:
    """A list is a list of values, except a flat list for a tuple field (one value)."""
    return not _is_tuple_field(exp, where, dotted) or all(isinstance(v, list) for v in value)


def _is_tuple_field(exp: Experiment, where: str, dotted: str) -> bool:
    try:
        section, name = split_field(dotted)
    except ConfigError as exc:
        raise exp.error(f"{where} {dotted!r}", str(exc), "use a dotted field, e.g. dapg.iterations") from None
    tp = field_type(SECTIONS[section], name)
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    return any(typing.get_origin(a) is tuple or a is tuple for a in [tp, *args])


def _text(exp: Experiment, where: str, dotted: str, value: Any) -> str:
    """A TOML value as the string `with_overrides` parses, checked against the field's type."""
    _is_tuple_field(exp, where, dotted)  # an unknown field fails here, naming it
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, list):
        if not _is_tuple_field(exp, where, dotted):
            raise exp.error(f"{where} {dotted}", f"{value!r} is a list, the field takes one value",
                            "give one value (a list only in [grid] or [[cells]])")
        text = ",".join(str(v) for v in value)
    elif isinstance(value, int | float | str):
        text = str(value)
    else:
        raise exp.error(f"{where} {dotted}", f"unsupported value {value!r}",
                        "use a string, number, boolean or list")
    section, name = split_field(dotted)
    try:
        parse_value(field_type(SECTIONS[section], name), text, dotted)
    except ConfigError as exc:
        raise exp.error(f"{where} {dotted}", str(exc), "correct the value") from None
    return text
