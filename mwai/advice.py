"""What is wrong with settings that each parse: misspelt names, unsafe
combinations, the example file's placeholders.

Settings.from_env judges each value alone; these look at the names given and at
the values together. Commands print the notes as warnings (the service logs
them); `mwai check` reports placeholders as problems.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping

from mwai.settings import SETTINGS, SETTINGS_BY_NAME, Settings

# MWAI_ names that are not settings: mwai sets them for its children (the agent,
# an alert command) or they steer the test suite.
NOT_SETTINGS = frozenset({"MWAI_TASK_FILE", "MWAI_ALERT_SUMMARY", "MWAI_DEMO_AGENT_MODE",
                          "MWAI_REQUIRE_ALL_TESTS"})
# systemd's TimeoutStopSec of deploy/systemd/mwai.service.
UNIT_STOP_TIMEOUT_S = 45.0
# nginx's default keepalive_timeout towards an upstream (deploy/nginx/mwai.conf).
PROXY_KEEPALIVE_S = 60.0

_PLACEHOLDER = re.compile(
    r"^change-?me"  # the example file's secrets and ids
    r"|(?:^|[^a-z0-9])your-"  # https://your-site.atlassian.net, your-org/your-repo
    r"|(?:^|[@./])example\.(?:com|net|org)(?:$|[/:?#])"  # ai-runner@example.com
)


def unknown_names(names: Iterable[str]) -> list[str]:
    """A note for each given name that looks like a setting but is none."""
    known = [s.name for s in SETTINGS]
    notes = []
    for name in names:
        if name in SETTINGS_BY_NAME or name in NOT_SETTINGS:
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        if close:
            notes.append(f"{name} is not a mwai setting: did you mean {close[0]}? "
                         "(it is ignored)")
        elif name.startswith("MWAI_"):
            notes.append(f"{name} is not a mwai setting (it is ignored); `mwai settings` "
                         "lists them all")
    return notes


def placeholders(values: Mapping[str, str]) -> list[str]:
    """A problem for each setting still holding a placeholder of deploy/mwai.env.example."""
    problems = []
    for setting in SETTINGS:
        value = values.get(setting.name, "")
        if not value or value == setting.default or not _PLACEHOLDER.search(value.lower()):
            continue
        if setting.secret:
            how = (" (e.g. `openssl rand -hex 32`, the same in Jira's automation rule)"
                   if setting.name == "JIRA_WEBHOOK_SECRET" else "")
            problems.append(f"{setting.name} still holds the example's placeholder: set the "
                            f"real secret{how}")
        else:
            problems.append(f"{setting.name}={value!r} is a placeholder of the example: set "
                            "your real value")
    return problems


def unsafe_combinations(settings: Settings) -> list[str]:
    """Values that parse but together (or in mwai's deployment) lose work or data."""
    notes = []
    if settings.lease_s < 2 * settings.heartbeat_s:
        notes.append(f"MWAI_LEASE_S={settings.lease_s:g} is less than twice "
                     f"MWAI_HEARTBEAT_S={settings.heartbeat_s:g}: one late heartbeat and a "
                     "live run's lease expires, so another worker takes it over; keep the "
                     "lease at least 3 heartbeats long")
    if settings.synchronous == "OFF":
        notes.append("MWAI_SYNCHRONOUS=OFF: a power loss or OS crash can lose acknowledged "
                     "webhooks and corrupt the database; use FULL (the default) or NORMAL")
    if settings.retry_max_s < settings.retry_base_s:
        notes.append(f"MWAI_RETRY_MAX_S={settings.retry_max_s:g} is below "
                     f"MWAI_RETRY_BASE_S={settings.retry_base_s:g}: every retry waits "
                     "MWAI_RETRY_MAX_S; raise it")
    if settings.shutdown_grace_s >= UNIT_STOP_TIMEOUT_S:
        notes.append(f"MWAI_SHUTDOWN_GRACE_S={settings.shutdown_grace_s:g} is not below "
                     f"mwai.service's TimeoutStopSec ({UNIT_STOP_TIMEOUT_S:g} s): systemd "
                     "kills running runs before mwai can put them back in the queue")
    if settings.client_timeout_s <= PROXY_KEEPALIVE_S:
        notes.append(f"MWAI_CLIENT_TIMEOUT_S={settings.client_timeout_s:g} is not above a "
                     f"reverse proxy's keepalive_timeout ({PROXY_KEEPALIVE_S:g} s in nginx): "
                     "mwai closes idle connections nginx still reuses (502 answers)")
    if settings.listen_host not in ("127.0.0.1", "::1", "localhost") \
            and not settings.metrics_token:
        notes.append(f"MWAI_LISTEN={settings.listen} is reachable from other hosts and "
                     "MWAI_METRICS_TOKEN is empty: /metrics is open to the network")
    return notes
