"""The API's base URL: the default, and the check every client makes of the one it is given.

:func:`normalise_base_url` refuses a malformed URL, and clear-text HTTP to a host that is not loopback
unless the connection allows it, so the root key never crosses a network in clear text by accident.
``airflow_provider_unkey.client`` re-exports :data:`DEFAULT_BASE_URL` and :func:`normalise_base_url`.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from airflow_provider_unkey.exceptions import UnkeyConfigurationError

__all__ = ["DEFAULT_BASE_URL", "normalise_base_url"]

DEFAULT_BASE_URL = "https://api.unkey.com"


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalise_base_url(base_url: str | None, *, allow_insecure_http: bool = False) -> str:
    """Check and normalise the API's base URL.

    :param base_url: ``https://api.unkey.com`` or another origin (scheme, host, optional port and
        path prefix); ``None`` or empty gives the default.
    :param allow_insecure_http: allow ``http://`` to a host that is not loopback. Without it, the
        root key never crosses a network in clear text by accident.
    :raises UnkeyConfigurationError: on a malformed URL or clear-text HTTP to a remote host.
    """
    url = (base_url or DEFAULT_BASE_URL).strip().rstrip("/")
    if "://" not in url:
        url = f"https://{url}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnkeyConfigurationError(f"Unkey base URL must be http(s)://host[:port], got {url!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise UnkeyConfigurationError(
            "Unkey base URL must not carry credentials, a query or a fragment; "
            "put the root key in the connection's password"
        )
    if parts.scheme == "http" and not _is_loopback(parts.hostname) and not allow_insecure_http:
        raise UnkeyConfigurationError(
            f"Refusing to send the root key in clear text to {parts.hostname}: use https://, or set the "
            "connection extra allow_insecure_http=true if this network is trusted"
        )
    return url
