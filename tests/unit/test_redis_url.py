"""REDIS_URL's Sentinel form: parsing, validation, and the clients built from it."""

from __future__ import annotations

import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.sentinel import MasterNotFoundError, SentinelManagedConnection

from cli.rq_settings import rq_settings
from shared.config import Settings, redact_url
from shared.errors import ConfigError
from shared.ports import free_port
from shared.redis import (
    BlockingSentinelConnectionPool,
    connect,
    make_receiver_redis,
    make_worker_redis,
)
from shared.redis_url import SentinelUrl, parse_sentinel_url


def test_the_issue_example_parses() -> None:
    url = "redis+sentinel://h1:26379,h2:26379,h3:26379/mymaster/0"
    assert parse_sentinel_url(url) == SentinelUrl(
        sentinels=(("h1", 26379), ("h2", 26379), ("h3", 26379)),
        service_name="mymaster",
        db=0,
    )


def test_passwords_ports_ipv6_and_defaults() -> None:
    url = (
        "redis+sentinel://app:s%40cret@h1,[::1]:26380/orders/3"
        "?sentinel_password=sp&sentinel_username=watch"
    )
    parsed = parse_sentinel_url(url)
    assert parsed.sentinels == (("h1", 26379), ("::1", 26380))
    assert (parsed.service_name, parsed.db) == ("orders", 3)
    assert (parsed.username, parsed.password) == ("app", "s@cret")
    assert (parsed.sentinel_username, parsed.sentinel_password) == ("watch", "sp")
    assert parse_sentinel_url("redis+sentinel://:pw@h1/m").password == "pw"
    assert parse_sentinel_url("redis+sentinel://:pw@h1/m").username is None


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("redis+sentinel:///mymaster/0", "no Sentinel host"),
        ("redis+sentinel://:pw@/mymaster", "no Sentinel host"),
        ("redis+sentinel://h1:26379,h2:26379", "no service"),
        ("redis+sentinel://h1:26379/", "no service"),
        ("redis+sentinel://h1:2x/mymaster", "invalid port"),
        ("redis+sentinel://h1:70000/mymaster", "invalid port"),
        ("redis+sentinel://h1:26379,:26379/mymaster", "has no host"),
        ("redis+sentinel://[::1/mymaster", "ipv6"),
        ("redis+sentinel://h1/mymaster/zero", "database number"),
        ("redis+sentinel://h1/mymaster/0/1", "database number"),
        ("redis+sentinel://h1/mymaster?ssl=1", "unknown option"),
    ],
)
def test_a_malformed_sentinel_url_fails_at_start_saying_why(url: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        Settings.from_env({"REDIS_URL": url})


def test_settings_accept_the_sentinel_form() -> None:
    url = "redis+sentinel://h1:26379,h2:26379,h3:26379/mymaster/0"
    assert Settings.from_env({"REDIS_URL": url}).redis_url == url


def test_an_error_never_shows_a_password() -> None:
    url = "redis+sentinel://app:hunter2@h1:bad/m?sentinel_password=hunter3"
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"REDIS_URL": url})
    assert "hunter" not in str(caught.value)
    assert "hunter" not in redact_url(url)


def test_every_client_is_built_on_the_sentinels_of_the_url() -> None:
    url = "redis+sentinel://127.0.0.1:1,127.0.0.1:2/orders/4"
    settings = Settings(redis_url=url)
    receiver = make_receiver_redis(settings, max_connections=3)
    pool = receiver.connection_pool
    assert isinstance(pool, BlockingSentinelConnectionPool)
    assert (pool.service_name, pool.max_connections, pool.timeout) == ("orders", 3, 1.0)
    assert pool.connection_kwargs["db"] == 4
    for client in (make_worker_redis(settings), connect(url)):
        assert client.connection_pool.service_name == "orders"  # type: ignore[attr-defined]


def test_no_sentinel_answering_fails_fast_as_a_connection_error() -> None:
    url = f"redis+sentinel://127.0.0.1:{free_port()},127.0.0.1:{free_port()}/m"
    redis = make_receiver_redis(Settings(redis_url=url, redis_timeout_s=0.5))
    started = time.monotonic()
    with pytest.raises(MasterNotFoundError) as caught:
        redis.ping()
    assert isinstance(caught.value, RedisConnectionError)  # what workers wait out
    assert time.monotonic() - started < 0.5


def test_a_full_sentinel_pool_waits_its_timeout_then_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No Sentinel here: a connection that "connects" without dialling stands in.
    monkeypatch.setattr(SentinelManagedConnection, "connect", lambda self: None)
    monkeypatch.setattr(SentinelManagedConnection, "can_read", lambda self, timeout=0: False)
    url = f"redis+sentinel://127.0.0.1:{free_port()}/m"
    redis = make_receiver_redis(Settings(redis_url=url, redis_timeout_s=0.3), max_connections=1)
    pool = redis.connection_pool
    held = pool.get_connection()
    started = time.monotonic()
    with pytest.raises(RedisConnectionError, match="No connection available"):
        pool.get_connection()
    assert 0.25 < time.monotonic() - started < 1.0
    pool.release(held)


def test_rq_settings_give_rqs_cli_the_sentinels_or_the_plain_url() -> None:
    url = "redis+sentinel://app:pw@h1,h2:26380/orders/3?sentinel_password=sp"
    assert rq_settings(url) == {
        "REDIS_URL": None,
        "SENTINEL": {
            "INSTANCES": [("h1", 26379), ("h2", 26380)],
            "MASTER_NAME": "orders",
            "DB": 3,
            "USERNAME": "app",
            "PASSWORD": "pw",
            "SOCKET_TIMEOUT": 5.0,
            "SENTINEL_KWARGS": {"username": None, "password": "sp", "socket_timeout": 5.0},
        },
    }
    assert rq_settings("redis://h:6379/2") == {"REDIS_URL": "redis://h:6379/2", "SENTINEL": None}


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://:hun/ter2@h1/m",  # an unencoded "/" in the password
        "redis+sentinel://app:hunter2?x@h1/m",  # an unencoded "?"
        "redis+sentinel://h1:x/m?sentinel_password=hunter2",
        "redis+sentinel://h1/m?sentinel_password=hunter2&hunter3=1",
    ],
)
def test_a_malformed_url_with_a_password_echoes_none_of_it(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"REDIS_URL": url})
    assert "hun" not in str(caught.value), caught.value


def test_failed_calls_with_no_primary_leave_no_connection_behind() -> None:
    url = f"redis+sentinel://127.0.0.1:{free_port()}/m"
    redis = make_receiver_redis(Settings(redis_url=url, redis_timeout_s=0.2), max_connections=4)
    for _ in range(50):
        with pytest.raises(MasterNotFoundError):
            redis.ping()
    # redis-py's blocking pool kept each failed connection in its list (50 here).
    assert len(redis.connection_pool._connections) == 0  # type: ignore[attr-defined]


def test_workers_find_a_vanished_primary_dead_by_tcp_keepalive() -> None:
    for url in ("redis://127.0.0.1:6379/0", "redis+sentinel://127.0.0.1:26379/m"):
        kwargs = make_worker_redis(Settings(redis_url=url)).connection_pool.connection_kwargs
        assert kwargs["socket_keepalive"] is True
        assert kwargs["socket_keepalive_options"], kwargs  # Linux: idle, interval, count
        assert kwargs.get("socket_timeout") is None  # RQ blocks in BLMOVE itself
