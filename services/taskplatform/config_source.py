"""The runtime config source a process reads, chosen from its settings: Consul KV when Consul
addresses are given, else the file. The API and the worker build theirs here, so both count and
apply a config the same way: reloads, rejections and watch errors as metrics, the applied
version as a gauge, the log level and maintenance as they change."""

from __future__ import annotations

import logging

from taskplatform import metrics, secrets
from taskplatform.runtime_config import ConfigSource, FileConfigSource
from taskplatform.settings import ProcessSettings


def build_config_source(settings: ProcessSettings) -> ConfigSource:
    if settings.consul_addrs:
        # Imported only here: a process reading the file never loads the Consul client.
        from taskplatform.consul_config import ConsulConfigSource, parse_endpoints

        source: ConfigSource = ConsulConfigSource(
            parse_endpoints(settings.consul_addrs), settings.consul_runtime_path, secrets.file_of(settings, "consul_token"),
            settings.config_cache_file, wait_seconds=settings.consul_wait_seconds)
    else:
        source = FileConfigSource(settings.config_file, settings.config_poll_seconds)
    source.on_reload = metrics.CONFIG_RELOADS.inc
    source.on_reject = metrics.CONFIG_REJECTIONS.inc
    source.on_watch_error = metrics.CONFIG_WATCH_ERRORS.inc
    source.subscribe(lambda loaded: metrics.set_config_version(loaded.config.version, loaded.hash))
    source.subscribe(lambda loaded: logging.getLogger().setLevel(loaded.config.log_level))
    source.subscribe(lambda loaded: metrics.MAINTENANCE_MODE.set(loaded.config.maintenance))
    return source
