"""The one secret scrubber: text (run errors, comments, agent and git output, alert
failures) and nested Sentry events (values, keys, credential headers)."""

from __future__ import annotations

from pathlib import Path

from mwai.cli import alert
from mwai.runner.git_env import auth_header_value, basic_credential
from mwai.scrub import MARKER, Scrubber, scrub
from mwai.telemetry import FILTERED, SECRET_HEADERS, event_scrubber
from tests.conftest import make_settings

# -- text ------------------------------------------------------------------------


def test_every_secret_is_replaced_everywhere_and_empty_ones_are_ignored() -> None:
    text = "token abc123 and key xyz789, again abc123"
    assert scrub(text, ["abc123", "", "xyz789"]) == "token *** and key ***, again ***"
    assert MARKER == "***"
    assert scrub("nothing secret here", ["", ""]) == "nothing secret here"
    assert scrub("nothing secret here", []) == "nothing secret here"


def test_short_secrets_are_replaced_too() -> None:
    # The agent's scrubber used to skip secrets under 4 characters: a short password
    # is still a password.
    assert scrub("password pw1 accepted", ["pw1"]) == "password *** accepted"
    assert scrub("x=Q", ["Q"]) == "x=***"


def test_a_secret_containing_another_is_replaced_whole() -> None:
    # Replacing the shorter first would leave the rest of the longer one ("***xyz").
    for secrets in (["abc123", "abc123xyz"], ["abc123xyz", "abc123"]):
        assert scrub("a abc123xyz b abc123 c", secrets) == "a *** b *** c"


def test_the_marker_is_chosen_by_the_caller() -> None:
    scrubber = Scrubber(["s3cr3t"], marker="[Filtered]")
    assert scrubber.text("it is s3cr3t") == "it is [Filtered]"


def test_secrets_may_be_any_iterable_and_are_kept_once() -> None:
    scrubber = Scrubber(iter(["dup-secret", "dup-secret", ""]))
    assert scrubber.secrets == ["dup-secret"]
    assert scrubber.text("dup-secret/dup-secret") == "***/***"


# -- nested events (Sentry) ---------------------------------------------------------


def test_walk_scrubs_strings_at_any_depth_keys_included() -> None:
    scrubber = Scrubber(["tok-123456"], marker=FILTERED)
    event = {
        "message": "sent tok-123456",
        "extra": {"nested": [{"deeper": ("a tok-123456 b", 42, None, 1.5, True)}]},
        "tok-123456": "a key that is a secret",
        7: "a non-string key",
    }
    cleaned = scrubber.walk(event)
    assert cleaned == {
        "message": "sent [Filtered]",
        "extra": {"nested": [{"deeper": ["a [Filtered] b", 42, None, 1.5, True]}]},
        "[Filtered]": "a key that is a secret",
        7: "a non-string key",
    }
    assert event["message"] == "sent tok-123456"  # the event itself is left as it was


def test_values_under_secret_keys_are_blanked_whatever_they_hold() -> None:
    scrubber = Scrubber([], marker=FILTERED, secret_keys=["Authorization", "cookie"])
    cleaned = scrubber.walk({
        "headers": {"AUTHORIZATION": "Bearer not-a-known-secret", "Cookie": {"sid": "1"},
                    "Accept": "*/*"},
        "pairs": [["authorization", "Basic xyz"], ("Cookie", "sid=1"), ["Accept", "*/*"],
                  ["Authorization", "x", "three items are not a pair"]],
    })
    assert cleaned["headers"] == {"AUTHORIZATION": "[Filtered]", "Cookie": "[Filtered]",
                                  "Accept": "*/*"}
    assert cleaned["pairs"] == [["authorization", "[Filtered]"], ["Cookie", "[Filtered]"],
                                ["Accept", "*/*"],
                                ["Authorization", "x", "three items are not a pair"]]


def test_sentry_events_blank_mwai_credential_headers() -> None:
    scrubber = event_scrubber(["hook-secret-xyz"])
    assert scrubber.marker == FILTERED == "[Filtered]"
    headers = {name: "value" for name in SECRET_HEADERS}
    headers["X-Hub-Signature-256"] = "sha256=abc"
    cleaned = scrubber.walk({"request": {"headers": headers, "data": "hook-secret-xyz"}})
    assert set(cleaned["request"]["headers"].values()) == {"[Filtered]"}
    assert cleaned["request"]["data"] == "[Filtered]"


# -- the callers' secrets -------------------------------------------------------------


def test_git_hides_the_token_and_its_auth_header_credential() -> None:
    token = "ghs_0123456789abcdef"
    scrubber = Scrubber([token, basic_credential(token)])
    header = auth_header_value(token)
    assert header == "Authorization: Basic " + basic_credential(token)
    text = f"fatal: unable to access https://x-access-token:{token}@github.com/ ({header})"
    cleaned = scrubber.text(text)
    assert token not in cleaned and basic_credential(token) not in cleaned
    assert cleaned == "fatal: unable to access https://x-access-token:***@github.com/ " \
                      "(Authorization: Basic ***)"


def test_alert_failures_hide_every_configured_secret(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, alert_webhook_url="https://hooks.example/T0/sekret-path",
                             alert_smtp_password="pw9")
    text = ("ClientResponseError: 404 for https://hooks.example/T0/sekret-path "
            "(login pw9 refused)")
    assert alert.scrub(text, settings) == "ClientResponseError: 404 for *** (login *** refused)"
