"""Central logs (shipyard/components/elk, docs/logs.md), the pure parts: what the shipper is
configured to do, the documents' mapping, and how `make trace` searches the store and reads its
answer. tests/e2e/test_logs.py runs the whole path."""

from __future__ import annotations

import json
import re

from shipyard.components.elk import documents, search
from shipyard.inventory import load_environment
from shipyard.render import render_environment


def _rendered(repo, env="ci"):
    return render_environment(load_environment(repo, env, {}))


def _file(host, path: str) -> str:
    return host.shipped[path].decode()


def test_every_service_logs_to_json_file_with_the_labels_the_shipper_reads(repo):
    services = _rendered(repo)["ci"].compose["services"]
    for name, svc in services.items():
        labels = svc["logging"]["options"]["labels"].split(",")
        assert svc["logging"]["driver"] == "json-file", name
        assert {"com.docker.compose.project", "com.docker.compose.service", "org.shipyard.colour",
                "org.shipyard.version"} <= set(labels), name
    # The release version of a coloured service, as compose interpolates it from the release state.
    assert services["api-blue"]["labels"]["org.shipyard.version"].startswith("${SHIPYARD_VERSION_BLUE:-")


def test_the_shipper_reads_the_engines_files_and_the_audit_trail_read_only_with_one_capability(repo):
    logship = _rendered(repo)["ci"].compose["services"]["logship"]
    assert "/var/lib/docker/containers:/var/lib/docker/containers:ro" in logship["volumes"]
    assert "/opt/shipyard/.ci.audit.log:/var/log/shipyard/audit.log:ro" in logship["volumes"]
    assert logship["cap_drop"] == ["ALL"] and logship["cap_add"] == ["DAC_READ_SEARCH"] and logship["read_only"]
    assert logship["depends_on"] == {"elasticsearch-1": {"condition": "service_healthy"},
                                     "logs-setup": {"condition": "service_completed_successfully"}}


def test_the_shipper_keeps_its_own_projects_lines_and_sends_them_with_stable_ids(repo):
    conf = _file(_rendered(repo)["ci"], "logship/rsyslog.conf")
    assert 'if $!docker!attrs!com.docker.compose.project != "shipyard-ci" then stop' in conf
    for service in documents.NOT_SHIPPED:
        assert f'if $.service startswith "{service}" then stop' in conf
    assert 'server=["http://elasticsearch-1:9200"]' in conf and "pwd=" not in conf  # the stand-in has no users
    assert 'string="shipyard-logs-ci-%$!doc!@timestamp:1:10%"' in conf
    # The id: the container (the sixth path element of /var/lib/docker/containers/<id>/<id>-json.log),
    # the engine's time, the offset: the same line shipped twice is stored once. An audit event:
    # its id and the host (each host the command touched writes it).
    assert 'set $.id = field($!metadata!filename, 47, 6) & "-" & $!docker!time & "-" & $!metadata!fileoffset;' in conf
    assert 'set $.id = "audit-" & $.event!id & "-ci";' in conf and 'if $.event!env != "ci" then stop' in conf
    assert 'bulkid="document_id" dynbulkid="on"' in conf and conf.count('type="omelasticsearch"') == 1
    assert 'queue.maxDiskSpace="512m"' in conf and 'action.resumeRetryCount="-1"' in conf


def test_the_access_pattern_follows_the_edges_and_the_routers_log_format(repo):
    host = _rendered(repo)["ci"]
    prefix = "'$remote_addr \"$request\" $status $body_bytes_sent $request_time '"
    for path in ("nginx/nginx.conf", "nginx/router.conf"):
        assert f"log_format main {prefix}" in _file(host, path), path
    pattern = re.compile(documents.ACCESS_PATTERN)  # an ERE: Python reads it the same
    line = '10.0.0.2 "POST /v1/tasks?x=1 HTTP/1.1" 202 286 0.007 rid=ab12 upstream=10.0.0.3:8000 colour=blue'
    assert dict(zip(documents.ACCESS_FIELDS, pattern.match(line).groups())) == {
        "client": "10.0.0.2", "method": "POST", "path": "/v1/tasks?x=1", "status": "202", "bytes": "286",
        "request_time_s": "0.007", "request_id": "ab12"}
    assert not pattern.match('{"level": "info", "msg": "rid=ab12"}')
    assert documents.rsyslog_string(documents.ACCESS_PATTERN) in _file(host, "logship/rsyslog.conf")


def test_the_mapping_makes_every_extracted_field_searchable_and_keeps_the_rest_unindexed():
    properties = documents.mappings()["properties"]
    for field in (*documents.COMMON, *documents.APP_FIELDS, *documents.ACCESS_FIELDS, "message", "upstream"):
        assert field in properties, field
    assert properties["@timestamp"] == {"type": "date_nanos"} and properties["request_id"] == {"type": "keyword"}
    assert properties["app"] == {"type": "object", "enabled": False} and documents.mappings()["dynamic"] is False
    template = documents.index_template("ci", replicas=0, lifecycle_policy=None)
    assert template["index_patterns"] == ["shipyard-logs-ci-*"] and "index.lifecycle.name" not in template["template"]["settings"]
    with_policy = documents.index_template("production", replicas=1, lifecycle_policy="shipyard-logs")
    assert with_policy["template"]["settings"]["index.lifecycle.name"] == "shipyard-logs"
    assert documents.lifecycle_policy(14)["policy"]["phases"]["delete"] == {"min_age": "14d", "actions": {"delete": {}}}


def test_the_setup_job_puts_the_template_and_under_local_no_lifecycle_policy(repo):
    host = _rendered(repo)["ci"]
    script = _file(host, "logs-setup/setup.sh")
    assert 'put "/_index_template/shipyard-logs-ci" "/etc/logs-setup/index-template.json"' in script
    assert "_ilm/policy" not in script
    assert json.loads(_file(host, "logs-setup/index-template.json")) == documents.index_template("ci", 0, None)


def test_a_trace_searches_both_ids_since_the_time_asked_oldest_first():
    body = search.trace_query(None, frozenset({"r1"}), frozenset({"t2", "t1"}), 1796462458.5)
    assert body["query"]["bool"]["should"] == [{"terms": {"request_id": ["r1"]}}, {"terms": {"task_id": ["t1", "t2"]}}]
    assert body["query"]["bool"]["minimum_should_match"] == 1
    assert body["query"]["bool"]["filter"] == [{"range": {"@timestamp": {"gte": "2026-12-05T09:20:58.500000Z"}}}]
    assert body["sort"] == [{"@timestamp": "asc"}]
    only_tasks = search.trace_query(None, frozenset(), frozenset({"t"}), 0)
    assert only_tasks["query"]["bool"]["should"] == [{"terms": {"task_id": ["t"]}}]


def test_the_search_runs_in_the_stores_container_with_no_password_on_the_command_line(repo):
    local = load_environment(repo, "ci", {})
    argv = search.search_argv(local, {"size": 1})
    assert argv[0] == "curl" and argv[3].startswith("http://127.0.0.1:9200/shipyard-logs-ci-*/_search")
    official = search.search_argv(load_environment(repo, "production", {}), {"size": 1})
    assert official[:2] == ("sh", "-c") and "$(cat /usr/share/elasticsearch/config/shipyard-secrets/logs_reader_password)" in official[2]
    assert official[4] == "curl"


def test_a_stored_line_comes_back_as_the_container_wrote_it():
    app = {"ts": 1.5, "level": "info", "msg": "request", "request_id": "r", "status": 202, "latency_ms": 5.5}
    where, when, text = search.line_of({"_source": {"@timestamp": "2026-12-05T09:20:58.802123456Z", "host": "ci",
                                                    "service": "api-blue", "format": "app", "app": app}})
    assert (where, json.loads(text)) == ("ci api-blue", app)
    assert abs(when - 1796462458.802123456) < 1e-6
    _, _, access = search.line_of({"_source": {"@timestamp": "2026-12-05T09:20:58Z", "host": "ci", "service": "edge",
                                               "format": "access", "message": "1.2.3.4 \"GET / HTTP/1.1\" 200"}})
    assert access == "1.2.3.4 \"GET / HTTP/1.1\" 200"


# The shipper's metrics (docs/logs.md, "Metrics"): impstats as JSON to the exporter rsyslog runs.

def _exporter():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "shipyard/components/elk/image/logship/logship-exporter.py"
    spec = importlib.util.spec_from_file_location("logship_exporter", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Records as rsyslog 8.2302 writes them (impstats format="json", seen from Debian's rsyslogd).
_RECORDS = [
    '{ "name": "store", "origin": "core.action", "processed": 21, "failed": 0, "suspended": 0, '
    '"suspended.duration": 0, "resumed": 0 }',
    '{ "name": "store queue[DA]", "origin": "core.queue", "size": 0, "enqueued": 0, "full": 0, '
    '"discarded.full": 0, "discarded.nf": 0, "maxqsize": 0 }',
    '{ "name": "store queue", "origin": "core.queue", "size": 21, "enqueued": 21, "full": 0, '
    '"discarded.full": 2, "discarded.nf": 0, "maxqsize": 21 }',
    '{ "name": "omelasticsearch", "origin": "omelasticsearch", "submitted": 10, "failed.http": 5, '
    '"failed.httprequests": 1, "failed.checkConn": 13, "failed.es": 1, "rebinds": 0 }',
    '{ "name": "resource-usage", "origin": "impstats", "utime": 4929, "stime": 7394, "maxrss": 12496, '
    '"openfiles": 18 }',
    '{ "name": "global", "origin": "dynstats", "values": { } }',
]


def test_the_exporter_turns_impstats_records_into_prometheus_series():
    exporter = _exporter()
    stats = exporter.Stats()
    for line in _RECORDS + ["not json", '{"no": "name"}']:
        stats.take(line)
    text = exporter.render(stats.records, 1700000000.5, 4096, 536870912, {"store queue": 5000}, 0)
    lines = set(text.splitlines())
    assert {'rsyslog_action_processed_total{action="store"} 21', 'rsyslog_action_suspended_total{action="store"} 0',
            'rsyslog_queue_size{queue="store queue"} 21', 'rsyslog_queue_size{queue="store queue[DA]"} 0',
            'rsyslog_queue_discarded_full_total{queue="store queue"} 2',
            "rsyslog_omelasticsearch_failed_checkconn_total 13", "rsyslog_omelasticsearch_failed_es_total 1",
            "rsyslog_cpu_user_seconds_total 0.004929", "rsyslog_max_rss_bytes 12795904",
            'logship_queue_capacity{queue="store queue"} 5000', "logship_buffer_bytes 4096",
            "logship_buffer_limit_bytes 536870912", "logship_stats_last_timestamp_seconds 1700000000.5",
            "logship_store_rejected_bytes 0"} <= lines, text
    # One HELP and TYPE per family; a counter's name ends in _total.
    assert text.count("# TYPE rsyslog_queue_size gauge") == 1
    for line in lines:
        if line.startswith("# TYPE ") and line.endswith(" counter"):
            assert line.split()[2].endswith("_total"), line
    # What Prometheus's own parser takes (promtool, from Debian, like the rules' tests).
    import shutil
    import subprocess

    if shutil.which("promtool"):
        result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        assert "error" not in (result.stdout + result.stderr).lower(), result.stdout + result.stderr


def test_the_exporter_counts_only_a_disk_queues_files(tmp_path):
    exporter = _exporter()
    for name, size in (("store.00000001", 1000), ("store.00000002", 24), ("store.qi", 100),
                       ("store-rejected.json", 5000), ("imfile-state:123", 7)):
        (tmp_path / name).write_bytes(b"x" * size)
    assert exporter.disk_buffer_bytes(str(tmp_path), "store") == 1124
    assert exporter.disk_buffer_bytes(str(tmp_path / "missing"), "store") == 0


def test_the_shipper_sends_its_counters_to_the_exporter_prometheus_scrapes(repo):
    host = _rendered(repo)["ci"]
    conf = _file(host, "logship/rsyslog.conf")
    # 8.2302 refuses format="prometheus": JSON, never reset, to a ruleset with its own queue.
    assert 'module(load="impstats" interval="10" format="json" resetCounters="off" ruleset="stats")' in conf
    assert 'ruleset(name="stats" queue.type="LinkedList" queue.size="1000") {' in conf
    assert ('binary="/usr/bin/python3 -B /usr/local/bin/logship-exporter --listen :9104 --work-dir '
            '/var/lib/rsyslog --queue-file store --buffer-limit-bytes 536870912 --capacity store=5000 '
            '--rejected-file store-rejected.json"') in conf
    assert 'forceSingleInstance="on"' in conf
    assert 'queue.size="5000"' in conf and 'action.resumeIntervalMax="30"' in conf
    logship = host.compose["services"]["logship"]
    assert "ports" not in logship  # scraped on the project network only
    import yaml

    jobs = {j["job_name"]: j for j in yaml.safe_load(host.files["prometheus/prometheus.yml"])["scrape_configs"]}
    assert jobs["ci/logship"]["dns_sd_configs"] == [{"names": ["logship"], "type": "A", "port": 9104,
                                                     "refresh_interval": "5s"}]


def test_under_logstash_the_exporter_watches_the_logstash_actions_queue(repo):
    from shipyard.render import render_host

    settings = load_environment(repo, "production", {"SHIPYARD_LOGS__LOGSTASH__ENABLED": "true"})
    conf = render_host(settings, settings.hosts[0]).shipped["logship/rsyslog.conf"].decode()
    assert "--capacity logstash=5000\"" in conf and "--rejected-file" not in conf


def test_the_logship_image_carries_the_exporter_and_python():
    from pathlib import Path

    image = Path(__file__).resolve().parents[2] / "shipyard/components/elk/image/logship"
    dockerfile = (image / "Dockerfile").read_text()
    assert "COPY logship-exporter.py /usr/local/bin/logship-exporter" in dockerfile and " python3;" in dockerfile
    assert (image / "logship-exporter.py").exists()
    standin = (image.parent / "logstore/Dockerfile").read_text()
    assert " socat;" in standin
