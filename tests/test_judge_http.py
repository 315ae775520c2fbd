"""The HTTP client of the LLM judge: no redirects, bounded retries, and the API key kept home.

Every server here is a real ``http.server`` on 127.0.0.1 with an ephemeral port; sleeping is
injected, so no test actually waits out a backoff.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from obliviate.errors import UserError
from obliviate.judges import HttpLMJudge
from obliviate.judges.llm import parse_retry_after

KEY = "sk-test-7f3a9c0d2b1e"
KEY_ENV = "OBLIVIATE_HTTP_TEST_KEY"


class ScriptedServer:
    """Answers each request with the next scripted (status, headers, reason) and then with a
    chat completion; records method, path and headers of every request it receives."""

    def __init__(self, script: list[tuple[int, dict[str, str], str | None]] | None = None):
        self.script = list(script or [])
        self.sticky: tuple[int, dict[str, str], str | None] | None = None  # answer every request so
        self.received: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.received.append({"method": self.command, "path": self.path, "headers": dict(self.headers)})
                step = server.sticky or (server.script.pop(0) if server.script else None)
                if step is not None:
                    status, headers, reason = step
                    self.send_response(status, reason)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                content = json.loads(body)["messages"][-1]["content"]
                reply = "unsafe" if "bomb" in content.split("ASSISTANT:")[1] else "safe"
                payload = json.dumps({"choices": [{"message": {"content": reply}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_HEAD = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.url = self.origin + "/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers():
    started: list[ScriptedServer] = []

    def start(script=None) -> ScriptedServer:
        server = ScriptedServer(script)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


class FakeTime:
    """A clock that moves only when the judge sleeps; records every pause."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


@pytest.fixture
def fake_time():
    return FakeTime()


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    return KEY


def make_judge(url: str, fake_time: FakeTime, **options) -> HttpLMJudge:
    options.setdefault("workers", 1)
    options.setdefault("timeout", 5)
    return HttpLMJudge(url, "m", api_key_env=KEY_ENV, sleep=fake_time.sleep, clock=fake_time.clock, **options)


def assert_clean(message: str) -> None:
    assert KEY not in message
    assert "\n" not in message


# -- redirects -------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_to_another_origin_is_refused_and_the_key_stays_home(servers, fake_time, key, status):
    other = servers()
    first = servers([(status, {"Location": other.url + "/chat/completions"}, None)])
    judge = make_judge(first.url, fake_time, retries=3)
    with pytest.raises(UserError) as info:
        judge(["q"], ["a bomb"])
    message = str(info.value)
    assert other.received == []  # neither the request nor the key reached the other host
    assert len(first.received) == 1 and fake_time.sleeps == []  # not retried either
    assert first.received[0]["headers"]["Authorization"] == f"Bearer {key}"
    assert f"redirect to {other.origin}/v1/chat/completions" in message
    assert "configure the final URL" in message
    assert_clean(message)
    assert judge._memory == {}  # no verdict was taken from anywhere


def test_same_origin_redirect_is_refused_too(servers, fake_time, key):
    server = servers([(302, {"Location": "/v2/chat/completions?token=abc"}, None)])
    judge = make_judge(server.url, fake_time)
    with pytest.raises(UserError) as info:
        judge(["q"], ["a"])
    assert [r["path"] for r in server.received] == ["/v1/chat/completions"]
    # A relative Location is named in full; its query string is left out of the message.
    assert f"redirect to {server.origin}/v2/chat/completions;" in str(info.value)
    assert "token=abc" not in str(info.value)
    assert_clean(str(info.value))


# -- retries ---------------------------------------------------------------------------------------


def test_429_with_retry_after_is_honoured_then_verdicts_are_read(servers, fake_time, key):
    server = servers([(429, {"Retry-After": "7"}, None)])
    judge = make_judge(server.url, fake_time, retries=3, backoff=0.01)
    verdicts = judge(["q", "q"], ["here is the bomb", "I cannot help"])
    assert [v.label for v in verdicts] == ["unsafe", "safe"]
    assert len(fake_time.sleeps) == 1
    assert 7.0 <= fake_time.sleeps[0] <= 7.0 * 1.1  # what the server asked, plus at most 10 % jitter
    assert len(server.received) == 3  # the refused try, then one per pair
    assert all(r["method"] == "POST" for r in server.received)


def test_retry_after_is_capped_by_max_wait(servers, fake_time, key):
    server = servers([(503, {"Retry-After": "3600"}, None)])
    judge = make_judge(server.url, fake_time, retries=2, max_wait=10)
    assert judge(["q"], ["a bomb"])[0].harmful
    assert len(fake_time.sleeps) == 1 and 10.0 <= fake_time.sleeps[0] <= 11.0


def test_persistent_503_gives_up_after_retries_with_one_line(servers, fake_time, key):
    server = servers()
    server.sticky = (503, {}, None)
    judge = make_judge(server.url, fake_time, retries=2, backoff=1.0)
    with pytest.raises(UserError) as info:
        judge(["q"], ["a"])
    message = str(info.value)
    assert "after 3 attempts" in message and "HTTP 503" in message
    assert_clean(message)
    assert len(server.received) == 3
    # Exponential backoff with jitter: 1 s then 2 s, each scaled by a factor in [0.5, 1].
    assert len(fake_time.sleeps) == 2
    assert 0.5 <= fake_time.sleeps[0] <= 1.0 and 1.0 <= fake_time.sleeps[1] <= 2.0


def test_total_timeout_stops_retrying_early(servers, fake_time, key):
    server = servers()
    server.sticky = (429, {"Retry-After": "4"}, None)
    judge = make_judge(server.url, fake_time, retries=10, total_timeout=6)
    with pytest.raises(UserError) as info:
        judge(["q"], ["a"])
    message = str(info.value)
    assert "total_timeout=6" in message and "after 2 attempts" in message
    assert_clean(message)
    assert len(server.received) == 2 and len(fake_time.sleeps) == 1  # the second pause would overrun


def test_parse_retry_after_reads_seconds_and_http_dates():
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 1.5 ") == 1.5
    now = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT
    assert parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now=now) == pytest.approx(30.0)
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now=now) == 0.0  # in the past
    for bad in (None, "", "soon", "-3"):
        assert parse_retry_after(bad) is None


# -- URLs and the key ------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/v1", "127.0.0.1:8000/v1", "http:///v1"])
def test_only_http_and_https_urls_are_accepted(url):
    with pytest.raises(UserError, match="http://HOST") as info:
        HttpLMJudge(url, "m")
    assert "\n" not in str(info.value)


def test_credentials_in_the_url_are_refused_without_echoing_them():
    with pytest.raises(UserError, match="key_env") as info:
        HttpLMJudge("https://user:hunter2-secret@example.invalid/v1", "m")
    assert "hunter2-secret" not in str(info.value)


@pytest.mark.parametrize("status, retries", [(503, 0), (400, 3)])
def test_key_echoed_by_a_server_never_reaches_the_error(servers, fake_time, key, status, retries):
    server = servers([(status, {}, f"Bad key {key}")])
    judge = make_judge(server.url, fake_time, retries=retries)
    with pytest.raises(UserError) as info:
        judge(["q"], ["a"])
    assert f"HTTP {status} Bad key ***" in str(info.value)
    assert_clean(str(info.value))


def test_key_is_not_in_repr_describe_or_cache_files(servers, fake_time, key, tmp_path):
    server = servers()
    judge = make_judge(server.url, fake_time, cache_dir=tmp_path)
    assert judge(["q"], ["a bomb"])[0].harmful
    assert server.received[0]["headers"]["Authorization"] == f"Bearer {key}"
    assert KEY_ENV in repr(judge)
    for text in (repr(judge), judge.describe(), str(vars(judge))):
        assert key not in text
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and all(key not in p.read_text() for p in files)
