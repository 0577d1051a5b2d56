"""The proxy that requests to Unkey go through, if any, and a proxy URL shown without its password.

:func:`resolve_proxies` picks the proxy for a base URL: the connection's ``proxy`` extra, else the
environment's proxy variables, never for a loopback host (the emulator). :func:`redact_proxy_url` and
:func:`proxy_secrets` keep the proxy's password out of what
:class:`~airflow_provider_unkey.client.UnkeyClient` shows. Only the standard library and ``requests``'
proxy helpers are used; nothing here imports Airflow.
"""

from __future__ import annotations

import base64
import importlib.util
import urllib.request
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import requests

from airflow_provider_unkey.base_url import _is_loopback
from airflow_provider_unkey.exceptions import UnkeyConfigurationError

__all__ = ["proxy_secrets", "redact_proxy_url", "resolve_proxies"]


_PROXY_SCHEMES = ("http", "https", "socks4", "socks4a", "socks5", "socks5h")


def _normalise_proxy_url(proxy: str, origin: str) -> str:
    """A proxy URL checked and given a scheme (``proxy:3128`` means ``http://proxy:3128``).

    :param origin: where the URL came from, for the error message.
    :raises UnkeyConfigurationError: on a malformed URL or an unsupported scheme; the message never
        holds the URL's password.
    """
    url = proxy.strip()
    if "://" not in url:
        url = f"http://{url}"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise UnkeyConfigurationError(f"{origin} is not a valid proxy URL") from None
    shown = redact_proxy_url(url)
    if parts.scheme.lower() not in _PROXY_SCHEMES or not parts.hostname:
        raise UnkeyConfigurationError(
            f"{origin} must be http(s)://[user:password@]host:port (or socks5://...), got {shown!r}"
        )
    if parts.scheme.lower().startswith("socks") and importlib.util.find_spec("socks") is None:
        raise UnkeyConfigurationError(
            f"{origin} is a SOCKS proxy ({shown}), which needs PySocks installed; or give an http(s) proxy"
            " in the connection's proxy extra, or name the host in NO_PROXY"
        )
    return url


def redact_proxy_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``: for logs, errors and reprs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    except ValueError:
        return "<proxy URL not shown>"


def proxy_secrets(url: str) -> list[str]:
    """The texts of a proxy URL that must never be shown: its password as written and decoded, and the
    ``Proxy-Authorization`` token built from it. Empty when the URL has no password."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    if not parts.password:
        return []
    username, password = unquote(parts.username or ""), unquote(parts.password)
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    secrets = {parts.password, password, quote(password, safe=""), token}
    return sorted((s for s in secrets if s), key=len, reverse=True)


def resolve_proxies(base_url: str, proxy: str | None = None) -> dict[str, str]:
    """The proxies to reach ``base_url`` through, as ``requests`` takes them (``{scheme: url}``).

    :param base_url: the API's base URL (normalised).
    :param proxy: a proxy given explicitly (the connection's ``proxy`` extra): used for http and https,
        whatever the base URL and the environment say.
    :return: with no explicit proxy, the environment's proxy for the base URL's scheme
        (``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``, either case), unless ``NO_PROXY`` names the host or
        the host is loopback (the emulator); else nothing. Only the proxy variables are read, never
        ``.netrc`` or ``REQUESTS_CA_BUNDLE``.
    :raises UnkeyConfigurationError: on a proxy URL that is malformed or of an unsupported scheme.
    """
    if proxy is not None and proxy.strip():
        url = _normalise_proxy_url(proxy, "the proxy")
        return {"http": url, "https": url}
    parts = urlsplit(base_url)
    if parts.hostname is None or _is_loopback(parts.hostname):
        return {}
    if requests.utils.should_bypass_proxies(base_url, no_proxy=None):
        return {}
    environ = urllib.request.getproxies()
    scheme = parts.scheme.lower()
    selected = requests.utils.select_proxy(base_url, environ)
    if not selected:
        return {}
    variable = f"{scheme.upper()}_PROXY" if environ.get(scheme) else "ALL_PROXY"
    return {scheme: _normalise_proxy_url(selected, f"the environment's {variable}")}
