"""The docs name only what exists.

Every `make` target named in README.md, docs/*.md and the folders' READMEs (in inline code or a
code block: `make foo`, `make foo ENV=..`, `VAR=x make foo`) is a rule of the Makefile or an
operator command a component brings (or, once the Makefile forwards what it does not define to
the CLI, one of the CLI's subcommands); every repository path they name in backticks
(`shipyard/apply/hostlock.py`, `tests/e2e/`, `tests/unit/test_render.py::test_x`) and every
module (`shipyard.rollout_order.rollout_steps`) exists; every relative link resolves; the README
stays a front door that links every page; code that points at a docs page points at one that
exists. A failure names the doc, the line and what is missing.
"""

from __future__ import annotations

import ast
import functools
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Paths the docs name as examples of what a site would add, not as files of this repository.
EXAMPLES = frozenset({
    "templates/edge/nginx/nginx.conf.j2",
})

# Made at run time, absent from a fresh checkout: not checked.
RUNTIME_ROOTS = frozenset({".shipyard", ".venv", ".git", ".pytest_cache", ".cache"})

MODULE_ROOTS = {"shipyard": REPO / "shipyard", "taskplatform": REPO / "services" / "taskplatform",
                "taskplatform_testing": REPO / "services" / "taskplatform_testing"}


def docs(repo: Path = REPO) -> list[Path]:
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md")),
            *sorted(p for p in repo.glob("*/README.md") if p.parent.name not in RUNTIME_ROOTS)]


# --- what exists ---------------------------------------------------------------------------

_RULE = re.compile(r"^([A-Za-z0-9_.%/-][A-Za-z0-9_.%/ -]*?)\s*::?(?!=)")


def makefile_targets(makefile: Path) -> set[str]:
    """The rules of a Makefile (`a b: deps` gives a and b), not variables nor special targets."""
    targets: set[str] = set()
    for line in makefile.read_text().splitlines():
        if line.startswith(("\t", "#", " ")):
            continue
        m = _RULE.match(line)
        if m:
            targets |= {t for t in m.group(1).split() if not t.startswith(".") and "%" not in t}
    return targets


def component_commands() -> set[str]:
    """The operator commands components bring (`python -m shipyard commands` lists them)."""
    from shipyard.components import COMPONENTS

    return {command.name for comp in COMPONENTS for command in comp.commands}


def forwards_to_cli(makefile: Path) -> bool:
    """Whether the Makefile hands a target it does not define to `python -m shipyard <target>`
    (a `%:` or `.DEFAULT:` rule)."""
    return any(re.match(r"^(%|\.DEFAULT)\s*:", line) for line in makefile.read_text().splitlines())


def cli_subcommands(repo: Path = REPO) -> set[str]:
    """The subcommands `python -m shipyard --help` lists (argparse's `{a,b,...}`)."""
    try:
        out = subprocess.run([sys.executable, "-m", "shipyard", "--help"], cwd=repo,
                             capture_output=True, text=True, timeout=120, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    m = re.search(r"\{([a-z0-9,-]+)\}", out)
    return set(m.group(1).split(",")) if m else set()


@functools.cache
def make_targets(repo: Path = REPO) -> frozenset[str]:
    """Makefile rules, the commands components bring, and, when the Makefile forwards what it
    does not define to the CLI, the CLI's own subcommands."""
    targets = makefile_targets(repo / "Makefile") | component_commands()
    if forwards_to_cli(repo / "Makefile"):
        targets |= cli_subcommands(repo)
    return frozenset(targets)


# --- what the docs name --------------------------------------------------------------------

def code_pieces(text: str) -> Iterator[tuple[int, str]]:
    """(line number, code) of every inline code span and code-block line of a markdown text."""
    lines = text.splitlines()
    prose: list[str] = []  # the text outside fenced and indented blocks, line for line
    fenced = False
    previous_code = False
    for n, line in enumerate(lines, 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            prose.append("")
            continue
        indented = (line.startswith("    ") and not line.lstrip().startswith(("- ", "* ", "|"))
                    and (previous_code or n == 1 or not lines[n - 2].strip()))
        if fenced or indented:
            yield n, line
            prose.append("")
            previous_code = indented
            continue
        previous_code = False
        prose.append(line)
    joined = "\n".join(prose)
    for m in re.finditer(r"(`+)(.+?)\1", joined, re.S):
        yield joined.count("\n", 0, m.start()) + 1, m.group(2).replace("\n", " ")


# `make foo`, `make foo ENV=..`, `VAR=x make foo`, `make VAR=x foo`; `make bench-*`: some target bench-...
_MAKE = re.compile(r"(?:^|[\s;&|(])make((?:\s+[A-Z][A-Z0-9_]*=\S*)*)\s+([a-z][a-z0-9-]*\*?)")
_PATH = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*/?$")
_MODULE = re.compile(r"^(%s)(\.[A-Za-z_][A-Za-z0-9_]*)+$" % "|".join(MODULE_ROOTS))
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _path_problem(token: str, doc: Path, repo: Path, top: set[str]) -> str | None:
    path, _, test = token.partition("::")
    if not _PATH.match(path) or "/" not in path or ".." in path.split("/"):
        return None
    first = path.split("/")[0]
    if first in RUNTIME_ROOTS or path in EXAMPLES:
        return None
    here = doc.parent
    if first not in top and not (here / first).exists():
        return None  # not a path of this repository (an image name, a URL path, a Consul key)
    candidates = [repo / path, here / path]
    found = next((c for c in candidates if (c.is_dir() if path.endswith("/") else c.exists())), None)
    if found is None:
        return f"`{path}`: no such {'directory' if path.endswith('/') else 'file or directory'}"
    if test and found.suffix == ".py":
        names = {n.name for n in ast.walk(ast.parse(found.read_text())) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        if test.split("::")[-1].split("[")[0] not in names:
            return f"`{token}`: {path} has no test {test}"
    return None


def _module_problem(token: str, repo: Path) -> str | None:
    parts = token.split(".")
    base = repo / MODULE_ROOTS[parts[0]].relative_to(REPO)
    for k in range(len(parts), 1, -1):
        rel = Path(*parts[1:k])
        if (base / rel).with_suffix(".py").is_file() or (base / rel).is_dir():
            return None
    return f"`{token}`: no such module"


def doc_problems(doc: Path, targets: set[str], repo: Path = REPO) -> list[str]:
    """What ``doc`` names that does not exist, as `<doc>:<line>: <what>` lines."""
    text = doc.read_text()
    top = {p.name for p in repo.iterdir()} - RUNTIME_ROOTS
    name = doc.relative_to(repo) if doc.is_relative_to(repo) else doc
    problems: list[str] = []
    for line, code in code_pieces(text):
        for m in _MAKE.finditer(code):
            target = m.group(2)
            known = (any(t.startswith(target[:-1]) for t in targets) if target.endswith("*")
                     else target in targets)
            if not known:
                problems.append(f"{name}:{line}: `make {target}`: no such make target "
                                f"(not a Makefile rule, nor a command a component brings)")
        for token in re.split(r"[\s,;()\[\]\"']+", code):
            token = token.strip("`:").rstrip(".")
            if not token:
                continue
            problem = _module_problem(token, repo) if _MODULE.match(token) else _path_problem(token, doc, repo, top)
            if problem:
                problems.append(f"{name}:{line}: {problem}")
    for m in _LINK.finditer(text):
        target = m.group(1).split("#")[0]
        if not target or re.match(r"^[a-z]+:", target):
            continue
        if not (doc.parent / target).exists():
            problems.append(f"{name}:{text.count(chr(10), 0, m.start()) + 1}: link to {target}: no such file")
    return sorted(set(problems), key=lambda p: (p.split(":")[0], int(p.split(":")[1]), p))


# --- the tests -----------------------------------------------------------------------------

def test_docs_name_existing_make_targets_paths_and_modules():
    targets = make_targets()
    problems = [p for doc in docs() for p in doc_problems(doc, targets)]
    assert not problems, "the docs name what does not exist:\n  " + "\n  ".join(problems)


def test_readme_is_a_front_door_linking_every_docs_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200, "README.md is the front door: at most 200 lines; move detail to docs/"
    unlinked = [p.name for p in sorted((REPO / "docs").glob("*.md")) if f"](docs/{p.name})" not in readme]
    assert not unlinked, f"README.md does not link these docs pages: {', '.join(unlinked)}"


def test_the_check_reports_a_missing_target_path_module_and_test(tmp_path):
    (tmp_path / "Makefile").write_text("ENV ?= local\n.PHONY: up\nup deploy: venv\n\techo make gone\nverify:\n")
    (tmp_path / "shipyard" / "apply").mkdir(parents=True)
    (tmp_path / "shipyard" / "apply" / "hostlock.py").write_text("def test_here():\n    pass\n")
    (tmp_path / "docs").mkdir()
    doc = tmp_path / "docs" / "guide.md"
    doc.write_text(
        "# Guide\n"
        "Run `make up`, then `make no-such-target ENV=ci`, and `SHIPYARD_X=1 make verify`.\n"
        "The lock is `shipyard/apply/hostlock.py`; `shipyard/apply/nowhere.py` is not.\n"
        "\n"
        "```\n"
        "make deploy ENV=production\n"
        "make also-missing   # in a code block\n"
        "```\n"
        "Tests: `shipyard/apply/hostlock.py::test_here`, `shipyard/apply/hostlock.py::test_gone`,\n"
        "module `shipyard.apply.hostlock.host_lock`, `shipyard.nomodule.thing`, a directory `shipyard/gone/`;\n"
        "not paths: `hashicorp/consul`, `/opt/shipyard/<env>/`, `compose/<env>/<host>/`, `make`.\n"
        "[here](guide.md), [gone](nothere.md)\n"
    )
    targets = makefile_targets(tmp_path / "Makefile")
    assert targets == {"up", "deploy", "verify"}
    assert doc_problems(doc, targets, repo=tmp_path) == [
        "docs/guide.md:2: `make no-such-target`: no such make target (not a Makefile rule, nor a command a component brings)",
        "docs/guide.md:3: `shipyard/apply/nowhere.py`: no such file or directory",
        "docs/guide.md:7: `make also-missing`: no such make target (not a Makefile rule, nor a command a component brings)",
        "docs/guide.md:9: `shipyard/apply/hostlock.py::test_gone`: shipyard/apply/hostlock.py has no test test_gone",
        "docs/guide.md:10: `shipyard.nomodule.thing`: no such module",
        "docs/guide.md:10: `shipyard/gone/`: no such directory",
        "docs/guide.md:12: link to nothere.md: no such file",
    ]


def test_a_forwarding_makefile_accepts_the_cli_subcommands(tmp_path):
    (tmp_path / "Makefile").write_text("up:\n\techo up\n")
    assert not forwards_to_cli(tmp_path / "Makefile")
    (tmp_path / "Makefile").write_text("up:\n\techo up\n%: venv\n\t$(PY) -m shipyard $@\n")
    assert forwards_to_cli(tmp_path / "Makefile")
    assert {"up", "validate", "status"} <= cli_subcommands()


def test_make_targets_include_what_components_bring():
    targets = make_targets()
    assert {"up", "test", "test-unit", "verify", "help"} <= targets
    # Components bring these (Component.commands); the Makefile forwards them.
    assert {"pg-backup", "pg-promote", "redis-failover", "config-push"} <= targets


def test_code_points_at_docs_pages_that_exist():
    """Docstrings and comments that send a reader to a page name one that exists (no DESIGN.md:
    the design notes are not part of the repository)."""
    problems = []
    sources = [REPO / "Makefile", REPO / "deploy.py",
               *(p for top in ("shipyard", "services", "tests", "images", "inventories") for p in (REPO / top).rglob("*")
                 if p.suffix in {".py", ".sh", ".j2"} and "__pycache__" not in p.parts)]
    for path in sources:
        if path == Path(__file__).resolve():
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for m in re.finditer(r"\b(docs/[\w-]+\.md|DESIGN\.md)", line):
                if not (REPO / m.group(1)).exists():
                    problems.append(f"{path.relative_to(REPO)}:{n}: {m.group(1)}: no such page")
    assert not problems, "code points at docs that do not exist:\n  " + "\n  ".join(problems)
