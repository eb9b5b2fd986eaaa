"""API keys: the file's format, 401 / 403 / 429, constant-time lookup of hashed keys, the per-key token bucket,
and the settings rule that a non-loopback bind needs a keys file."""

from __future__ import annotations

import hashlib

import pytest

from stream_ctr.config import ConfigError, Settings
from stream_ctr.serving.keys import ApiKeys


def _line(key: str, scopes: str) -> str:
    return f"{hashlib.sha256(key.encode()).hexdigest()} {scopes}\n"


KEYS = "# comment\n\n" + _line("scorer", "score") + _line("reader", "read_users") + _line("root", "score,admin")


def test_each_key_has_exactly_its_scopes():
    keys = ApiKeys.parse(KEYS)
    assert keys.check("Bearer scorer", "score") is None and keys.check("bearer root", "admin") is None
    assert (
        keys.check("Bearer reader", "score").status == 403 and "'score'" in keys.check("Bearer reader", "score").message
    )
    assert keys.check("Bearer scorer", "read_users").status == 403
    for header in (None, "", "Bearer ", "Basic c2NvcmVyOg==", "Bearer nobody"):
        denied = keys.check(header, "score")
        assert denied.status == 401 and denied.headers == {"WWW-Authenticate": "Bearer"}


@pytest.mark.parametrize(
    "text",
    ["abc score\n", _line("k", "score").replace("score", "everything"), _line("k", ""), "zz" * 32 + " score\n"],
)
def test_a_malformed_line_is_refused_naming_file_and_line(text):
    with pytest.raises(ValueError, match=r"keys.txt:2: expected"):
        ApiKeys.parse("# header\n" + text, where="keys.txt")


def test_the_file_holds_hashes_never_keys(tmp_path):
    path = tmp_path / "keys"
    path.write_text(KEYS)
    assert "scorer" not in path.read_text() and ApiKeys.load(str(path)).check("Bearer scorer", "score") is None


def test_a_key_over_its_rate_gets_429_with_retry_after_and_a_forwarded_request_spends_nothing(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("stream_ctr.serving.keys.time.monotonic", lambda: clock[0])
    keys = ApiKeys.parse(KEYS, rate=5.0)
    assert [keys.check("Bearer scorer", "score") is None for _ in range(6)] == [True] * 5 + [False]
    denied = keys.check("Bearer scorer", "score")
    assert denied.status == 429 and denied.headers == {"Retry-After": "1"}
    assert keys.check("Bearer scorer", "score", count=False) is None  # admitted by the worker that forwarded it
    assert keys.check("Bearer root", "score") is None  # buckets are per key
    clock[0] += 0.2  # one token back at 5/s
    assert keys.check("Bearer scorer", "score") is None and keys.check("Bearer scorer", "score").status == 429


def test_binding_beyond_loopback_needs_a_keys_file():
    with pytest.raises(ConfigError, match="STREAM_CTR_WEB_BIND.*STREAM_CTR_API_KEYS_FILE"):
        Settings.from_env({"STREAM_CTR_WEB_BIND": "0.0.0.0"})
    Settings.from_env({"STREAM_CTR_WEB_BIND": "0.0.0.0", "STREAM_CTR_API_KEYS_FILE": "/run/secrets/api_keys"})
    Settings.from_env({"STREAM_CTR_WEB_BIND": "127.0.0.1"})
