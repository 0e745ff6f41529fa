"""Settings for RQ's own commands, built from REDIS_URL: ``rq info -c cli.rq_settings``.

RQ's CLI reads the UPPERCASE names of a settings module (``-c MODULE``): ``REDIS_URL`` for a
plain server, or a ``SENTINEL`` dictionary, with which it asks the Sentinels for the
current primary each time it runs, so a failover needs no edit. Both come from the
REDIS_URL every permit-push process reads (docs/running.md, "Redis under Sentinel").
"""

from __future__ import annotations

from typing import Any

from shared.config import Settings
from shared.redis_url import is_sentinel_url, parse_sentinel_url

# A command against a hung server or Sentinel fails after this, rather than waiting for ever.
TIMEOUT_S = 5.0


def rq_settings(redis_url: str) -> dict[str, Any]:
    """What RQ's CLI reads (rq/cli/helpers.py, get_redis_from_config) for ``redis_url``."""
    if not is_sentinel_url(redis_url):
        return {"REDIS_URL": redis_url, "SENTINEL": None}
    config = parse_sentinel_url(redis_url)
    return {
        "REDIS_URL": None,  # RQ takes a REDIS_URL before a SENTINEL
        "SENTINEL": {
            "INSTANCES": list(config.sentinels),
            "MASTER_NAME": config.service_name,
            "DB": config.db,
            "USERNAME": config.username,
            "PASSWORD": config.password,
            "SOCKET_TIMEOUT": TIMEOUT_S,
            "SENTINEL_KWARGS": {
                "username": config.sentinel_username,
                "password": config.sentinel_password,
                "socket_timeout": TIMEOUT_S,
            },
        },
    }


_settings = rq_settings(Settings.from_env().redis_url)
REDIS_URL: str | None = _settings["REDIS_URL"]
SENTINEL: dict[str, Any] | None = _settings["SENTINEL"]
