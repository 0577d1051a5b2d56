"""The root key stays secret: Airflow's masker learns it, and nothing the client raises or logs holds it.

Both properties are checked so that they can fail: the masker test uses a root key that only the hook
itself can have registered, and the leak test talks to a server that puts the root key everywhere an
error can carry text back (title, detail, ``type``, ``requestId``, ``errors[]``, headers, the reason
phrase, a body that is not JSON).
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import traceback
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
import requests

from airflow_provider_unkey.client import RetryPolicy, UnkeyClient
from airflow_provider_unkey.exceptions import UnkeyAPIError, UnkeyError
from airflow_provider_unkey.hooks.unkey import UnkeyHook
from tests.test_client import BackgroundServer

#: Retries without waiting: the leak test wants the retry log lines, not the time they take.
# A 429 uses no attempt: max_elapsed ends its waits (the 1 s floor would cross it) rather than max_attempts.
NO_WAIT = RetryPolicy(max_attempts=2, max_elapsed=0.5, initial_wait=0.0, max_wait=0.0, jitter=0.0)


def fresh_root_key() -> str:
    """A root key no earlier test can have registered with the process-wide masker."""
    return f"unkey_root_{uuid.uuid4().hex}"


def use_connection(monkeypatch: pytest.MonkeyPatch, host: str, password: str) -> None:
    """Make ``unkey_default`` an Unkey connection to ``host`` with ``password`` as the root key."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_UNKEY_DEFAULT", json.dumps({"conn_type": "unkey", "host": host, "password": password})
    )


# --- Airflow's secrets masker learns the root key from the hook ----------------------------------------
@pytest.mark.parametrize(
    "stored",
    [
        pytest.param("{key}", id="as-is"),
        # Airflow masks a connection's password as stored, blanks included; the hook strips them and
        # sends the rest, so only the hook's own mask_secret covers the key that goes on the wire.
        pytest.param("  {key}\n", id="padded"),
    ],
)
def test_hook_registers_the_root_key_with_airflows_masker(
    monkeypatch: pytest.MonkeyPatch, stored: str
) -> None:
    from airflow.sdk._shared.secrets_masker import _secrets_masker, redact

    secret = fresh_root_key()
    use_connection(monkeypatch, "http://127.0.0.1:9", stored.format(key=secret))
    line = f"POST /v2/keys.migrateKeys Authorization: Bearer {secret}"
    assert redact(line) == line, "the key is new: nothing may mask it yet"

    client = UnkeyHook().client

    assert client._root_key == secret
    assert re.escape(secret) in _secrets_masker().patterns
    assert redact(line) == "POST /v2/keys.migrateKeys Authorization: Bearer ***"


def test_hook_registers_a_proxys_password_with_airflows_masker(monkeypatch: pytest.MonkeyPatch) -> None:
    import base64
    from urllib.parse import quote

    from airflow.sdk._shared.secrets_masker import redact

    password = f"proxy/{uuid.uuid4().hex}"  # '/' must be percent-encoded in the URL
    token = base64.b64encode(f"svc:{password}".encode()).decode()
    proxy = f"http://svc:{quote(password, safe='')}@proxy.corp:3128"
    monkeypatch.setenv(
        "AIRFLOW_CONN_UNKEY_DEFAULT",
        json.dumps(
            {
                "conn_type": "unkey",
                "host": "http://127.0.0.1:9",
                "password": fresh_root_key(),
                "extra": {"proxy": proxy},
            }
        ),
    )
    lines = [f"through {proxy}", f"password {password}", f"Proxy-Authorization: Basic {token}"]
    assert [redact(line) for line in lines] == lines, "the password is new: nothing may mask it yet"

    client = UnkeyHook().client

    assert client.proxy == "http://svc:***@proxy.corp:3128"
    redacted = [redact(line) for line in lines]
    assert redacted[1:] == ["password ***", "Proxy-Authorization: Basic ***"]
    assert quote(password, safe="") not in redacted[0] and "***" in redacted[0]


# --- a server that echoes the root key everywhere -----------------------------------------------------
class EchoServer(BackgroundServer):
    """Answers every request with an error that repeats the caller's bearer token everywhere it can.

    The first path segment picks the answer: ``/400``, ``/401``, ``/429``, ``/500``, ``/503`` answer that
    status with Unkey's JSON error body; ``/text`` answers 500 with a plain-text body and the token as
    the reason phrase.
    """

    def __init__(self) -> None:
        super().__init__(_EchoHandler)
        self.echoed: list[str] = []

    def url_for(self, answer: str) -> str:
        return f"{self.url}/{answer}"


class _EchoHandler(BaseHTTPRequestHandler):
    server: EchoServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        self.server.echoed.append(token)
        answer = self.path.strip("/").split("/", 1)[0]
        if answer == "text":
            body = f"upstream rejected root key {token}".encode()
            self.send_response(500, f"Bad key {token}")
            self.send_header("Content-Type", "text/plain")
        else:
            status = int(answer)
            error: dict[str, Any] = {
                "title": f"Refused {token}",
                "detail": f"the root key {token} was refused",
                "status": status,
                "type": f"https://unkey.com/docs/errors/unkey/{token}",
            }
            if status == 400:
                error["errors"] = [
                    {
                        "location": f"body.{token}",
                        "message": f"{token} is not allowed",
                        "fix": f"drop {token}",
                    }
                ]
            body = json.dumps({"meta": {"requestId": f"req_{token}"}, "error": error}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/problem+json")
            if status == 429:
                self.send_header("Retry-After", "0")
                self.send_header("RateLimit-Limit", "10")
                self.send_header("RateLimit-Remaining", "0")
                self.send_header("RateLimit-Reset", "0")
                self.send_header("RateLimit-Policy", f"10;w=60;key={token}")
        self.send_header("X-Echo", token)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


def _texts_of(exc: BaseException) -> list[str]:
    """Every form in which an error reaches a person, a log or another process."""
    pickled = pickle.dumps(exc)
    clone = pickle.loads(pickled)
    return [
        str(exc),
        repr(exc),
        repr(exc.args),
        repr(vars(exc)),
        "".join(traceback.format_exception(exc)),
        pickled.decode("latin-1"),
        str(clone),
        repr(vars(clone)),
    ]


@pytest.mark.parametrize("answer", ["400", "401", "429", "500", "503", "text"])
def test_root_key_echoed_by_the_server_never_leaves_the_client(
    echo_server: EchoServer, caplog: pytest.LogCaptureFixture, answer: str
) -> None:
    secret = fresh_root_key()
    client = UnkeyClient(secret, echo_server.url_for(answer), retry=NO_WAIT)
    received: list[str] = []

    def keep(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        received.append(f"{response.reason} {dict(response.headers)} {response.text}")

    client.session.hooks["response"].append(keep)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(UnkeyError) as info:
        client.migrate_keys("mig_test", "api_test", [{"hash": "abc"}])
    client.close()

    # The server did put the key on the wire, in the reason phrase, the headers and the body.
    assert echo_server.echoed and set(echo_server.echoed) == {secret}
    assert received and all(text.count(secret) >= 3 for text in received)
    err = info.value
    assert isinstance(err, UnkeyAPIError)
    assert err.status == (500 if answer == "text" else int(answer))
    # ... and nothing the client made of it holds the key.
    texts = _texts_of(err)
    texts += [record.getMessage() for record in caplog.records]
    texts += [caplog.text]
    leaks = [text for text in texts if secret in text]
    assert not leaks, leaks
    # What was redacted is still there, with the key masked.
    assert "***" in str(err)
    if answer == "400":
        assert err.errors and all("***" in e.message and "***" in e.location for e in err.errors)
    if answer in ("429", "500", "503", "text"):
        assert caplog.records, "the retry should have logged"
    if answer == "429":
        assert err.rate_limit["RateLimit-Limit"] == "10"
        assert err.rate_limit["RateLimit-Policy"] == "10;w=60;key=***"


def test_hook_test_connection_message_hides_an_echoed_root_key(
    monkeypatch: pytest.MonkeyPatch, echo_server: EchoServer
) -> None:
    secret = fresh_root_key()
    use_connection(monkeypatch, echo_server.url_for("401"), secret)
    ok, message = UnkeyHook().test_connection()
    assert echo_server.echoed == [secret]
    assert not ok and "401" in message and "***" in message
    assert secret not in message
