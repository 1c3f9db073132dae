"""The pure parts of the PostgreSQL promotion drill."""

from shipyard.components.postgres.promote import further_than, lsn_value


def test_wal_locations_compare_as_numbers_not_text():
    assert lsn_value("0/3000000") == 0x3000000
    assert lsn_value("1/0") > lsn_value("0/FFFFFFFF")
    assert lsn_value("0/1000000") > lsn_value("0/FFFFFF")  # as text "0/F…" sorts after "0/1…"


def test_a_forced_promotion_is_steered_to_the_replica_that_replayed_most():
    replayed = {"postgres-replica-1": "0/5000060", "postgres-replica-2": "0/5001000",
                "postgres-replica-3": "0/5000800", "postgres-replica-4": None}
    assert further_than(replayed, "postgres-replica-1") == ["postgres-replica-2", "postgres-replica-3"]
    assert further_than(replayed, "postgres-replica-2") == []
    assert further_than(replayed, "postgres-replica-4") == []  # it did not answer: nothing to compare
