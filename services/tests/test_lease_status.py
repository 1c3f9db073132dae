"""The credential keeper's ``lease.json`` (taskplatform.db_credentials): what `make status` reads
of each container holds names and times only, never the password, the lease id or a token, and
is written whole (by rename), readable by anyone. The keeper writing and updating it against a
real Vault and PostgreSQL: tests/vault/test_app_credentials.py."""

from __future__ import annotations

import json
import time

from taskplatform.db_credentials import STATUS_FILE, Lease, status_document, write_public


def test_the_status_document_holds_no_secret_and_says_what_make_status_shows(tmp_path):
    now = time.time()
    lease = Lease("database/creds/tasks_app/LEASE-ID-abc", "v-approle-tasks_ap-xyz", "PASSWORD-s3cret", 3600,
                  now + 3000, now - 600, client=None)
    doc = status_document(lease, now + 2999, 4, 2, 7, {"operation": "renew_lease", "reason": "VaultDown: sealed",
                                                       "at": now - 1}, now)
    text = json.dumps(doc)
    assert "PASSWORD-s3cret" not in text and "LEASE-ID-abc" not in text
    assert doc == {"username": "v-approle-tasks_ap-xyz", "lease_ttl_s": 3600, "lease_expires_at": round(now + 3000, 3),
                   "token_expires_at": round(now + 2999, 3), "generation": 4, "failing": 2, "errors_total": 7,
                   "last_error": {"operation": "renew_lease", "reason": "VaultDown: sealed", "at": now - 1},
                   "updated_at": round(now, 3)}
    path = tmp_path / STATUS_FILE
    write_public(path, text)
    write_public(path, text)  # replaced whole, no temporary file left
    assert oct(path.stat().st_mode & 0o777) == "0o644" and json.loads(path.read_text()) == doc
    assert [p.name for p in tmp_path.iterdir()] == [STATUS_FILE]
