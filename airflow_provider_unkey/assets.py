"""Airflow assets for Unkey: ``unkey://<host>/<api_id>``, the API a migration's keys land in.

A ``MigrateKeysOperator`` task declares its API as an outlet, so that a DAG scheduled on it
(``schedule=[unkey_asset("api_123")]``) runs when keys have landed; at the end of a successful run the
task puts its counts in the asset event's ``extra`` (:func:`event_extra`).

The URI names the API by the host of Unkey's API (``api.unkey.com``, or a self-hosted Unkey's host and
port) and its id, the one path segment: ``unkey://api.unkey.com/api_123``. The provider registers the
``unkey`` scheme (``get_provider_info()["asset-uris"]``): Airflow calls :func:`sanitize_uri` for every
``unkey://`` asset a DAG declares, so that a malformed one fails the DAG's parse with a clear message
and two spellings of one API (``API.Unkey.com``) are one asset; :func:`create_asset` is the factory.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlsplit

from airflow.sdk import Asset

from airflow_provider_unkey.base_url import DEFAULT_BASE_URL

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.types import Logger

__all__ = [
    "SCHEME",
    "add_default_outlets",
    "api_host",
    "create_asset",
    "default_outlets",
    "event_extra",
    "is_unkey_asset",
    "record_asset_events",
    "sanitize_uri",
    "split_uri",
    "unkey_asset",
]

#: The URI scheme of an Unkey API asset.
SCHEME = "unkey"
_DEFAULT_PORTS = {"https": 443, "http": 80}
#: What a Jinja template starts with: an ``api_id`` holding one is known only once rendered.
_TEMPLATE_MARKS = ("{{", "{%", "{#")


def _form(uri: str) -> str:
    return f"the form is unkey://<host>/<api_id>, such as unkey://api.unkey.com/api_123; got {uri!r}"


def _checked_api_id(api_id: object, uri: str) -> str:
    if not isinstance(api_id, str) or not api_id.strip():
        raise ValueError(f"An unkey:// asset needs the API id as its path: {_form(uri)}")
    if api_id != api_id.strip() or any(c in api_id for c in "/?#") or any(c.isspace() for c in api_id):
        raise ValueError(
            f"An unkey:// asset's API id is one path segment, without spaces, '/', '?' or '#': {_form(uri)}"
        )
    return api_id


def api_host(base_url: str = DEFAULT_BASE_URL) -> str:
    """The host (and port, unless it is the scheme's default) an asset names Unkey's API by.

    >>> api_host("https://api.unkey.com")
    'api.unkey.com'
    >>> api_host("http://127.0.0.1:8787/")
    '127.0.0.1:8787'

    A path prefix of a self-hosted Unkey's base URL is not part of it.

    :raises ValueError: when ``base_url`` names no host.
    """
    url = base_url.strip()
    parts = urlsplit(url if "://" in url else f"https://{url}")
    if not parts.hostname:
        raise ValueError(f"Unkey's base URL must be http(s)://host[:port], got {base_url!r}")
    host = parts.hostname.lower()
    if ":" in host:  # IPv6
        host = f"[{host}]"
    port = parts.port
    return host if port is None or port == _DEFAULT_PORTS.get(parts.scheme) else f"{host}:{port}"


def unkey_asset(api_id: str, base_url: str = DEFAULT_BASE_URL) -> Asset:
    """The asset of an Unkey API: ``unkey://<host>/<api_id>``, to declare as an outlet or schedule on.

    >>> unkey_asset("api_123").uri
    'unkey://api.unkey.com/api_123'
    >>> unkey_asset("api_123", base_url="http://127.0.0.1:8787").uri
    'unkey://127.0.0.1:8787/api_123'

    :param api_id: the API the keys go to.
    :param base_url: the base URL of Unkey's API, as the ``unkey`` connection has it (its host and
        port name the API; the default is Unkey's, ``https://api.unkey.com``).
    :raises ValueError: when the API id is empty or not one path segment, or the URL names no host.
    """
    return create_asset(api_id=api_id, base_url=base_url)


def create_asset(
    *, api_id: str, base_url: str = DEFAULT_BASE_URL, extra: dict[str, Any] | None = None
) -> Asset:
    """The factory the provider registers for the ``unkey`` scheme: :func:`unkey_asset` with an ``extra``."""
    uri = f"{SCHEME}://{api_host(base_url)}/{api_id}"
    _checked_api_id(api_id, uri)
    return Asset(uri=uri, extra=extra or {})


def sanitize_uri(uri: SplitResult) -> SplitResult:
    """Check and normalise an ``unkey://`` URI (Airflow's handler for the scheme).

    The host is lower-cased; the API id is the one path segment (a trailing ``/`` is dropped).

    :raises ValueError: naming the form, when the host or the API id is missing, the path has more
        than one segment, or the URI carries user info, a query or a fragment.
    """
    text = f"{uri.scheme}://{uri.netloc}{uri.path}"
    text += (f"?{uri.query}" if uri.query else "") + (f"#{uri.fragment}" if uri.fragment else "")
    if not uri.netloc:
        raise ValueError(f"An unkey:// asset needs the host of Unkey's API: {_form(text)}")
    if "@" in uri.netloc:
        raise ValueError(f"An unkey:// asset carries no user info or credentials: {_form(text)}")
    if uri.query or uri.fragment:
        raise ValueError(f"An unkey:// asset has no query or fragment: {_form(text)}")
    api_id = _checked_api_id(uri.path.strip("/"), text)
    return uri._replace(scheme=SCHEME, netloc=uri.netloc.lower(), path=f"/{api_id}")


def is_unkey_asset(outlet: object) -> bool:
    """Whether ``outlet`` is an asset with an ``unkey://`` URI."""
    return isinstance(outlet, Asset) and outlet.uri.startswith(f"{SCHEME}://")


def split_uri(uri: str) -> tuple[str, str]:
    """``(host, api_id)`` of an ``unkey://`` URI."""
    parts = urlsplit(uri)
    return parts.netloc, parts.path.strip("/")


def default_outlets(api_id: object, validate_only: object) -> list[Asset]:
    """The outlets of a task that declares none: its API's asset, when ``api_id`` is literal text.

    A templated ``api_id``, or one from an ``XComArg`` or ``expand``, is known only when the task
    runs, after Airflow has read the outlets: then there is none. A ``validate_only`` task sends
    nothing, so it declares none either. The host is Unkey's: the connection is not read when a DAG is
    parsed.
    """
    if validate_only is not False or not isinstance(api_id, str):
        return []
    if any(mark in api_id for mark in _TEMPLATE_MARKS):
        return []
    try:
        return [unkey_asset(api_id)]
    except ValueError:
        return []  # the argument checks name what is wrong with it


def add_default_outlets(kwargs: dict[str, Any], api_id: object, validate_only: object) -> None:
    """Give an operator's ``kwargs`` :func:`default_outlets`, unless they (or their ``default_args``)
    name outlets: a task given ``outlets`` keeps them (``outlets=[]`` declares none)."""
    if "outlets" not in kwargs and "outlets" not in (kwargs.get("default_args") or {}):
        kwargs["outlets"] = default_outlets(api_id, validate_only)


def event_extra(
    context: Context, result: Mapping[str, Any], *, api_id: str, migration_id: str, base_url: str | None
) -> dict[str, Any]:
    """What a successful run puts in its asset events' ``extra``: which run, into what, and its counts.

    :param result: the run's summary, as the task returns it.
    :param base_url: where the keys went (``None`` when nothing was sent: ``validate_only``).
    """
    map_index = getattr(context["ti"], "map_index", -1)
    return {
        "migration_id": migration_id,
        "api_id": api_id,
        "base_url": base_url,
        "run_id": context["run_id"],
        "map_index": -1 if map_index is None else map_index,
        "total": result["total"],
        "migrated": result["migrated"],
        "failed": result["failed"],
        "failed_by_reason": dict(result["failed_by_reason"]),
        "skipped": result["skipped"],
        "resumed": result.get("resumed", 0),
        "validate_only": bool(result.get("dry_run", False)),
        "outputs": dict(result.get("outputs", {})),
    }


def record_asset_events(
    log: Logger, outlets: Iterable[Any], context: Context, extra: Mapping[str, Any]
) -> list[str]:
    """Put ``extra`` in the asset event of every ``unkey://`` outlet; warn of one that names another API.

    Airflow records an event for each of a task's outlets when the task succeeds; this only fills in
    what those events carry.

    :return: the URIs of the assets whose events carry ``extra``.
    """
    events = context["outlet_events"]
    base_url = extra.get("base_url")
    host = api_host(base_url) if base_url else None
    recorded = []
    for outlet in outlets:
        if not is_unkey_asset(outlet):
            continue
        asset_host, asset_api = split_uri(outlet.uri)
        if asset_api != extra["api_id"] or (host is not None and asset_host != host):
            log.warning(
                "The outlet %s names another API than the one the keys went to (%s at %s): its asset"
                " event records this run all the same. Declare outlets=[unkey_asset(api_id, base_url=...)]"
                " with the connection's base URL.",
                outlet.uri,
                extra["api_id"],
                base_url,
            )
        events[outlet].extra.update(extra)
        recorded.append(outlet.uri)
    if recorded:
        log.info("Asset events for %s: %d keys migrated", ", ".join(recorded), extra["migrated"])
    return recorded
