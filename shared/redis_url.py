"""REDIS_URL's Sentinel form, parsed in this one place.

    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?options]

- host:port pairs name the Sentinels (port 26379 when left out; IPv6 as [::1]:26379);
- service is the name the Sentinels monitor (``sentinel monitor <service> ...``);
- db is the database number on the primary (0 when left out);
- the user part's user and password are the primary's (and its replicas') AUTH;
- options: ``sentinel_username`` and ``sentinel_password``, the Sentinels' own AUTH when
  they run with requirepass (the user part is not sent to them).

No TLS form (rediss+sentinel) yet: the URL is refused rather than silently sent in clear.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote

from shared.errors import ConfigError

SENTINEL_SCHEME = "redis+sentinel://"
DEFAULT_SENTINEL_PORT = 26379
_OPTIONS = ("sentinel_username", "sentinel_password")
NOT_SHOWN = "(not shown: the URL holds a password)"


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    """Where the Sentinels are, which service they watch, and how to log in."""

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None


def is_sentinel_url(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEME)


def parse_sentinel_url(url: str, what: str = "REDIS_URL") -> SentinelUrl:
    """Parse the Sentinel form; a ConfigError names what is wrong (never the password)."""
    if not is_sentinel_url(url):
        raise ConfigError(f"{what} does not start with {SENTINEL_SCHEME}")
    rest = url.removeprefix(SENTINEL_SCHEME)
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, given = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(given) if colon else None
    # A password with an unencoded "/" or "?" splits where it should not: whatever is then
    # wrong, nothing of a URL that holds a password is echoed.
    hidden = "@" in url or "sentinel_password" in url
    sentinels = tuple(_host_port(part, what, hidden) for part in hosts.split(",") if part.strip())
    if not sentinels:
        raise ConfigError(f"{what} names no Sentinel host (redis+sentinel://host:26379/service)")
    parts = [unquote(part) for part in path.split("/")] if path else []
    if not parts or not parts[0]:
        raise ConfigError(f"{what} names no service (redis+sentinel://hosts/SERVICE[/db])")
    if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ConfigError(f"{what}: after the service only a database number may follow")
    options = _options(query, what, hidden)
    return SentinelUrl(
        sentinels=sentinels,
        service_name=parts[0],
        db=int(parts[1]) if len(parts) == 2 else 0,
        username=username,
        password=password,
        sentinel_username=options.get("sentinel_username"),
        sentinel_password=options.get("sentinel_password"),
    )


def _host_port(part: str, what: str, hidden: bool) -> tuple[str, int]:
    part = part.strip()
    shown = NOT_SHOWN if hidden else repr(part)
    if part.startswith("["):  # [IPv6]:port
        host, bracket, tail = part[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise ConfigError(f"{what}: Sentinel address {shown} is not [ipv6]:port")
        port_text = tail[1:]
    else:
        host, _, port_text = part.partition(":")
    if not host:
        raise ConfigError(f"{what}: Sentinel address {shown} has no host")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{what}: Sentinel address {shown} has an invalid port")
    return host, int(port_text)


def _options(query: str, what: str, hidden: bool) -> dict[str, str]:
    values = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(values) - set(_OPTIONS))
    if unknown:
        shown = NOT_SHOWN if hidden else ", ".join(unknown)
        raise ConfigError(f"{what}: unknown option(s) {shown}; known: {', '.join(_OPTIONS)}")
    return {name: found[-1] for name, found in values.items()}
