"""`make bench-peers` (``../bench_peers.py``) in pieces.

Run by the bench, in the project's venv: ``figures`` (pure: the report), ``venv`` (the peers'
own venv), ``systems`` (each system's workers and client commands), ``proctree`` (a worker and
all it started). Run in the peers' venv: ``driver`` (the client commands, once for every
system), ``<system>_peer`` (one module per system: its ``Adapter``, its worker and the settings
it is measured with), ``workload`` (the tasks), ``outcomes`` and ``result_rows`` (what the
adapters answer)."""
