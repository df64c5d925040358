"""Base URLs and result URLs: one spelling per API, and which addresses batchgen may reach.

The base URL is part of every request's identity, so two spellings of one server must give
one string: `HTTP://127.0.0.1:8787/api/..` and `http://127.0.0.1:8787` are the same API, and a
rerun through either must find the same keys.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit, urlunsplit

from .errors import UrlRefused, UsageError

DEFAULT_PORTS = {"http": 80, "https": 443}


def canonical_base_url(base_url: str) -> str:
    """The one spelling of an API base URL: lower-case scheme and host, no default port, dot
    segments resolved, no trailing slash. A URL with a query, fragment or user info is refused
    (none of them can be part of a base URL, and user info would put a secret in the ledger)."""
    text = base_url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:  # `http://[::1`, a port past 65535, ...
        raise UsageError(f"base URL {_shown(base_url)} is not a valid URL ({e})") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise UsageError(f"base URL {_shown(base_url)} is not an http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise UsageError(
            "a base URL with user info (user:password@) is refused: give the key with the provider's key variable or --api-key-file"
        )
    if parts.query or text.endswith("?"):
        raise UsageError(f"base URL {_shown(base_url)} has a query (?...): a base URL has none")
    if parts.fragment or "#" in text:
        raise UsageError(f"base URL {_shown(base_url)} has a fragment (#...): a base URL has none")
    host = parts.hostname.lower()  # urlsplit lower-cases it and drops IPv6 brackets
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port in (None, DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = remove_dot_segments(parts.path).rstrip("/")
    return urlunsplit((scheme, netloc, path, "", ""))


def remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4: `/a/b/../c/./d` → `/a/c/d`; never climbs above the root."""
    out: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if len(out) > 1:
                out.pop()
        elif segment != ".":
            out.append(segment)
    result = "/".join(out)
    if path.endswith(("/.", "/..")):
        result += "/"
    return result


def _shown(url: str) -> str:
    # A URL in an error message, without any user info it may carry.
    try:
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            return repr(url.replace(parts.netloc.rsplit("@", 1)[0] + "@", "…@"))
    except ValueError:
        pass
    return repr(url)


def is_loopback_host(host: str | None) -> bool:
    """Whether `host` names this machine (`localhost`, 127.0.0.0/8, ::1)."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_api_base(base_url: str) -> str:
    """The canonical base URL, refused if plain http goes anywhere but this machine."""
    canonical = canonical_base_url(base_url)
    parts = urlsplit(canonical)
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise UsageError(
            f"base URL {_shown(base_url)}: plain http is only allowed to a loopback host (the key would travel in clear)"
        )
    return canonical


def check_result_url(url: str, *, loopback_api: bool) -> None:
    """Raise `UrlRefused` unless `url` may be fetched.

    Only https, and no private, link-local, loopback or otherwise special address (a result
    URL pointing inside the user's network would turn batchgen into a probe of it). When the
    API itself is on this machine (the sandbox), loopback URLs are allowed, over http too.
    Every address the host resolves to is checked.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UrlRefused("not a valid URL") from None
    host = parts.hostname
    if not host:
        raise UrlRefused("no host")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("URL with user info")
    scheme = parts.scheme.lower()
    loopback = is_loopback_host(host)
    if scheme != "https" and not (scheme == "http" and loopback and loopback_api):
        raise UrlRefused(f"{scheme or 'no'} scheme: only https result URLs are fetched")
    for address in _addresses(host, port or DEFAULT_PORTS.get(scheme, 443)):
        if address.is_loopback:
            if not loopback_api:
                raise UrlRefused(f"{host} is a loopback address")
            continue
        if (
            address.is_private
            or address.is_link_local
            or address.is_multicast
            or address.is_reserved
            or address.is_unspecified
            or (
                address.version == 6
                and address.ipv4_mapped is not None
                and not address.ipv4_mapped.is_global
            )
        ):
            raise UrlRefused(f"{host} is a private, link-local or reserved address ({address})")


def _addresses(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    host = host.strip("[]")
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return [ipaddress.ip_address("127.0.0.1")]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise UrlRefused(f"cannot resolve {host}: {e}") from None
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
