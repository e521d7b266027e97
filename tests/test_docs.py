"""The README and docs/ stay true (`make docs-check`): every relative link resolves, and every
`make` and `rrl` command they show still parses, its settings included.

A `make` line must name existing targets and known variables, and its settings must build a valid
config (so a doc still saying `SET="render.width=64"` after the setting moved fails here). An `rrl`
line must parse with the real command-line parser (run with `--help`, which does nothing).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from pipeline.config import PipelineConfig
from stages.options import BY_MAKE_VAR, MAKE_ONLY, overrides

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
INLINE = re.compile(r"`((?:make|rrl) [^`]+)`")
FENCE = re.compile(r"```(?:bash|sh)?\n(.*?)```", re.S)
TARGETS = set(re.findall(r"^([a-z0-9-]+):", (ROOT / "Makefile").read_text(), re.M))
# Placeholders a page may use in a command: they stand for a value, not a literal.
PLACEHOLDER = re.compile(r"\.\.\.|<[^>]+>|\bKEY\b|\bE\b$")


def commands(page: Path) -> list[str]:
    text = page.read_text()
    found = [m.group(1) for m in INLINE.finditer(text)]
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():  # join continued lines
            line = line.split(" # ")[0].strip()
            for part in re.split(r"&&|;", line):
                part = part.strip()
                if part.startswith(("make ", "rrl ")):
                    found.append(part)
    return found


CASES = [(page, cmd) for page in PAGES for cmd in commands(page)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        if not (page.parent / target.split("#")[0]).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


@pytest.mark.parametrize(("page", "command"), CASES,
                         ids=[f"{p.name}:{c[:40]}" for p, c in CASES])
def test_commands_parse(page: Path, command: str) -> None:
    if PLACEHOLDER.search(command):
        command = PLACEHOLDER.sub("", command)
    words = shlex.split(command)
    if words[0] == "make":
        _check_make(words[1:], page)
    else:
        _check_rrl(words[1:], page)


def _check_make(words: list[str], page: Path) -> None:
    variables = dict(w.split("=", 1) for w in words if "=" in w)
    targets = [w for w in words if "=" not in w]
    assert all(t in TARGETS for t in targets), f"{page.name}: unknown make target in {targets}"
    unknown = [v for v in variables if v not in BY_MAKE_VAR and v not in MAKE_ONLY]
    assert not unknown, f"{page.name}: unknown make variables {unknown}"
    values = {BY_MAKE_VAR[v].param: x for v, x in variables.items() if v in BY_MAKE_VAR}
    PipelineConfig().with_overrides(overrides(values, variables.get("SET", "").split()))


def _check_rrl(words: list[str], page: Path) -> None:
    from stages.cli import app

    sets = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--set"]
    PipelineConfig().with_overrides(overrides({}, sets))
    command = typer.main.get_command(app)
    try:
        command.main(args=[*words, "--help"], prog_name="rrl", standalone_mode=False)
    except SystemExit as exc:  # --help exits 0 in some click versions
        assert exc.code in (0, None), f"{page.name}: `rrl {' '.join(words)}` does not parse"
