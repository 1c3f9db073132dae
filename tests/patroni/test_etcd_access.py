"""Patroni's etcd access as etcd_access.grant_patroni leaves it, on a real etcd with auth on:
its user reads and writes its cluster's prefix and nothing else; an anonymous client nothing."""

from __future__ import annotations

import base64

import pytest

from shipyard.components.postgres import etcd_access, patroni
from shipyard.components.postgres.etcd_access import EtcdAccessError, Gateway


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _put(gateway: Gateway, key: str) -> None:
    gateway.call("kv/put", {"key": _b64(key), "value": _b64("x")})


def _get(gateway: Gateway, key: str) -> list:
    return gateway.call("kv/range", {"key": _b64(key)}).get("kvs", [])


def _as_patroni(etcd, secret_values) -> Gateway:
    gateway = Gateway(etcd.endpoint)
    assert gateway.log_in(patroni.ETCD_USER, secret_values["patroni_etcd_password"])
    return gateway


def test_patroni_reads_and_writes_its_own_prefix(etcd, settings, secret_values):
    gateway = _as_patroni(etcd, secret_values)
    key = patroni.key_prefix(settings.name) + "probe"
    _put(gateway, key)
    assert len(_get(gateway, key)) == 1


@pytest.mark.parametrize("key", ["/other", "/patroni/shipyard-other/leader", "/patroni/shipyard-ci0",
                                 "/patroni/shipyard-c"])
def test_patroni_may_touch_nothing_outside_its_prefix(etcd, secret_values, key):
    gateway = _as_patroni(etcd, secret_values)
    with pytest.raises(EtcdAccessError, match="permission denied"):
        _get(gateway, key)
    with pytest.raises(EtcdAccessError, match="permission denied"):
        _put(gateway, key)


def test_an_anonymous_client_may_do_nothing(etcd, settings):
    with pytest.raises(EtcdAccessError, match="user name is empty"):
        _get(Gateway(etcd.endpoint), patroni.key_prefix(settings.name) + "probe")


def test_granting_again_changes_nothing_and_refuses_a_wrong_root_password(etcd, settings, secret_values):
    etcd_access.grant_patroni(etcd.endpoint, settings.name, secret_values["etcd_root_password"],
                              secret_values["patroni_etcd_password"])
    _as_patroni(etcd, secret_values)
    with pytest.raises(EtcdAccessError, match="authentication failed"):
        etcd_access.grant_patroni(etcd.endpoint, settings.name, "wrong", secret_values["patroni_etcd_password"])
