"""The extra link from a ``MigrateKeysOperator`` task to its API in Unkey's dashboard.

Unkey's dashboard shows an API at ``https://app.unkey.com/<workspace slug>/apis/<api id>`` (the route
``/[workspaceSlug]/apis/[apiId]`` of its Next.js app). No API call returns the workspace's slug, so the
link opens the API's page when the ``unkey`` connection names the workspace's dashboard URL in its
extra ``dashboard_url`` (``https://app.unkey.com/acme``, as the browser shows it once signed in), and
the dashboard's home otherwise. A connection to another base URL than Unkey's (a self-hosted Unkey, the
emulator) has a link only when ``dashboard_url`` says where its dashboard is.

The link belongs to each task instance: the API id may be templated or mapped, and the connection is
read only when the task runs. So the task pushes the URL to XCom (:func:`push_dashboard_url`) and
:class:`UnkeyDashboardLink` reads it back for its task instance.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from airflow.sdk import BaseOperatorLink

from airflow_provider_unkey.base_url import DEFAULT_BASE_URL

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context

__all__ = ["DASHBOARD_URL", "XCOM_KEY", "UnkeyDashboardLink", "dashboard_url", "push_dashboard_url"]

#: Unkey's dashboard, for the API at Unkey's own base URL.
DASHBOARD_URL = "https://app.unkey.com"
#: The XCom key the task pushes the link's URL under (and the link's own key: Airflow stores it there).
XCOM_KEY = "unkey_dashboard_url"
#: The connection extra naming the workspace's dashboard URL.
DASHBOARD_EXTRA = "dashboard_url"


def dashboard_url(base_url: str, api_id: str, dashboard: str | None = None) -> str | None:
    """Where the dashboard shows ``api_id``; ``None`` when the dashboard is not known.

    >>> dashboard_url("https://api.unkey.com", "api_123", "https://app.unkey.com/acme")
    'https://app.unkey.com/acme/apis/api_123'
    >>> dashboard_url("https://api.unkey.com", "api_123")
    'https://app.unkey.com/'
    >>> dashboard_url("http://127.0.0.1:8787", "api_123") is None
    True

    :param base_url: the base URL of the API the keys went to.
    :param dashboard: the connection's ``dashboard_url``: the workspace's dashboard URL
        (``https://app.unkey.com/<workspace slug>``) gives the API's page; a dashboard URL without a
        path gives its home.
    """
    if dashboard:
        root = dashboard.strip().rstrip("/")
        if "://" not in root:
            root = f"https://{root}"
        parts = urlsplit(root)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        return f"{root}/apis/{quote(api_id, safe='')}" if parts.path.strip("/") else f"{root}/"
    if base_url.rstrip("/") == DEFAULT_BASE_URL:
        return f"{DASHBOARD_URL}/"
    return None


def _dashboard_extra(extras: Mapping[str, Any]) -> str | None:
    for key in (DASHBOARD_EXTRA, f"extra__unkey__{DASHBOARD_EXTRA}"):
        value = extras.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def push_dashboard_url(
    task: BaseOperator,
    context: Context,
    conn_id: str | None = None,
    base_url: str | None = None,
    api_id: str | None = None,
) -> str:
    """Push the URL of the task instance's :class:`UnkeyDashboardLink` to XCom, ``""`` when there is none.

    Called with the task alone as it starts, so that the XCom the link reads exists from then on (a
    missing XCom is an error line in the task's log); then with the connection, the base URL the
    client uses and the rendered ``api_id``. Nothing is pushed with ``do_xcom_push=False``. A link never
    fails a task: a connection that cannot be read leaves the link empty, with a warning.

    :return: the URL pushed (``""``: none).
    """
    if not task.do_xcom_push:
        return ""
    url = None
    if conn_id is not None and base_url is not None and api_id is not None:
        try:
            from airflow_provider_unkey.hooks.unkey import UnkeyHook

            extras = UnkeyHook.get_connection(conn_id).extra_dejson or {}
            url = dashboard_url(base_url, api_id, _dashboard_extra(extras))
        except Exception:
            task.log.warning("The link to Unkey's dashboard is left out", exc_info=True)
    context["ti"].xcom_push(key=XCOM_KEY, value=url or "")
    return url or ""


class UnkeyDashboardLink(BaseOperatorLink):
    """A button on a migration task instance: its API in Unkey's dashboard (see the module's notes).

    Airflow calls :meth:`get_link` when the task instance ends and keeps the URL in XCom under
    :data:`XCOM_KEY`, where the UI reads it. The button is disabled when the task pushed no URL: with
    ``validate_only``, ``do_xcom_push=False``, or a base URL whose dashboard the connection does not name.
    """

    name = "Unkey dashboard"

    @property
    def xcom_key(self) -> str:
        """The key the task pushed the URL under: Airflow stores the link there, once."""
        return XCOM_KEY

    # ti_key: a TaskInstanceKey, whose module differs between Airflow 3.1 and 3.2.
    def get_link(self, operator: BaseOperator, *, ti_key: Any) -> str:
        """The URL the task instance pushed, or ``""`` (never raises: it runs as the task ends)."""
        from airflow.sdk.execution_time.xcom import XCom

        try:
            url = XCom.get_value(ti_key=ti_key, key=XCOM_KEY)
        except Exception:
            return ""
        return url if isinstance(url, str) else ""
