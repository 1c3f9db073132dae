"""The edge's rendered nginx config: operator endpoints are not reachable through it, and the
methods nginx refuses itself are answered with the allowed ones; the router behind it sends
users to the live colour and is the only one a release reloads."""

import re

import pytest

from shipyard.inventory import load_environment
from shipyard.render import render_environment


@pytest.fixture(scope="module", params=["local", "ci", "production"])
def nginx_conf(request, repo) -> str:
    hosts = render_environment(load_environment(repo, request.param, {}))
    confs = [h.files["nginx/nginx.conf"].decode() for h in hosts.values() if "nginx/nginx.conf" in h.files]
    assert confs, f"{request.param}: no edge rendered"
    return confs[0]


def location_block(conf: str, head: str) -> str:
    """The body of the ``location <head> { ... }`` block (no nested blocks in ours)."""
    match = re.search(r"location\s+" + re.escape(head) + r"\s*\{(.*?)\n\s*\}", conf, re.S)
    assert match, f"no location {head}"
    return match.group(1)


def blocked_path_patterns(conf: str) -> list[str]:
    """The regex locations that answer 404 themselves instead of passing to the API."""
    return [pattern for pattern, body in re.findall(r"location\s+~\s+(\S+)\s*\{(.*?)\n\s*\}", conf, re.S)
            if re.search(r"return\s+404\b", body) and "proxy_pass" not in body]


@pytest.mark.parametrize("path", ["/metrics", "/metrics/", "/metrics/x", "/v1/config", "/v1/config/", "/v1/config/x"])
def test_operator_endpoints_are_not_proxied(nginx_conf, path):
    # nginx matches the decoded, slash-merged path (/%6detrics and //metrics arrive as /metrics).
    assert any(re.search(p, path) for p in blocked_path_patterns(nginx_conf)), path


@pytest.mark.parametrize("path", ["/v1/tasks", "/v1/tasks/abc", "/v1/configs", "/metricsx", "/health/ready", "/version"])
def test_the_api_s_own_paths_are_proxied(nginx_conf, path):
    assert not any(re.search(p, path) for p in blocked_path_patterns(nginx_conf)), path
    assert "proxy_pass $router;" in location_block(nginx_conf, "/")


def test_the_edge_is_never_switched_and_takes_a_new_connection_to_the_router_per_request(nginx_conf):
    """A reload closes idle keep-alive connections (a request sent on one as it closes is lost):
    the users' connections end at the edge, which includes no release routing, and the router
    a release reloads gets one connection per request (no upstream keepalive)."""
    assert "live.conf" not in nginx_conf and "keepalive " not in nginx_conf
    assert "set $router http://router:8080;" in location_block(nginx_conf, "/")


def test_an_api_reached_by_name_is_resolved_per_request_and_addresses_keep_the_upstream(repo):
    """A restarted API container (one host: reached by its service name) gets a new address;
    an upstream block resolves names once, at load, and the edge would answer 502 until reloaded."""
    from shipyard.inventory import load_environment
    from shipyard.render import render_environment

    for env in ("local", "ci"):
        conf = render_environment(load_environment(repo, env, {}))[env].files["nginx/router.conf"].decode()
        assert "resolver 127.0.0.11 valid=2s" in conf and "upstream api" not in conf
        assert "set $api_upstream http://api-$live_colour:8000;" in location_block(conf, "/")
        assert "include /etc/nginx/shipyard-release/live.conf;" in conf
    conf = render_environment(load_environment(repo, "production", {}))["edge-1"].files["nginx/router.conf"].decode()
    # Each colour its upstream block (the green API publishes the next port).
    assert "upstream api_blue" in conf and "server 10.0.1.11:8000" in conf and "server 10.0.1.11:8001" in conf
    assert "set $api_upstream http://api_$live_colour;" in location_block(conf, "/")
    assert "resolver" not in conf


def test_a_method_nginx_refuses_itself_gets_405_with_allow(nginx_conf):
    """TRACE and CONNECT never reach the API: nginx's own 405 goes through error_page to an
    answer that says which methods there are."""
    target = re.search(r"error_page\s+405\s+=\s*(@\w+);", nginx_conf)
    assert target, "no error_page for 405"
    body = location_block(nginx_conf, target.group(1))
    assert re.search(r'add_header\s+Allow\s+"GET, HEAD, POST"\s+always;', body), body
    assert re.search(r"return\s+405\b", body), body
    assert "proxy_intercept_errors on" not in nginx_conf  # the API's own 405s (their Allow) pass as they are


def operator_paths(repo) -> tuple[str, ...]:
    """``OPERATOR_PATHS`` of the API (services/taskplatform/routes/ops.py), read without importing
    the services' package: the paths the API's OpenAPI leaves out for the edge."""
    import ast

    tree = ast.parse((repo / "services" / "taskplatform" / "routes" / "ops.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "OPERATOR_PATHS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("no OPERATOR_PATHS in services/taskplatform/routes/ops.py")


def test_the_edge_blocks_what_the_api_leaves_out_of_its_openapi_and_says_so(nginx_conf, repo):
    """The edge's OpenAPI (the API's, asked with X-Shipyard-Edge: 1) lists no path the edge
    answers 404, and every one it blocks is left out of it."""
    paths = operator_paths(repo)
    for path in paths:
        assert any(re.search(p, path) for p in blocked_path_patterns(nginx_conf)), path
    assert paths, "OPERATOR_PATHS is empty"
    assert "proxy_set_header X-Shipyard-Edge 1;" in location_block(nginx_conf, "/")


@pytest.mark.parametrize("env", ["local", "ci", "production"])
def test_the_edge_and_the_router_log_and_forward_one_request_id(repo, env):
    """`make trace` follows a request by the id the edge gives it (X-Request-ID, which the API
    echoes): the edge logs and forwards its own, the router logs and forwards the edge's (its own
    only for a request that did not come through the edge)."""
    files = {rel: content.decode() for h in render_environment(load_environment(repo, env, {})).values()
             for rel, content in h.files.items() if rel.startswith("nginx/")}
    edge, router = files["nginx/nginx.conf"], files["nginx/router.conf"]
    assert "rid=$request_id" in edge and "proxy_set_header X-Request-ID $request_id;" in location_block(edge, "/")
    mapped = re.search(r"map \$http_x_request_id \$trace_id \{(.*?)\}", router, re.S)
    assert mapped and re.search(r'""\s+\$request_id;', mapped.group(1)) \
        and re.search(r"default\s+\$http_x_request_id;", mapped.group(1)), router
    main_format = re.search(r"log_format main (.*?);", router, re.S).group(1)
    assert "rid=$trace_id" in main_format
    assert "proxy_set_header X-Request-ID $trace_id;" in location_block(router, "/")
