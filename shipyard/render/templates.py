"""jinja2 for native config formats: StrictUndefined, errors that name file and line.

A component's templates live in its folder (``shipyard/components/<name>/templates/``). A site
may override one without forking the component: ``templates/<component>/<same path>`` at the
top of the repository wins when it exists (see templates/README.md).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jinja2

from shipyard.errors import ShipyardError

REPO = Path(__file__).resolve().parents[2]
SITE_TEMPLATES = REPO / "templates"
# Compiled templates, keyed by jinja2 on each template's source: a deploy renders in two
# processes (the checks before pyinfra, then deploy.py), and compiling is most of a render's CPU.
BYTECODE_CACHE = REPO / ".shipyard" / "jinja-bytecode"


@functools.lru_cache(maxsize=None)
def _environment(roots: tuple[Path, ...]) -> jinja2.Environment:
    # One per component's template roots, for the process: each template is compiled once
    # however many hosts are rendered (jinja2 still reloads a template whose file changed).
    BYTECODE_CACHE.mkdir(parents=True, exist_ok=True)
    return jinja2.Environment(loader=jinja2.FileSystemLoader([str(r) for r in roots]),
                              bytecode_cache=jinja2.FileSystemBytecodeCache(str(BYTECODE_CACHE)),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              trim_blocks=True, lstrip_blocks=True, autoescape=False)


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def render_template(component: str, root: Path, name: str, context: dict[str, Any],
                    site_root: Path = SITE_TEMPLATES) -> str:
    """Render ``name`` of a component whose templates are in ``root`` (site override first)."""
    override = site_root / component
    where = override / name if (override / name).exists() else root / name
    try:
        return _environment((override, root)).get_template(name).render(**context)
    except jinja2.TemplateSyntaxError as exc:
        raise ShipyardError(f"{_shown(where)}:{exc.lineno}", f"template syntax error: {exc.message}",
                            "fix the template at that line") from None
    except jinja2.UndefinedError as exc:
        raise ShipyardError(_shown(where), f"undefined variable: {exc.message}",
                            f"pass the variable from the component's template_context "
                            f"(shipyard/components/{component}/__init__.py) or remove it from the template") from None


def template_names(root: Path, subdir: str) -> list[str]:
    """``subdir/x.conf.j2`` for every template below ``root/subdir``, sorted."""
    base = root / subdir
    if not base.is_dir():
        return []
    return sorted(p.relative_to(root).as_posix() for p in base.rglob("*.j2") if p.is_file())
