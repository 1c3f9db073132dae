"""What a failed health gate reports of compose's own output."""

from shipyard.apply.converge import _compose_errors


def test_compose_progress_lines_are_left_out_of_a_failure_report_and_its_errors_kept():
    stderr = (" Container shipyard-ci-postgres-1  Running\n Container shipyard-ci-redis-1  Waiting\n"
              " Container shipyard-ci-postgres-replica-1-1  Started\n Container shipyard-ci-redis-1  Healthy\n"
              "container shipyard-ci-postgres-replica-1-1 is unhealthy\n")
    assert _compose_errors(stderr) == "container shipyard-ci-postgres-replica-1-1 is unhealthy"
