"""The scoring client against a real HTTP server on loopback: it honours a shedding worker's Retry-After."""

import http.server
import threading

import orjson
import pytest

from stream_ctr.serving.client import ScoringClient, ScoringError


class _Shedding(http.server.BaseHTTPRequestHandler):
    """Answers 429 (Retry-After: 0) to the first ``shed`` requests, then 200; counts what it was sent."""

    shed = 2
    seen = 0

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen += 1
        if type(self).seen <= type(self).shed:
            self._answer(429, {"error": "over capacity"}, {"Retry-After": "0"})
        else:
            self._answer(200, {"items": []}, {})

    def _answer(self, status, body, headers):
        data = orjson.dumps(body)
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Shedding)  # the OS picks the port
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    _Shedding.seen = 0
    yield srv
    srv.shutdown()


def test_a_shed_request_is_asked_again_after_retry_after(server):
    _Shedding.shed = 2
    assert ScoringClient(f"http://127.0.0.1:{server.server_port}").score({"user_id": "u"}) == {"items": []}
    assert _Shedding.seen == 3


def test_a_request_still_shed_after_the_retries_is_an_error(server):
    _Shedding.shed = 10
    with pytest.raises(ScoringError) as err:
        ScoringClient(f"http://127.0.0.1:{server.server_port}", retries=2).score({"user_id": "u"})
    assert err.value.status == 429 and _Shedding.seen == 3
