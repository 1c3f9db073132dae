"""Central logs: the store's indices have the documents' mapping, and lines of every host whose shipper runs,
found with the same search `make trace` runs (inside the store's container); the store's API is
published on loopback only."""

import json
import time

import pytest

from shipyard.components.elk import documents, search

WAIT_S = 60


@pytest.fixture(scope="module")
def store(target):
    from shipyard import topology

    here = [i.name for i in topology.build(target.settings).instances_on(target.rendered.host)
            if i.component.name == "elk" and i.service.name == "elasticsearch"]
    if not here:
        pytest.skip("no log store on this host")
    return here[0]


def _read(target, store: str, path: str, body: dict | None = None) -> dict:
    code, out, err = target.exec(store, list(search.read_argv(target.settings, path, body)))
    assert code == 0, f"{path} in {store} failed: {err or out}"
    return json.loads(out)


def test_every_shipping_host_has_lines_in_the_store(target, store):
    from shipyard import topology

    shippers = {i.host.name for i in topology.build(target.settings).instances if i.service.name == "logship"}
    body = {"size": 0, "query": {"range": {"@timestamp": {"gte": "now-1d"}}},
            "aggs": {"hosts": {"terms": {"field": "host", "size": 1000}}}}
    deadline = time.monotonic() + WAIT_S
    while True:
        answer = _read(target, store, f"/{documents.index_pattern(target.settings.name)}/_search", body)
        found = {bucket["key"] for bucket in answer["aggregations"]["hosts"]["buckets"]}
        if shippers <= found or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert shippers <= found, f"no line in the last day from {sorted(shippers - found)}"


def test_the_indices_map_the_documents_fields(target, store):
    mappings = _read(target, store, f"/{documents.index_pattern(target.settings.name)}/_mapping")
    assert mappings, "no index of the environment"
    for index, mapping in mappings.items():
        properties = mapping["mappings"]["properties"]
        assert properties["request_id"] == {"type": "keyword"}, index
        assert properties["@timestamp"] == {"type": "date_nanos"}, index


def test_published_on_loopback_or_for_other_hosts_on_its_private_address_only(target, store):
    """Loopback on one host; with log shippers on other hosts, its host's own (private) address —
    never every address."""
    from shipyard import topology

    container = target.container_of(store)
    bindings = [b for ports in (container["NetworkSettings"]["Ports"] or {}).values() for b in (ports or [])]
    bind, port = topology.build(target.settings).published(target.rendered.host, store)
    assert bind in ("127.0.0.1", target.rendered.host.address), bind
    assert bindings and all((b["HostIp"], b["HostPort"]) == (bind, str(port)) for b in bindings), bindings
