"""The stand-in store's start (image/logstore/stand-in.sh): nothing can write to it before its
index template is in, so a shipper that reaches it first cannot create the day's index with
dynamic mapping. A writer hammers the store's port from the moment the entrypoint starts; the
first document it gets in must land in an index with the template's mapping."""

from __future__ import annotations

import json
import time

from tests.logship.conftest import ENV, http, wait_for


def _bulk_one(port: int) -> int:
    day = time.strftime("%Y.%m.%d", time.gmtime()).replace(".", "-")
    body = (json.dumps({"create": {"_index": f"shipyard-logs-{ENV}-{day}", "_id": "first"}}) + "\n"
            + json.dumps({"@timestamp": "2026-12-05T10:00:00.123456789Z", "request_id": "r-1", "status": 201,
                          "message": "first"}) + "\n").encode()
    try:
        status, text = http("POST", f"http://127.0.0.1:{port}/_bulk?refresh=true", body, "application/x-ndjson")
    except OSError:
        return 0  # refused: the port is not open yet
    return status == 200 and not json.loads(text).get("errors")


def test_a_writer_racing_the_start_gets_the_templates_mapping(start_store):
    port, process = start_store()
    # As fast as a shipper retries: the first write that succeeds is the one that creates the index.
    wait_for("a document written to the stand-in", lambda: _bulk_one(port) or process.poll() is not None,
             timeout_s=30, every_s=0.005)
    assert process.poll() is None, process.stdout.read().decode()
    status, text = http("GET", f"http://127.0.0.1:{port}/shipyard-logs-{ENV}-*/_mapping")
    assert status == 200, text
    for index, mapping in json.loads(text).items():
        properties = mapping["mappings"]["properties"]
        assert properties["request_id"] == {"type": "keyword"}, (index, properties["request_id"])
        assert properties["status"] == {"type": "short"}, index
        assert properties["@timestamp"] == {"type": "date_nanos"}, index


def test_the_store_exits_when_osmem_ends_so_that_its_restart_starts_from_the_template(start_store):
    import os
    import signal
    import subprocess

    port, process = start_store()
    wait_for("the store's port open", lambda: http("GET", f"http://127.0.0.1:{port}/")[0] == 200)
    children = subprocess.run(["pgrep", "-P", str(process.pid), "-x", "osmem-server"], capture_output=True, text=True)
    os.kill(int(children.stdout.split()[0]), signal.SIGKILL)
    assert process.wait(timeout=10) == 1
