"""The docs (``routes/docs.py``): Swagger UI at /docs with its assets served by the API itself
(no CDN), and an OpenAPI that describes what the listener serving it answers — without the
operator paths when the edge passed the request on (it sets X-Shipyard-Edge). Against a real API
process."""

import re

import pytest
import requests

from taskplatform.routes.ops import OPERATOR_PATHS
from test_api import assert_error


def test_the_docs_page_loads_only_assets_of_the_api(api_url):
    page = requests.get(f"{api_url}/docs", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text) + re.findall(r"url: *'([^']+)'", page.text)
    assert urls and all(url.startswith("/") and not url.startswith("//") for url in urls), urls
    assert "/openapi.json" in urls
    assert not re.search(r"https?://", page.text), "the page names another host"
    for url in urls:
        asset = requests.get(f"{api_url}{url}", timeout=10)
        assert asset.status_code == 200 and len(asset.content) > 500, url


@pytest.mark.parametrize("name,kind", [("swagger-ui-bundle.js", "text/javascript"), ("swagger-ui.css", "text/css")])
def test_an_asset_has_its_content_type_and_is_cached(api_url, name, kind):
    asset = requests.get(f"{api_url}/docs/assets/{name}", timeout=10)
    assert asset.headers["content-type"].startswith(kind)
    assert "max-age" in asset.headers["cache-control"]


@pytest.mark.parametrize("name", ["index.html", "..%2F..%2F__init__.py", "swagger-ui.js.map", "nothing"])
def test_only_the_page_s_assets_are_served(api_url, name):
    assert_error(requests.get(f"{api_url}/docs/assets/{name}", timeout=10), 404, "not_found")


def paths(api_url: str, headers: dict | None = None) -> set[str]:
    doc = requests.get(f"{api_url}/openapi.json", headers=headers or {}, timeout=10)
    assert doc.status_code == 200 and doc.json()["openapi"].startswith("3.")
    return set(doc.json()["paths"])


def test_on_the_api_s_own_port_the_openapi_lists_every_operation(api_url):
    assert set(OPERATOR_PATHS) | {"/v1/tasks", "/v1/api-keys", "/health"} <= paths(api_url)


def test_through_the_edge_the_openapi_leaves_out_what_the_edge_answers_404(api_url):
    direct, edge = paths(api_url), paths(api_url, {"X-Shipyard-Edge": "1"})
    assert edge == direct - set(OPERATOR_PATHS)
    assert paths(api_url) == direct  # the edge's document did not replace the whole one
