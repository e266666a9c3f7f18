"""The shared retry policy of every remote call (what is retried, how long the service
asked to wait) and GitHub's own rules (its 403 rate limits, its pull request limits)."""

from __future__ import annotations

import email.utils

import pytest
from multidict import CIMultiDict

from mwai.clients.github import (
    BODY_MAX_CHARS,
    SECONDARY_LIMIT_WAIT_S,
    TITLE_MAX_CHARS,
    cut_body,
    cut_title,
    rate_limit_wait_s,
)
from mwai.clients.http import RATE_LIMIT_RESET_MAX_S, retryable_status, server_wait_s
from mwai.clients.llm import api_base

NOW_S = 1_700_000_000.0


@pytest.mark.parametrize("status", [408, 409, 429, 500, 501, 502, 503, 504, 520, 521, 522,
                                    523, 524, 529, 599])
def test_what_the_official_sdks_retry_is_retried(status: int) -> None:
    assert retryable_status(status)


@pytest.mark.parametrize("status", [200, 201, 400, 401, 403, 404, 410, 422])
def test_answers_retrying_cannot_change_are_final(status: int) -> None:
    assert not retryable_status(status)


def headers(**values: str) -> CIMultiDict[str]:
    return CIMultiDict({name.replace("_", "-"): value for name, value in values.items()})


def test_retry_after_in_seconds_or_as_an_http_date_whatever_its_case() -> None:
    assert server_wait_s(CIMultiDict({"Retry-After": "7"}), NOW_S) == 7.0
    assert server_wait_s(CIMultiDict({"retry-after": "2.5"}), NOW_S) == 2.5
    date = email.utils.formatdate(NOW_S + 30, usegmt=True)
    assert server_wait_s(headers(retry_after=date), NOW_S) == pytest.approx(30.0)
    assert server_wait_s(headers(retry_after="soon"), NOW_S) is None
    assert server_wait_s(headers(), NOW_S) is None


def test_github_rate_limit_reset_is_honoured_only_when_the_quota_is_spent() -> None:
    spent = headers(x_ratelimit_remaining="0", x_ratelimit_reset=str(int(NOW_S + 42)))
    assert server_wait_s(spent, NOW_S) == 42.0
    left = headers(x_ratelimit_remaining="12", x_ratelimit_reset=str(int(NOW_S + 42)))
    assert server_wait_s(left, NOW_S) is None
    past = headers(x_ratelimit_remaining="0", x_ratelimit_reset=str(int(NOW_S - 5)))
    assert server_wait_s(past, NOW_S) == 0.0
    # A reset days away is a skewed clock: capped.
    far = headers(x_ratelimit_remaining="0", x_ratelimit_reset=str(int(NOW_S + 5 * 86400)))
    assert server_wait_s(far, NOW_S) == RATE_LIMIT_RESET_MAX_S
    # Retry-After wins when both are sent.
    both = headers(retry_after="3", x_ratelimit_remaining="0",
                   x_ratelimit_reset=str(int(NOW_S + 42)))
    assert server_wait_s(both, NOW_S) == 3.0


def test_github_403_rate_limits_are_recognised_by_headers_and_body() -> None:
    assert rate_limit_wait_s(403, headers(x_ratelimit_remaining="0"), b"{}") == 0.0
    assert rate_limit_wait_s(403, headers(retry_after="60"), b"{}") == 0.0
    secondary = b'{"message": "You have exceeded a secondary rate limit. Please wait."}'
    assert rate_limit_wait_s(403, headers(), secondary) == SECONDARY_LIMIT_WAIT_S
    assert rate_limit_wait_s(429, headers(), b"{}") == 0.0
    refused = b'{"message": "Resource not accessible by integration"}'
    assert rate_limit_wait_s(403, headers(x_ratelimit_remaining="4999"), refused) is None
    assert rate_limit_wait_s(404, headers(x_ratelimit_remaining="0"), b"{}") is None


def test_a_long_title_is_cut_at_a_word_within_githubs_limit() -> None:
    summary = " ".join(["word"] * 70)  # 349 characters
    title = cut_title(f"PROJ-7: {summary}")
    assert len(title) <= TITLE_MAX_CHARS and title.endswith("word...")
    assert title.startswith("PROJ-7: word word")
    assert cut_title("PROJ-7: short  one") == "PROJ-7: short one"
    unbroken = cut_title("PROJ-7: " + "x" * 400)  # no space to cut at: cut inside the word
    assert len(unbroken) == TITLE_MAX_CHARS


def test_a_long_body_is_cut_within_githubs_limit_and_says_so() -> None:
    body = cut_body("line\n" * 20_000)
    assert len(body) <= BODY_MAX_CHARS and body.endswith("pull request body)")
    assert cut_body("short") == "short"


@pytest.mark.parametrize("given, base", [
    ("https://api.anthropic.com", "https://api.anthropic.com"),
    ("https://api.anthropic.com/", "https://api.anthropic.com"),
    ("https://api.anthropic.com/v1", "https://api.anthropic.com"),
    ("https://proxy.example/anthropic/v1/", "https://proxy.example/anthropic"),
])
def test_anthropic_base_url_with_or_without_v1(given: str, base: str) -> None:
    assert api_base("anthropic", given) == base


@pytest.mark.parametrize("given, base", [
    ("https://api.openai.com/v1", "https://api.openai.com/v1"),
    ("https://api.openai.com", "https://api.openai.com/v1"),
    ("http://127.0.0.1:11434/", "http://127.0.0.1:11434/v1"),
    ("https://generativelanguage.googleapis.com/v1beta/openai/",
     "https://generativelanguage.googleapis.com/v1beta/openai"),
])
def test_openai_base_url_with_or_without_v1(given: str, base: str) -> None:
    assert api_base("openai", given) == base
