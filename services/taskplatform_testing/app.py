"""The API's app built as an API process builds it, without opening a connection (its sources
are a throwaway key file and the default runtime config): for tests of its routes and OpenAPI
that need no server."""

from __future__ import annotations

import tempfile
from pathlib import Path

from fastapi import FastAPI

from taskplatform import auth
from taskplatform.api import create_app
from taskplatform.secrets import FileSecretSource
from taskplatform.settings import ProcessSettings
from taskplatform_testing.servers import write_config


def built_app() -> FastAPI:
    """The FastAPI app inside ``create_app``'s wrappers (X-Release and the concurrency limit)."""
    root = Path(tempfile.mkdtemp(prefix="taskplatform-app-"))
    (root / auth.SECRET_NAME).write_text("a-key-only-for-building-the-app")
    write_config(root / "runtime.json")
    settings = ProcessSettings(secrets_dir=str(root), config_file=str(root / "runtime.json"), consul_addrs="")
    return create_app(settings, FileSecretSource(str(root))).app.app


def openapi_document() -> dict:
    return built_app().openapi()
