"""jinja2 for native config formats: StrictUndefined, errors that name file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from shipyard.errors import ShipyardError

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"


def _environment(root: Path) -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(root)), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
                              autoescape=False)


def render_template(name: str, context: dict[str, Any], root: Path = TEMPLATES_DIR) -> str:
    try:
        return _environment(root).get_template(name).render(**context)
    except jinja2.TemplateSyntaxError as exc:
        raise ShipyardError(f"templates/{exc.name or name}:{exc.lineno}", f"template syntax error: {exc.message}",
                            "fix the template at that line") from None
    except jinja2.UndefinedError as exc:
        raise ShipyardError(f"templates/{name}", f"undefined variable: {exc.message}",
                            "pass the variable from shipyard/render or remove it from the template") from None
