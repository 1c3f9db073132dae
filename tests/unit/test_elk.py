"""The log stack under the official image source, as rendered for the `production` inventory:
checked statically against the documentation of the pinned versions (Elasticsearch, Kibana and
Logstash 8.17; the URL of each group of keys is next to it). Nothing here runs Elastic's
software: docs/logs.md, "What is verified how", says what ran where.

The stand-in path (`local`, `ci`) is tested end to end elsewhere; here only that none of this
reaches it."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from shipyard import hostsysctl, topology
from shipyard.apply.rollout import secret_files
from shipyard.components.edge import certificates
from shipyard.components.elk import ELASTICSEARCH_VERSION, documents, elasticsearch, kibana, logstash, security
from shipyard.components.elk.settings import LogsSettings
from shipyard.inventory import load_environment
from shipyard.render import render_environment, secret_variables
from shipyard.secretstore import SECRET_NAMES, Secret

THREE = {"SHIPYARD_LOGS__ELASTICSEARCH__NODES": "3"}
# A bundle in the transport secret's layout (key, certificate, CA), its bodies made up.
FAKE_BUNDLE = "".join(f"-----BEGIN {kind}-----\nSECRET-{n}-VALUE\n-----END {kind}-----\n"
                      for n, kind in enumerate(("PRIVATE KEY", "CERTIFICATE", "CERTIFICATE")))


def _values(fill: str = "value-of-{}") -> dict[str, Secret]:
    values = {name: Secret(name, fill.format(name)) for name in SECRET_NAMES}
    for bundle in (elasticsearch.TRANSPORT_TLS, elasticsearch.HTTP_TLS, logstash.INPUT_TLS, logstash.SHIPPER_TLS):
        values[bundle] = Secret(bundle, FAKE_BUNDLE)
    values[certificates.TLS] = Secret(certificates.TLS, FAKE_BUNDLE)  # the edge's: key, then chain
    return values
LOGSTASH = {"SHIPYARD_LOGS__LOGSTASH__ENABLED": "true"}


def _delivered(settings, instance: str) -> dict[str, str]:
    """The secret files an instance sees: path inside its container → content (PEM stripped),
    rendered from _values() as a deploy delivers them."""
    inst = topology.build(settings).find(instance)
    mount = inst.service.secrets_mount or "/run/secrets"
    found = {}
    for w in secret_files("/p", (inst,), _values(), None, secret_variables(settings, inst.host)):
        if w.path.startswith(f"/p/secrets/{instance}/") and w.content is not None:
            found[f"{mount}/{w.path.rsplit('/', 1)[1]}"] = w.content.decode().strip()
    return found


def _render(repo, env="production", variables=None):
    settings = load_environment(repo, env, variables or {})
    return settings, render_environment(settings)


def _obs(repo, variables=None):
    settings, hosts = _render(repo, "production", variables)
    return settings, hosts[settings.hosts_with_role("observability")[0].name]


def _sh(script: str) -> None:
    """The script parses as POSIX sh (dash -n: syntax only, nothing runs)."""
    done = subprocess.run(["sh", "-n"], input=script, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


# --- Elasticsearch's settings ----------------------------------------------------------------

# https://www.elastic.co/guide/en/elasticsearch/reference/8.17/docker.html (settings as variables,
#   ELASTIC_PASSWORD_FILE, ES_JAVA_OPTS, ulimits, memory lock)
# https://www.elastic.co/guide/en/elasticsearch/reference/8.17/modules-discovery-settings.html
# https://www.elastic.co/guide/en/elasticsearch/reference/8.17/modules-network.html
# https://www.elastic.co/guide/en/elasticsearch/reference/8.17/security-settings.html
# https://www.elastic.co/guide/en/elasticsearch/reference/8.17/license-settings.html
DOCUMENTED = {
    "cluster.name", "node.name", "network.host", "transport.port", "http.port", "discovery.type",
    "discovery.seed_hosts", "cluster.initial_master_nodes", "transport.publish_host", "transport.publish_port",
    "xpack.security.enabled", "xpack.security.enrollment.enabled", "xpack.security.http.ssl.enabled",
    "xpack.security.http.ssl.key", "xpack.security.http.ssl.certificate",
    "xpack.security.transport.ssl.enabled", "xpack.security.transport.ssl.verification_mode",
    "xpack.security.transport.ssl.key", "xpack.security.transport.ssl.certificate",
    "xpack.security.transport.ssl.certificate_authorities", "xpack.license.self_generated.type",
    "bootstrap.memory_lock", "ingest.geoip.downloader.enabled", "ES_JAVA_OPTS", "ELASTIC_PASSWORD_FILE",
}


def test_one_node_is_a_single_node_cluster_with_security_and_transport_and_http_tls(repo):
    settings, obs = _obs(repo)
    node = obs.compose["services"]["elasticsearch-1"]
    env = node["environment"]
    assert set(env) <= DOCUMENTED, set(env) - DOCUMENTED
    assert node["image"].endswith(f"docker.elastic.co/elasticsearch/elasticsearch:{ELASTICSEARCH_VERSION}")
    assert env["discovery.type"] == "single-node"
    assert "discovery.seed_hosts" not in env and "cluster.initial_master_nodes" not in env
    assert env["xpack.security.enabled"] == "true" and env["xpack.security.transport.ssl.enabled"] == "true"
    assert env["xpack.security.http.ssl.enabled"] == "true"
    assert env["xpack.security.transport.ssl.verification_mode"] in ("certificate", "full")
    # TLS files below the config directory (the only place Elasticsearch reads them from), where
    # the node's secrets folder is mounted, each one a file delivered there.
    assert f"./secrets/elasticsearch-1:{elasticsearch.SECRETS}:ro" in node["volumes"]
    delivered = _delivered(settings, "elasticsearch-1")
    for setting in [f"xpack.security.transport.ssl.{key}" for key in ("key", "certificate", "certificate_authorities")] \
            + [f"xpack.security.http.ssl.{key}" for key in ("key", "certificate")]:
        assert env[setting] in delivered, setting
    assert delivered[env["xpack.security.http.ssl.key"]] == elasticsearch.pem_block(FAKE_BUNDLE, "PRIVATE KEY", 0)
    assert delivered[env["xpack.security.http.ssl.certificate"]] == elasticsearch.pem_block(FAKE_BUNDLE, "CERTIFICATE", 0)
    assert env["ELASTIC_PASSWORD_FILE"] == f"{elasticsearch.SECRETS}/elastic_password"
    assert f"elasticsearch-data-1:{elasticsearch.DATA}" in node["volumes"]
    assert node["ulimits"]["memlock"] == {"soft": -1, "hard": -1} and env["bootstrap.memory_lock"] == "true"
    assert node["ulimits"]["nofile"]["soft"] >= 65535


def test_three_nodes_name_each_other_and_bootstrap_together(repo):
    _, obs = _obs(repo, THREE)
    names = ("elasticsearch-1", "elasticsearch-2", "elasticsearch-3")
    for name in names:
        env = obs.compose["services"][name]["environment"]
        assert set(env) <= DOCUMENTED
        assert env["node.name"] == name and "discovery.type" not in env
        assert env["cluster.initial_master_nodes"] == ",".join(names)
        # On one host they meet on the project network, by name, at the transport port.
        assert env["discovery.seed_hosts"].split(",") == [f"{n}:9300" for n in names if n != name]
        assert "transport.publish_host" not in env
    # A replica of each index once there is a second node.
    template = json.loads(obs.files["logs-setup/index-template.json"])
    assert template["template"]["settings"]["number_of_replicas"] == 1


def test_nodes_across_hosts_publish_and_advertise_their_transport_on_the_private_address(repo, tmp_path):
    inventory = (repo / "inventories/production.py").read_text().replace(
        'observability = [\n    ("obs-1.prod.example.net", {**_deploy, "shipyard_host": "obs-1", "address": "10.0.3.31"}),\n]',
        'observability = [(f"obs-{n}.prod.example.net", {**_deploy, "shipyard_host": f"obs-{n}", '
        '"address": f"10.0.3.{30 + n}"}) for n in (1, 2, 3)]')
    assert "obs-{n}" in inventory
    (tmp_path / "inventories").mkdir()
    (tmp_path / "inventories/production.py").write_text(inventory)
    settings, hosts = _render(tmp_path, "production", THREE)
    for n in (1, 2, 3):
        svc = hosts[f"obs-{n}"].compose["services"][f"elasticsearch-{n}"]
        env = svc["environment"]
        assert env["transport.publish_host"] == f"10.0.3.{30 + n}" and env["transport.publish_port"] == "9300"
        assert f"10.0.3.{30 + n}:9300:9300" in svc["ports"]
        assert env["discovery.seed_hosts"].split(",") == [f"10.0.3.{30 + m}:9300" for m in (1, 2, 3) if m != n]


def test_heap_and_memory_limit_come_from_the_settings_and_are_validated(repo):
    _, obs = _obs(repo, {"SHIPYARD_LOGS__ELASTICSEARCH__HEAP_MB": "2048",
                         "SHIPYARD_LOGS__ELASTICSEARCH__MEMORY_LIMIT_MB": "4096"})
    node = obs.compose["services"]["elasticsearch-1"]
    assert node["environment"]["ES_JAVA_OPTS"] == "-Xms2048m -Xmx2048m" and node["mem_limit"] == "4096m"
    with pytest.raises(ValueError, match="more than half of memory_limit_mb"):
        LogsSettings(elasticsearch={"heap_mb": 2048, "memory_limit_mb": 3000})
    with pytest.raises(ValueError, match="use 1 or 3"):
        LogsSettings(elasticsearch={"nodes": 2})
    with pytest.raises(ValueError, match="more than half"):
        LogsSettings(logstash={"heap_mb": 1024, "memory_limit_mb": 1024})


def test_the_transport_bundle_is_issued_from_the_held_ca_and_split_into_the_nodes_files(repo, tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from shipyard import secretstore

    (tmp_path / "inventories").symlink_to(repo / "inventories")
    environ = {secretstore.IDENTITY_DIR_VAR: str(tmp_path / "ids")}
    # A throw-away store over the real inventory: the store issues the bundle as it does on a deploy.
    bundle = secretstore.load_or_create(tmp_path, "production", environ)[elasticsearch.TRANSPORT_TLS].value
    key = elasticsearch.pem_block(bundle, "PRIVATE KEY", 0)
    cert = x509.load_pem_x509_certificate(elasticsearch.pem_block(bundle, "CERTIFICATE", 0).encode())
    ca = x509.load_pem_x509_certificate(elasticsearch.pem_block(bundle, "CERTIFICATE", 1).encode())
    # The node's key (a whole PEM block) is the one its certificate names.
    private = serialization.load_pem_private_key(key.encode(), password=None)
    assert private.public_key().public_numbers() == cert.public_key().public_numbers()
    cert.verify_directly_issued_by(ca)
    held = secretstore.read_held(tmp_path, "production", elasticsearch.CA_CERT, environ).value
    assert x509.load_pem_x509_certificate(held.encode()) == ca
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "elasticsearch-1" in names.get_values_for_type(x509.DNSName)
    # A second bundle comes from the same CA (made once).
    again = elasticsearch.transport_bundle(tmp_path, "production", environ)
    assert elasticsearch.pem_block(again, "CERTIFICATE", 1) == elasticsearch.pem_block(bundle, "CERTIFICATE", 1)


# --- vm.max_map_count ------------------------------------------------------------------------

def test_vm_max_map_count_is_needed_only_on_hosts_running_an_elasticsearch_node(repo):
    settings, hosts = _render(repo)
    for host in settings.hosts:
        needed = hostsysctl.needed(settings, host)
        if host.name == "obs-1":
            [one] = needed
            assert one.key == "vm.max_map_count" and one.minimum >= 262144 and one.needed_by == ("elasticsearch-1",)
            assert hostsysctl.plan_lines(settings, host)[0].startswith("host: vm.max_map_count >= ")
        else:
            assert needed == () and hostsysctl.plan_lines(settings, host) == []
    # The stand-in maps nothing: local and ci hosts need no kernel setting.
    for env in ("local", "ci"):
        local = load_environment(repo, env, {})
        assert all(hostsysctl.needed(local, h) == () for h in local.hosts)


def test_a_lower_value_is_raised_a_higher_one_kept_and_the_file_holds_the_higher():
    wanted = (hostsysctl.Needed("vm.max_map_count", 262144, ("elasticsearch-1",), "mmap"),)
    assert hostsysctl.to_raise({"vm.max_map_count": 65530}, wanted) == {"vm.max_map_count": 262144}
    assert hostsysctl.to_raise({"vm.max_map_count": None}, wanted) == {"vm.max_map_count": 262144}
    assert hostsysctl.to_raise({"vm.max_map_count": 1048576}, wanted) == {}
    text = hostsysctl.persisted_text("production", {"vm.max_map_count": 1048576}, wanted)
    assert "vm.max_map_count = 1048576\n" in text
    assert "vm.max_map_count = 262144\n" in hostsysctl.persisted_text("production", {"vm.max_map_count": 65530}, wanted)
    assert hostsysctl.persisted_path("production") == "/etc/sysctl.d/60-shipyard-production.conf"


# --- users, roles, passwords -----------------------------------------------------------------

# https://www.elastic.co/guide/en/elasticsearch/reference/8.17/security-api-put-role.html
ROLE_KEYS = {"applications", "cluster", "global", "indices", "metadata", "run_as", "remote_indices", "description"}
INDEX_KEYS = {"names", "privileges", "field_security", "query", "allow_restricted_indices"}
# https://www.elastic.co/guide/en/elasticsearch/reference/8.17/security-privileges.html
INDEX_PRIVILEGES = {"all", "auto_configure", "create", "create_doc", "create_index", "delete", "delete_index",
                    "index", "maintenance", "manage", "manage_ilm", "monitor", "read", "view_index_metadata", "write"}
# https://www.elastic.co/guide/en/elasticsearch/reference/8.17/security-api-put-user.html
USER_KEYS = {"username", "email", "full_name", "metadata", "password", "password_hash", "roles", "enabled"}


@pytest.mark.parametrize("with_logstash", [False, True])
def test_roles_grant_writers_write_and_readers_read_on_the_environments_indices_only(with_logstash):
    roles = security.roles("production", with_logstash)
    assert set(roles) == {"shipyard_logship", "shipyard_logs_reader"} | ({"shipyard_logstash_writer"} if with_logstash else set())
    for name, body in roles.items():
        assert set(body) <= ROLE_KEYS, name
        [entry] = body["indices"]
        assert set(entry) <= INDEX_KEYS and set(entry["privileges"]) <= INDEX_PRIVILEGES
        assert entry["names"] == ["shipyard-logs-production-*"]
    assert roles["shipyard_logship"]["cluster"] == [] and \
        roles["shipyard_logship"]["indices"][0]["privileges"] == ["create_index", "create_doc", "index"]
    assert roles["shipyard_logs_reader"]["indices"][0]["privileges"] == ["read", "view_index_metadata"]
    if with_logstash:
        assert roles["shipyard_logstash_writer"]["cluster"] == ["monitor"]


def test_user_bodies_match_the_security_api_with_the_password_in_one_printf_slot():
    users = security.users(True)
    assert [u.name for u in users] == ["elastic", "kibana_system", "logship", "logs_reader", "logstash_writer"]
    for user in users:
        body = security.user_body(user)
        filled = json.loads(body % "s3cret-value_1")
        assert filled["password"] == "s3cret-value_1"
        if user.role is None:
            # A built-in user: POST _security/user/<name>/_password takes the password only.
            # https://www.elastic.co/guide/en/elasticsearch/reference/8.17/security-api-change-password.html
            assert filled == {"password": "s3cret-value_1"}
        else:
            assert set(filled) <= USER_KEYS and filled["roles"] == [user.role]


def test_the_setup_job_sets_every_password_at_every_run_and_rotates_elastic_through_the_retiring_value(repo):
    _, obs = _obs(repo, LOGSTASH)
    script = obs.files["logs-setup/setup.sh"].decode()
    _sh(script)
    for name, method, path in (("kibana_system", "POST", "/_security/user/kibana_system/_password"),
                               ("logship", "PUT", "/_security/user/logship"),
                               ("logs_reader", "PUT", "/_security/user/logs_reader"),
                               ("logstash_writer", "PUT", "/_security/user/logstash_writer")):
        assert f'/run/secrets/{name}_password" /tmp/body\nsend {method} "{path}" /tmp/body' in script, name
    # Unconditional: no "if the user exists" anywhere (the volume's users are set again each run).
    assert "_security/user/elastic/_password" in script and "elastic_password.retiring" in script
    assert script.index("_security/_authenticate") < script.index("/_ilm/policy/")
    for name in security.roles("production", True):
        assert f'put "/_security/role/{name}" /tmp/role.json' in script
    # Its secret files, with the previous elastic password delivered during a rotation.
    settings = load_environment(repo, "production", LOGSTASH)
    setup = topology.build(settings).find("logs-setup")
    assert {s.target for s in setup.secrets} == {f"{u.secret}" for u in security.users(True)} | {elasticsearch.CLIENT_CA}
    [elastic] = [s for s in setup.secrets if s.secret == "elastic_password"]
    assert elastic.keep_previous and elastic.rotation is None  # re-runs when it changes
    values = _values()
    previous = {"elastic_password": Secret("elastic_password", "the-old-one")}
    files = {w.path: w.content for w in secret_files("/p", (setup,), values, previous,
                                                     secret_variables(settings, setup.host))}
    assert files["/p/secrets/logs-setup/elastic_password.retiring"] == b"the-old-one"
    assert files["/p/secrets/logs-setup/elastic_password"] == b"value-of-elastic_password"


def test_the_shipper_writes_as_logship_with_its_password_from_a_file(repo):
    _, hosts = _render(repo)
    for rendered in hosts.values():
        conf = rendered.files["logship/rsyslog.conf"].decode()
        assert 'uid="logship" pwd=`cat /run/secrets/logship_password`' in conf
        assert "./secrets/logship:/run/secrets:ro" in rendered.compose["services"]["logship"]["volumes"]


# --- index template and lifecycle policy -----------------------------------------------------

def test_the_index_template_and_lifecycle_policy_have_the_documented_shapes(repo):
    _, obs = _obs(repo)
    template = json.loads(obs.files["logs-setup/index-template.json"])
    # https://www.elastic.co/guide/en/elasticsearch/reference/8.17/indices-put-template.html
    assert set(template) <= {"index_patterns", "template", "composed_of", "priority", "version", "_meta",
                             "data_stream", "allow_auto_create", "ignore_missing_component_templates", "deprecated"}
    assert template["index_patterns"] == ["shipyard-logs-production-*"]
    assert set(template["template"]) <= {"settings", "mappings", "aliases", "lifecycle"}
    # https://www.elastic.co/guide/en/elasticsearch/reference/8.17/index-modules.html and ilm-settings.html
    assert template["template"]["settings"] == {"number_of_shards": 1, "number_of_replicas": 0,
                                                "index.lifecycle.name": "shipyard-logs"}
    mappings = template["template"]["mappings"]
    assert mappings["dynamic"] is False and mappings["properties"]["@timestamp"] == {"type": "date_nanos"}
    # https://www.elastic.co/guide/en/elasticsearch/reference/8.17/mapping-types.html
    types = {p.get("type") for p in mappings["properties"].values()}
    assert types <= {"date_nanos", "keyword", "text", "short", "long", "float", "double", "object"}
    assert mappings["properties"]["app"] == {"type": "object", "enabled": False}
    policy = json.loads(obs.files["logs-setup/lifecycle-policy.json"])
    # https://www.elastic.co/guide/en/elasticsearch/reference/8.17/ilm-put-lifecycle.html
    assert set(policy) == {"policy"} and set(policy["policy"]) <= {"phases", "_meta"}
    phases = policy["policy"]["phases"]
    assert set(phases) <= {"hot", "warm", "cold", "frozen", "delete"}
    assert phases["delete"] == {"min_age": "14d", "actions": {"delete": {}}}
    assert "rollover" not in phases["hot"]["actions"]  # the index name carries the day
    assert documents.lifecycle_policy(30)["policy"]["phases"]["delete"]["min_age"] == "30d"


# --- Kibana ----------------------------------------------------------------------------------

# https://www.elastic.co/guide/en/kibana/8.17/settings.html (elasticsearch.ssl.certificateAuthorities:
# a list of PEM files; elasticsearch.ssl.verificationMode: full, certificate or none).
KIBANA_DOCUMENTED = {
    "server.name", "server.host", "server.port", "elasticsearch.hosts", "elasticsearch.ssl.certificateAuthorities",
    "elasticsearch.ssl.verificationMode", "elasticsearch.username", "status.allowAnonymous", "telemetry.optIn",
    "telemetry.allowChangingOptInStatus", "newsfeed.enabled",
}


def test_kibana_runs_under_official_only_on_loopback_with_its_password_as_a_file(repo):
    settings, obs = _obs(repo)
    svc = obs.compose["services"]["kibana"]
    assert svc["image"].endswith(f"docker.elastic.co/kibana/kibana:{ELASTICSEARCH_VERSION}")
    assert svc["ports"] == ["127.0.0.1:5601:5601"] and "environment" not in svc
    # kibana-docker passes its arguments on to Kibana, whose serve command merges every --config.
    assert svc["command"] == ["/usr/local/bin/kibana-docker", "--config", f"{kibana.CONFIG}/kibana.yml",
                              "--config", "/run/secrets/kibana-password.yml",
                              "--config", "/run/secrets/kibana-encryption-key.yml"]
    config = yaml.safe_load(obs.files["kibana/kibana.yml"])
    # https://www.elastic.co/guide/en/kibana/8.17/settings.html
    assert set(config) <= KIBANA_DOCUMENTED, set(config) - KIBANA_DOCUMENTED
    assert config["elasticsearch.hosts"] == ["https://elasticsearch-1:9200"]
    # The node's certificate checked against the CA delivered into Kibana's secrets, name included.
    [ca] = config["elasticsearch.ssl.certificateAuthorities"]
    assert ca in _delivered(settings, "kibana") and config["elasticsearch.ssl.verificationMode"] == "full"
    assert _delivered(settings, "kibana")[ca] == elasticsearch.pem_block(FAKE_BUNDLE, "CERTIFICATE", 1)
    assert config["elasticsearch.username"] == "kibana_system" and "elasticsearch.password" not in config
    assert config["status.allowAnonymous"] is True and config["server.host"] == "0.0.0.0"
    assert svc["healthcheck"]["test"][-1] == "http://127.0.0.1:5601/api/status"
    for env in ("local", "ci"):
        settings = load_environment(repo, env, {})
        assert not topology.build(settings).instances_of("elk", "kibana")
        assert not topology.build(settings).instances_of("elk", "logstash")


def test_kibanas_secret_config_files_are_yaml_with_the_value(repo):
    settings, obs = _obs(repo)
    inst = topology.build(settings).find("kibana")
    values = _values()
    files = {w.path: w.content for w in secret_files("/p", (inst,), values, None, secret_variables(settings, inst.host))}
    assert yaml.safe_load(files["/p/secrets/kibana/kibana-password.yml"]) == \
        {"elasticsearch.password": "value-of-kibana_system_password"}
    assert yaml.safe_load(files["/p/secrets/kibana/kibana-encryption-key.yml"]) == \
        {"xpack.encryptedSavedObjects.encryptionKey": "value-of-kibana_encryption_key"}


def test_kibanas_setup_requests_match_the_data_views_and_saved_objects_apis(repo):
    requests = kibana.requests("production")
    method, path, body = requests[0]
    # https://www.elastic.co/guide/en/kibana/8.17/data-views-api-create.html
    assert (method, path) == ("POST", "/api/data_views/data_view")
    assert set(body) == {"override", "data_view"} and body["override"] is True
    assert body["data_view"] == {"id": kibana.DATA_VIEW_ID, "title": "shipyard-logs-production-*",
                                 "name": "Shipyard logs (production)", "timeFieldName": "@timestamp"}
    ids = []
    # https://www.elastic.co/guide/en/kibana/8.17/saved-objects-api-create.html
    for method, path, body in requests[1:]:
        m = re.fullmatch(r"/api/saved_objects/search/([a-z-]+)\?overwrite=true", path)
        assert method == "POST" and m, path
        ids.append(m.group(1))
        assert set(body) == {"attributes", "references"}
        source = json.loads(body["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
        [ref] = body["references"]
        assert ref == {"name": source["indexRefName"], "type": "index-pattern", "id": kibana.DATA_VIEW_ID}
        assert source["query"]["language"] == "kuery"
    assert ids == ["shipyard-errors", "shipyard-one-request", "shipyard-server-errors"]
    queries = [json.loads(b["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])["query"]["query"]
               for _, _, b in requests[1:]]
    assert queries == ["level:error or level:critical", "request_id:*", "format:access and status >= 500"]
    _, obs = _obs(repo)
    script = obs.files["kibana-setup/setup.sh"].decode()
    _sh(script)
    assert "wait_s=300" in script and "-H 'kbn-xsrf: shipyard'" in script
    assert obs.compose["services"]["kibana-setup"]["depends_on"] == {"kibana": {"condition": "service_healthy"}}


# --- Logstash --------------------------------------------------------------------------------

def test_logstash_is_off_by_default_and_the_shipper_writes_straight_to_the_store(repo):
    _, hosts = _render(repo)
    assert not any("logstash" in r.compose["services"] for r in hosts.values())
    assert all("omfwd" not in r.files["logship/rsyslog.conf"].decode() for r in hosts.values())


def test_with_logstash_the_shippers_send_json_lines_to_it_and_it_writes_from_a_persisted_queue(repo):
    settings, hosts = _render(repo, "production", LOGSTASH)
    obs = hosts["obs-1"]
    svc = obs.compose["services"]["logstash"]
    assert svc["image"].endswith(f"docker.elastic.co/logstash/logstash:{ELASTICSEARCH_VERSION}")
    assert svc["ports"] == ["10.0.3.31:5000:5000"] and svc["command"] == ["-f", logstash.PIPELINE_GLOB]
    assert set(svc["environment"]) == {"LS_JAVA_OPTS"}
    # https://www.elastic.co/guide/en/logstash/8.17/logstash-settings-file.html
    config = yaml.safe_load(obs.files["logstash/logstash.yml"])
    assert config["queue.type"] == "persisted" and config["queue.max_bytes"] == "1024mb"
    assert config["pipeline.ecs_compatibility"] == "disabled"
    pipeline = obs.files["logstash/shipyard.conf"].decode()
    assert re.search(r"tcp \{\n\s+id => \"shippers\"\n\s+port => 5000\n.*codec => json_lines", pipeline, re.S)
    assert 'rename => { "shipyard_id" => "[@metadata][id]" }' in pipeline
    code = re.sub(r"#[^\n]*", "", pipeline)
    assert "output {" not in code and "password" not in code
    for name, rendered in hosts.items():
        conf = rendered.files["logship/rsyslog.conf"].decode()
        target = "logstash" if name == "obs-1" else "10.0.3.31"
        assert f'action(type="omfwd" name="logstash" target="{target}" port="5000" protocol="tcp"' in conf
        assert 'TCP_Framing="traditional"' in conf and "omelasticsearch\"" not in conf.split("ruleset")[1]
        assert 'set $!doc!shipyard_id = exec_template("document_id");' in conf
        assert "logship_password" not in conf  # no credentials: Logstash writes as logstash_writer
    # The output, with its password, is a secret file in the folder the glob reads.
    inst = topology.build(settings).find("logstash")
    values = _values()
    files = {w.path: w.content for w in secret_files("/p", (inst,), values, None, secret_variables(settings, inst.host))}
    output = files["/p/secrets/logstash/output.conf"].decode()
    # https://www.elastic.co/guide/en/logstash/8.17/plugins-outputs-elasticsearch.html
    for line in ('user => "logstash_writer"', 'password => "value-of-logstash_writer_password"',
                 'index => "shipyard-logs-production-%{+YYYY-MM-dd}"', 'document_id => "%{[@metadata][id]}"',
                 "manage_template => false", "ilm_enabled => false", "data_stream => false",
                 'hosts => ["https://elasticsearch-1:9200"]'):
        assert line in output, line
    assert "http://" not in output
    assert f"./secrets/logstash:{logstash.SECRETS}:ro" in svc["volumes"]
    assert logstash.PIPELINE_GLOB == f"{logstash.HOME}/pipeline*/*.conf"
    assert logstash.SECRETS.startswith(f"{logstash.HOME}/pipeline") and logstash.PIPELINE.startswith(f"{logstash.HOME}/pipeline")


# https://www.elastic.co/guide/en/logstash/8.17/plugins-inputs-tcp.html: the input's TLS options
# (logstash-input-tcp 6.4+, the ssl_* names that replaced ssl_enable/ssl_cert/ssl_verify; the same
# names and values on the tcp output's page of this plugin family:
# https://www.elastic.co/guide/en/logstash/8.15/plugins-outputs-tcp.html).
TCP_INPUT_SSL = {"ssl_enabled", "ssl_certificate", "ssl_key", "ssl_certificate_authorities",
                 "ssl_client_authentication", "ssl_cipher_suites", "ssl_supported_protocols", "ssl_key_passphrase",
                 "ssl_extra_chain_certs"}
# https://www.rsyslog.com/doc/v8-stable/configuration/modules/omfwd.html (StreamDriver.CAFile,
# .CertFile, .KeyFile per action since 8.2108; 8.2302 rejects unknown names: tests/logship runs it).
OMFWD_TLS = {"StreamDriver", "StreamDriverMode", "StreamDriverAuthMode", "StreamDriverPermittedPeers",
             "StreamDriver.CAFile", "StreamDriver.CertFile", "StreamDriver.KeyFile"}


def test_logstashs_input_takes_only_mutual_tls_from_the_shippers(repo):
    settings, hosts = _render(repo, "production", LOGSTASH)
    pipeline = hosts["obs-1"].files["logstash/shipyard.conf"].decode()
    tcp = re.search(r"tcp \{(.*?)\n  \}", pipeline, re.S).group(1)
    options = dict(re.findall(r"^\s+(ssl_[a-z_]+) => (.+)$", tcp, re.M))
    assert set(options) <= TCP_INPUT_SSL
    assert options == {"ssl_enabled": "true", "ssl_certificate": f'"{logstash.INPUT_CERT}"',
                       "ssl_key": f'"{logstash.INPUT_KEY}"', "ssl_certificate_authorities": f'["{logstash.INPUT_CA}"]',
                       "ssl_client_authentication": '"required"'}
    # The key, certificate and CA are secret files in Logstash's secrets folder (not *.conf: the
    # pipeline glob does not read them), from the issued bundle.
    inst = topology.build(settings).find("logstash")
    files = {w.path: w for w in secret_files("/p", (inst,), _values(), None, secret_variables(settings, inst.host))}
    for path, kind, index in ((logstash.INPUT_KEY, "PRIVATE KEY", 0), (logstash.INPUT_CERT, "CERTIFICATE", 0),
                              (logstash.INPUT_CA, "CERTIFICATE", 1)):
        wanted = files[f"/p/secrets/logstash/{path.rsplit('/', 1)[1]}"]
        assert wanted.content.decode().strip() == elasticsearch.pem_block(FAKE_BUNDLE, kind, index), path
        assert wanted.mode == "400" and path.startswith(logstash.SECRETS + "/") and not path.endswith(".conf")
    # The shippers: TLS to Logstash with their client certificate, only to a peer named logstash.
    for name, rendered in hosts.items():
        conf = rendered.files["logship/rsyslog.conf"].decode()
        action = re.search(r'action\(type="omfwd".*?\)\n', conf, re.S).group(0)
        params = dict(re.findall(r'([A-Za-z_.]+)="([^"]*)"', action))
        assert set(params) & OMFWD_TLS == OMFWD_TLS, name
        assert (params["StreamDriver"], params["StreamDriverMode"], params["StreamDriverAuthMode"],
                params["StreamDriverPermittedPeers"]) == ("gtls", "1", "x509/name", logstash.SERVER_NAME)
        assert (params["StreamDriver.CAFile"], params["StreamDriver.CertFile"], params["StreamDriver.KeyFile"]) == (
            logstash.SHIPPER_CA, logstash.SHIPPER_CERT, logstash.SHIPPER_KEY)
        # A string template: 8.2302 renders the subtree template empty for omfwd (tests/logship).
        assert params["template"] == "document_line" and 'string="%$!doc%"' in conf
        shipper = next(i for i in topology.build(settings).instances_of("elk", "logship") if i.host.name == name)
        delivered = _shipper_files(settings, shipper)
        assert delivered == {"logship-client.key", "logship-client.crt", "logs-ca.crt"}, name
    dockerfile = (repo / "shipyard/components/elk/image/logship/Dockerfile").read_text()
    assert "rsyslog-gnutls" in dockerfile  # the gtls stream driver


def _shipper_files(settings, shipper) -> set[str]:
    """The secret files delivered to a shipper (its secrets folder's files)."""
    return {w.path.rsplit("/", 1)[1] for w in secret_files("/p", (shipper,), _values(), None,
                                                           secret_variables(settings, shipper.host))
            if w.path.startswith("/p/secrets/logship/") and w.content is not None}


def test_without_logstash_no_shipper_gets_a_client_certificate(repo):
    settings, hosts = _render(repo)
    for name in hosts:
        shipper = next(i for i in topology.build(settings).instances_of("elk", "logship") if i.host.name == name)
        delivered = _shipper_files(settings, shipper)
        assert delivered == {"logship_password", elasticsearch.CLIENT_CA}, name
        assert "StreamDriver" not in hosts[name].files["logship/rsyslog.conf"].decode()


def test_the_logstash_bundles_are_issued_from_a_ca_of_their_own(repo, tmp_path):
    """Logstash's certificate and the shippers' come from the log shipping CA, not from
    Elasticsearch's transport CA (which its nodes trust for any certificate it signed)."""
    from cryptography import x509

    from shipyard import secretstore

    (tmp_path / "inventories").symlink_to(repo / "inventories")
    environ = {secretstore.IDENTITY_DIR_VAR: str(tmp_path / "ids")}
    values = secretstore.load_or_create(tmp_path, "production", environ)

    def cert(bundle: str, index: int) -> x509.Certificate:
        return x509.load_pem_x509_certificate(elasticsearch.pem_block(values[bundle].value, "CERTIFICATE", index).encode())

    server, client, ca = cert(logstash.INPUT_TLS, 0), cert(logstash.SHIPPER_TLS, 0), cert(logstash.INPUT_TLS, 1)
    server.verify_directly_issued_by(ca)
    client.verify_directly_issued_by(ca)
    assert cert(logstash.SHIPPER_TLS, 1) == ca
    held = secretstore.read_held(tmp_path, "production", logstash.LOGS_CA_CERT, environ).value
    assert x509.load_pem_x509_certificate(held.encode()) == ca
    assert ca != cert(elasticsearch.TRANSPORT_TLS, 1)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert logstash.SERVER_NAME in names.get_values_for_type(x509.DNSName)
    client_names = client.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert client_names.get_values_for_type(x509.DNSName) == [logstash.CLIENT_NAME]


def _braces_balance(text: str) -> bool:
    depth = 0
    for char in re.sub(r'"[^"]*"', '""', text):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def test_the_logstash_pipeline_parts_are_balanced_and_use_only_documented_plugins(repo):
    settings, hosts = _render(repo, "production", LOGSTASH)
    pipeline = hosts["obs-1"].files["logstash/shipyard.conf"].decode()
    inst = topology.build(settings).find("logstash")
    values = _values("x")
    output = next(w.content for w in secret_files("/p", (inst,), values, None, secret_variables(settings, inst.host))
                  if w.path.endswith("output.conf")).decode()
    whole = re.sub(r"#[^\n]*", "", pipeline + output)
    assert _braces_balance(whole)
    plugins = set(re.findall(r"^\s*([a-z_]+) \{", whole, re.M))
    assert plugins == {"input", "tcp", "filter", "mutate", "output", "elasticsearch"}


# --- secrets never in compose, env or the rendered files --------------------------------------

@pytest.mark.parametrize("variables", [{}, THREE, LOGSTASH])
def test_no_secret_value_anywhere_in_compose_env_or_config(repo, variables):
    settings, hosts = _render(repo, "production", variables)
    values = _values("SECRET-{}-VALUE")
    for name, rendered in hosts.items():
        text = b"".join(rendered.files.values()).decode()
        assert "SECRET-" not in text, name
        for svc_name, svc in rendered.compose["services"].items():
            env = svc.get("environment", {})
            assert not any(re.search(r"PASSWORD$|KEY$|TOKEN$", k) for k in env), (svc_name, env)
            assert not any(isinstance(v, str) and "SECRET-" in v for v in env.values())
        # Delivered: only as files, and only where declared.
        on_host = topology.build(settings).instances_on(rendered.host)
        files = secret_files("/p", on_host, values, None, secret_variables(settings, rendered.host))
        for wanted in files:
            if wanted.content and b"SECRET-" in wanted.content:
                assert wanted.path.startswith("/p/secrets/") and wanted.mode == "400", wanted.path


def test_the_stand_in_path_gets_no_secret_and_no_sysctl(repo):
    for env in ("local", "ci"):
        settings = load_environment(repo, env, {})
        for inst in topology.build(settings).instances_of("elk"):
            assert inst.secrets == (), inst.name
            assert inst.service.host_sysctls is None or inst.service.host_sysctls(settings) == ()


def test_the_rendered_scripts_are_valid_sh(repo):
    for variables in ({}, LOGSTASH):
        _, obs = _obs(repo, variables)
        _sh(obs.files["logs-setup/setup.sh"].decode())
    for env in ("local", "ci"):
        settings, hosts = _render(repo, env)
        _sh(next(iter(hosts.values())).files["logs-setup/setup.sh"].decode())


# --- the store's HTTP layer over TLS ---------------------------------------------------------

# https://www.elastic.co/guide/en/logstash/8.17/plugins-outputs-elasticsearch.html: the TLS options
# of the elasticsearch output 11.x (bundled with Logstash 8.17), which replaced the deprecated
# ssl, cacert and ssl_certificate_verification.
ES_OUTPUT_SSL = {"ssl_enabled", "ssl_certificate_authorities", "ssl_verification_mode", "ssl_certificate", "ssl_key",
                 "ssl_cipher_suites", "ssl_supported_protocols", "ssl_keystore_path", "ssl_keystore_password",
                 "ssl_keystore_type", "ssl_truststore_path", "ssl_truststore_password", "ssl_truststore_type"}
# https://www.rsyslog.com/doc/configuration/modules/omelasticsearch.html (tls.cacert: the CA that
# issued the server's certificate; the peer and its host name are checked unless
# allowunsignedcerts or skipverifyhost say otherwise).
OMELASTICSEARCH_TLS = {"tls.cacert", "tls.mycert", "tls.myprivkey", "allowunsignedcerts", "skipverifyhost"}


@pytest.mark.parametrize("variables", [{}, THREE, LOGSTASH])
def test_no_rendered_file_reaches_the_store_over_plain_http(repo, variables):
    _, hosts = _render(repo, "production", variables)
    for name, rendered in hosts.items():
        text = b"".join(rendered.files.values()).decode() + yaml.safe_dump(rendered.compose)
        assert not re.search(r"http://[^\s\"']*:9200", text), name
        assert "allowunsignedcerts" not in text.lower() and "skipverifyhost" not in text.lower()


def test_the_shippers_check_the_stores_certificate_against_its_ca(repo):
    settings, hosts = _render(repo)
    for name, rendered in hosts.items():
        conf = rendered.files["logship/rsyslog.conf"].decode()
        action = re.search(r'action\(type="omelasticsearch".*?\)\n', conf, re.S).group(0)
        assert re.search(r'server=\["https://(elasticsearch-1|10\.0\.3\.31):9200"\]', action), name
        params = dict(re.findall(r'([A-Za-z_.]+)="([^"]*)"', action))
        assert set(params) & OMELASTICSEARCH_TLS == {"tls.cacert"}
        shipper = next(i for i in topology.build(settings).instances_of("elk", "logship") if i.host.name == name)
        assert _delivered(settings, shipper.name)[params["tls.cacert"]] == \
            elasticsearch.pem_block(FAKE_BUNDLE, "CERTIFICATE", 1)


def test_the_setup_job_the_probe_and_make_trace_check_the_stores_certificate(repo):
    from shipyard.components.elk import search

    settings, obs = _obs(repo)
    script = obs.files["logs-setup/setup.sh"].decode()
    assert 'store="${STORE:-https://elasticsearch-1:9200}"' in script
    ca = re.search(r'^store_ca="([^"]+)"$', script, re.M).group(1)
    assert ca in _delivered(settings, "logs-setup")
    # Every request the job sends as elastic goes with the CA (the stand-in's put has no login).
    authenticated = [line for line in script.splitlines() if "curl " in line and "/tmp/auth" in line]
    assert len(authenticated) == 2 and all('--cacert "$store_ca"' in line for line in authenticated)
    # The node's own probe and `make trace` (run inside it): HTTPS to loopback, which its certificate names.
    node = _delivered(settings, "elasticsearch-1")
    probe = obs.compose["services"]["elasticsearch-1"]["healthcheck"]["test"][-1]
    assert f"--cacert {elasticsearch.HTTP_CA} https://127.0.0.1:9200/" in probe and elasticsearch.HTTP_CA in node
    argv = search.read_argv(settings, "/_cluster/health")
    assert argv[argv.index("--cacert") + 1] == elasticsearch.HTTP_CA
    assert "https://127.0.0.1:9200/_cluster/health" in argv
    # The stand-in (ci) keeps plain HTTP: it has no certificate and no users.
    ci, ci_hosts = _render(repo, "ci")
    ci_probe = next(r for r in ci_hosts.values() if "elasticsearch-1" in r.compose["services"]) \
        .compose["services"]["elasticsearch-1"]["healthcheck"]["test"][-1]
    assert "http://127.0.0.1:9200/" in ci_probe and "--cacert" not in ci_probe
    assert "--cacert" not in search.read_argv(ci, "/")


def test_logstashs_output_writes_over_https_as_its_own_user_checking_the_store(repo):
    settings, hosts = _render(repo, "production", LOGSTASH)
    inst = topology.build(settings).find("logstash")
    files = {w.path: w.content for w in secret_files("/p", (inst,), _values(), None, secret_variables(settings, inst.host))}
    output = files["/p/secrets/logstash/output.conf"].decode()
    body = re.search(r"elasticsearch \{(.*?)\n  \}", output, re.S).group(1)
    options = dict(re.findall(r"^\s+(ssl_[a-z_]+) => (.+)$", body, re.M))
    assert set(options) <= ES_OUTPUT_SSL, set(options) - ES_OUTPUT_SSL
    assert options == {"ssl_enabled": "true", "ssl_certificate_authorities": f'["{logstash.OUTPUT_CA}"]',
                       "ssl_verification_mode": '"full"'}
    assert _delivered(settings, "logstash")[logstash.OUTPUT_CA] == elasticsearch.pem_block(FAKE_BUNDLE, "CERTIFICATE", 1)
    assert not logstash.OUTPUT_CA.endswith(".conf")  # the pipeline glob reads *.conf only
    # Least privilege: its role writes this environment's log indices and reads the cluster's state.
    role = security.roles("production", True)["shipyard_logstash_writer"]
    assert role["cluster"] == ["monitor"] and role["indices"] == [
        {"names": ["shipyard-logs-production-*"], "privileges": ["create_index", "create_doc", "index"]}]


def test_logstash_options_refuse_a_value_they_would_have_to_escape():
    assert logstash.option_lines({"a": True, "b": "x", "c": ["y", "z"]}) == ['a => true', 'b => "x"', 'c => ["y", "z"]']
    with pytest.raises(ValueError, match="quote or backslash"):
        logstash.option_lines({"ssl_key": 'a" } output { x'})


def test_the_http_certificate_is_issued_from_the_log_shipping_ca_and_passes_a_clients_checks(repo, tmp_path):
    """A real handshake (Python's ssl, as curl, Kibana and Logstash check): the certificate of the
    issued bundle, against the log shipping CA, at the names clients use; not at another's."""
    import socket
    import ssl
    import threading

    from cryptography import x509

    from shipyard import secretstore

    (tmp_path / "inventories").symlink_to(repo / "inventories")
    environ = {secretstore.IDENTITY_DIR_VAR: str(tmp_path / "ids"), **THREE}
    values = secretstore.load_or_create(tmp_path, "production", environ)
    bundle = values[elasticsearch.HTTP_TLS].value
    ca_pem = elasticsearch.pem_block(bundle, "CERTIFICATE", 1)
    held = secretstore.read_held(tmp_path, "production", logstash.LOGS_CA_CERT, environ).value
    assert x509.load_pem_x509_certificate(held.encode()) == x509.load_pem_x509_certificate(ca_pem.encode())
    assert ca_pem != elasticsearch.pem_block(values[elasticsearch.TRANSPORT_TLS].value, "CERTIFICATE", 1)
    for part, kind, index in (("key", "PRIVATE KEY", 0), ("crt", "CERTIFICATE", 0), ("ca", "CERTIFICATE", 1)):
        (tmp_path / part).write_text(elasticsearch.pem_block(bundle, kind, index) + "\n")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp_path / "crt", tmp_path / "key")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve(count: int) -> None:
        for _ in range(count):
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

    names = ("elasticsearch-1", "elasticsearch-3", "localhost", "127.0.0.1")
    thread = threading.Thread(target=serve, args=(len(names) + 1,), daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(tmp_path / "ca"))
    try:
        for name in names:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with client_ctx.wrap_socket(raw, server_hostname=name) as tls:
                    tls.sendall(b"x")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with pytest.raises(ssl.SSLCertVerificationError, match="match"):
                client_ctx.wrap_socket(raw, server_hostname=logstash.SERVER_NAME)
    finally:
        thread.join(timeout=10)
        listener.close()
