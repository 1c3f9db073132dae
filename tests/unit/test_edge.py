"""The edge's rendered nginx config: operator endpoints are not reachable through it, and the
methods nginx refuses itself are answered with the allowed ones; the router behind it sends
users to the live colour and is the only one a release reloads."""

import re
import shutil
import subprocess

import pytest

from shipyard.inventory import load_environment
from shipyard.render import render_environment


CONF = "/etc/nginx/shipyard"


def edge_files(repo, env: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The edge host's rendered nginx files (``nginx/<name>`` → text)."""
    hosts = render_environment(load_environment(repo, env, environ or {}))
    found = [{rel: content.decode() for rel, content in h.files.items() if rel.startswith("nginx/")}
             for h in hosts.values() if "nginx/nginx.conf" in h.files]
    assert found, f"{env}: no edge rendered"
    return found[0]


def expanded(files: dict[str, str], name: str = "nginx.conf") -> str:
    """A rendered file with each ``include`` of a rendered sibling replaced by its text, as nginx
    reads it."""
    return re.sub(r"^\s*include " + re.escape(CONF) + r"/([\w.-]+);$",
                  lambda m: expanded(files, m.group(1)), files[f"nginx/{name}"], flags=re.M)


def servers(conf: str) -> list[str]:
    """The text of each ``server { ... }`` block of an (expanded) nginx.conf."""
    found = []
    for match in re.finditer(r"^\s*server\s*\{", conf, re.M):
        depth, i = 0, match.end() - 1
        for i in range(match.end() - 1, len(conf)):
            depth += {"{": 1, "}": -1}.get(conf[i], 0)
            if depth == 0:
                break
        found.append(conf[match.end():i])
    return found


def server_listening(conf: str, listen: str) -> str:
    matching = [s for s in servers(conf) if re.search(r"^\s*listen " + re.escape(listen) + r"[ ;]", s, re.M)]
    assert len(matching) == 1, f"{len(matching)} servers listen {listen}"
    return matching[0]


@pytest.fixture(scope="module", params=["local", "ci", "production"])
def nginx_conf(request, repo) -> str:
    """The server users reach (every environment serves HTTPS: edge.tls), its includes expanded."""
    return server_listening(expanded(edge_files(repo, request.param)), "443")


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
    files = edge_files(repo, env)
    edge, router = expanded(files), files["nginx/router.conf"]
    assert "rid=$request_id" in edge
    assert "proxy_set_header X-Request-ID $request_id;" in location_block(server_listening(edge, "443"), "/")
    mapped = re.search(r"map \$http_x_request_id \$trace_id \{(.*?)\}", router, re.S)
    assert mapped and re.search(r'""\s+\$request_id;', mapped.group(1)) \
        and re.search(r"default\s+\$http_x_request_id;", mapped.group(1)), router
    main_format = re.search(r"log_format main (.*?);", router, re.S).group(1)
    assert "rid=$trace_id" in main_format
    assert "proxy_set_header X-Request-ID $trace_id;" in location_block(router, "/")


# --- TLS at the edge (edge.tls; docs/security.md, "TLS at the edge") ---------------------------

# Mozilla's Server Side TLS guidelines 5.8, intermediate: TLS 1.2 suites (ECDHE + AEAD only).
INTERMEDIATE_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
                        "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")
SECURITY_HEADERS = {"Strict-Transport-Security": "$strict_transport_security", "X-Content-Type-Options": "nosniff",
                    "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
                    "Content-Security-Policy": "$content_security_policy"}
OFF = {"SHIPYARD_EDGE__TLS__MODE": "off"}


@pytest.fixture(scope="module")
def production(repo) -> str:
    return expanded(edge_files(repo, "production"))


def directives(block: str, name: str) -> list[str]:
    return re.findall(r"^\s*" + re.escape(name) + r"\s+(.*?);\s*$", block, re.M)


def test_production_serves_https_with_exactly_mozilla_s_intermediate_profile(production):
    https = server_listening(production, "443")
    assert directives(https, "listen") == ["443 ssl http2"]
    assert directives(https, "ssl_certificate") == ["/run/secrets/edge.crt"]
    assert directives(https, "ssl_certificate_key") == ["/run/secrets/edge.key"]
    http_level = production.split("server {", 1)[0]
    assert directives(http_level, "ssl_protocols") == ["TLSv1.2 TLSv1.3"]
    assert directives(http_level, "ssl_ciphers") == [INTERMEDIATE_CIPHERS]
    assert directives(http_level, "ssl_prefer_server_ciphers") == ["off"]
    assert directives(http_level, "ssl_session_timeout") == ["1d"]
    assert directives(http_level, "ssl_session_cache") == ["shared:MozSSL:10m"]
    assert directives(http_level, "ssl_session_tickets") == ["off"]
    assert directives(http_level, "ssl_ecdh_curve") == ["X25519:prime256v1:secp384r1"]
    # No finite-field DHE (5.8 dropped it): no suite, so no dhparam file either.
    assert not re.search(r"(?<!EC)DHE-", production) and "ssl_dhparam" not in production
    assert "guidelines 5.8" in production  # the comment says which version


def test_hsts_is_sent_over_https_only_with_two_years(production):
    hsts = re.search(r"map \$scheme \$strict_transport_security \{(.*?)\}", production, re.S).group(1)
    assert re.search(r'^\s*https "max-age=63072000";$', hsts, re.M)
    assert re.search(r'^\s*default "";$', hsts, re.M)  # an empty value: nginx sends no header


def test_hsts_max_age_follows_the_setting(repo):
    conf = expanded(edge_files(repo, "production", {"SHIPYARD_EDGE__TLS__HSTS_MAX_AGE_S": "86400"}))
    assert 'https "max-age=86400";' in conf


def test_security_headers_are_on_every_answer_including_errors(production):
    """At each server users reach, and again in every location with an add_header of its own
    (nginx then inherits none of the server's); always, so 404s and 5xx carry them too."""
    for listen in ("80", "443"):
        server = server_listening(production, listen)
        head = re.split(r"^\s*location\b", server, maxsplit=1, flags=re.M)[0]
        for name, value in SECURITY_HEADERS.items():
            assert f"add_header {name} {value} always;" in head, (listen, name)
        for body in re.findall(r"location\s+[^{]*\{(.*?)\n\s*\}", server, re.S):
            if "add_header" in body:
                for name, value in SECURITY_HEADERS.items():
                    assert f"add_header {name} {value} always;" in body, (listen, name, body)


def test_the_content_security_policy_lets_the_docs_page_run_and_nothing_else_load(production):
    """Swagger UI (/docs) loads its script and styles from /docs/assets/ and starts from an inline
    script: allowed there (same origin only); every other answer is JSON and may load nothing."""
    csp = dict(re.findall(r'^\s*(\S+) "(.*?)";$', re.search(r"map \$uri \$content_security_policy \{(.*?)\}",
                                                            production, re.S).group(1), re.M))
    assert set(csp) == {"/docs", "default"}
    assert csp["default"].startswith("default-src 'none'") and "frame-ancestors 'none'" in csp["default"]
    docs = csp["/docs"]
    assert "script-src 'self' 'unsafe-inline'" in docs and "style-src 'self' 'unsafe-inline'" in docs
    assert "http" not in docs  # no other origin


def test_production_redirects_plain_http_with_308_except_the_health_path(production):
    plain = server_listening(production, "80")
    assert "proxy_pass" not in plain  # nothing reaches the API in the clear
    assert re.search(r'return 200 "ok\\n";', location_block(plain, "= /edge/health"))
    assert directives(location_block(plain, "/"), "return") == ["308 https://$host$request_uri"]
    assert len(re.findall(r"^\s*location\b", plain, re.M)) == 2


def test_the_redirect_names_the_https_port_unless_it_is_443(repo):
    conf = expanded(edge_files(repo, "production", {"SHIPYARD_PORTS__EDGE_HTTPS": "8443"}))
    assert directives(location_block(server_listening(conf, "80"), "/"), "return") == \
        ["308 https://$host:8443$request_uri"]


@pytest.mark.parametrize("env", ["local", "ci"])
def test_serve_keeps_plain_http_answering_like_https(repo, env):
    """http: serve (loopback test environments): the plain server serves the same locations."""
    files = edge_files(repo, env)
    conf = expanded(files)
    plain, https = server_listening(conf, "80"), server_listening(conf, "443")
    assert "return 308" not in conf
    assert f"include {CONF}/edge-locations.conf;" in files["nginx/nginx.conf"]
    assert expanded(files, "edge-locations.conf") in plain and expanded(files, "edge-locations.conf") in https
    assert "proxy_pass $router;" in location_block(plain, "/")


def test_off_renders_no_tls_publishes_no_https_port_and_delivers_no_certificate(repo):
    from shipyard import topology

    settings = load_environment(repo, "ci", OFF)
    rendered = render_environment(settings)["ci"]
    conf = expanded({rel: c.decode() for rel, c in rendered.files.items() if rel.startswith("nginx/")})
    assert "ssl" not in conf and "listen 443" not in conf and "return 308" not in conf
    assert [s for s in servers(conf) if "listen 80;" in s]
    edge = rendered.compose["services"]["edge"]
    assert edge["ports"] == ["127.0.0.1:18080:80"]
    assert not any(v.endswith(":/run/secrets:ro") for v in edge.get("volumes", []))
    assert topology.build(settings).published_extra(settings.hosts[0], "edge", "edge_https") is None


def test_the_https_port_is_published_like_the_http_port(repo):
    from shipyard import topology

    for env, bound in (("ci", ("127.0.0.1", 18443)), ("local", ("127.0.0.1", 8443))):
        settings = load_environment(repo, env, {})
        assert topology.build(settings).published_extra(settings.hosts[0], "edge", "edge_https") == bound


def test_json_is_gzipped_when_asked(production):
    http_level = production.split("server {", 1)[0]
    assert directives(http_level, "gzip") == ["on"]
    assert directives(http_level, "gzip_types") == ["application/json"]
    assert directives(http_level, "gzip_proxied") == ["any"]
    assert directives(http_level, "gzip_vary") == ["on"]
    assert 256 <= int(directives(http_level, "gzip_min_length")[0]) <= 1400


def _uncompressed_patterns(server: str) -> list[str]:
    return [p for p, body in re.findall(r"location\s+~\s+(\S+)\s*\{(.*?)\n\s*\}", server, re.S)
            if re.search(r"^\s*gzip off;", body, re.M) and "proxy_pass $router;" in body]


@pytest.mark.parametrize("path", ["/v1/api-keys", "/v1/api-keys/k1", "/v1/webhooks", "/v1/webhooks/w1/rotate-secret",
                                  "/v1/callbacks/secret"])
def test_answers_that_carry_a_secret_are_never_compressed(production, path):
    """BREACH: a new API key, a webhook's signing secret, the callback secret (and webhook URLs,
    which often carry the receiver's token) are sent uncompressed, yet still reach the API."""
    assert any(re.search(p, path) for p in _uncompressed_patterns(server_listening(production, "443"))), path


@pytest.mark.parametrize("path", ["/v1/tasks", "/v1/tasks/t1", "/v1/schedules", "/v1/api-keysx", "/openapi.json"])
def test_other_answers_may_be_compressed(production, path):
    assert not any(re.search(p, path) for p in _uncompressed_patterns(server_listening(production, "443"))), path


def test_the_api_learns_the_scheme_the_user_reached_the_edge_by(production):
    https = server_listening(production, "443")
    for head in ("/", "~ " + _uncompressed_patterns(https)[0]):
        assert "proxy_set_header X-Forwarded-Proto $scheme;" in location_block(https, head)


def test_a_second_render_with_nothing_changed_is_byte_identical(repo):
    first = render_environment(load_environment(repo, "production", {}))
    again = render_environment(load_environment(repo, "production", {}))
    assert {h: r.files for h, r in first.items()} == {h: r.files for h, r in again.items()}
    assert {h: r.compose for h, r in first.items()} == {h: r.compose for h, r in again.items()}


@pytest.mark.skipif(shutil.which("nginx") is None, reason="no nginx on this machine (Debian: apt-get install nginx-light)")
@pytest.mark.parametrize("env, environ", [("production", {}), ("ci", {}), ("ci", OFF)])
def test_the_rendered_config_passes_nginx_t(repo, tmp_path, env, environ):
    """Where nginx is installed (Debian bookworm's nginx-light is the local image's): `nginx -t`
    of the rendered files, their container paths moved under tmp_path, with a certificate of a
    throw-away CA in place of the secret files."""
    from shipyard import tls

    conf, secrets = tmp_path / "conf", tmp_path / "secrets"
    conf.mkdir()
    secrets.mkdir()
    for rel, text in edge_files(repo, env, environ).items():
        text = text.replace(f"{CONF}/", f"{conf}/").replace("/run/secrets/", f"{secrets}/")
        text = text.replace("user nginx;", "").replace("pid /tmp/nginx.pid;", f"pid {tmp_path}/nginx.pid;")
        (conf / rel.removeprefix("nginx/")).write_text(text)
    server = tls.server_cert(tls.new_ca("test"), ("localhost",), ())
    (secrets / "edge.crt").write_bytes(server.cert_pem)
    (secrets / "edge.key").write_bytes(server.key_pem)
    checked = subprocess.run(["nginx", "-t", "-q", "-e", "stderr", "-p", str(tmp_path), "-c", str(conf / "nginx.conf")],
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
