"""SIGHUP: re-read the settings and apply what can change while the service runs.

The log levels (MWAI_LOG_LEVEL, DEBUG) and the alert thresholds of the health
checks and metrics (MWAI_STUCK_AFTER_S, MWAI_QUEUE_AGE_ALERT_S) change live;
any other changed setting is named in the log line as waiting for a restart.
Bad new values are refused whole and the running settings stay: a reload never
stops the service.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

from mwai.errors import MwaiError
from mwai.logs import WEB_LOGGER, apply_levels, log_levels
from mwai.settings import SETTINGS, Settings

log = logging.getLogger(WEB_LOGGER)

LIVE_FIELDS = ("log_level", "debug", "stuck_after_s", "queue_age_alert_s")
_NAME_OF = {setting.field: setting.name for setting in SETTINGS}


@dataclass
class LiveSettings:
    """The settings the running service judges with; SIGHUP replaces ``current``."""

    current: Settings


def reload_settings(live: LiveSettings, load: Callable[[], Settings] | None) -> None:
    if load is None:
        log.warning("SIGHUP received: this service was started without a settings source; "
                    "nothing reloaded")
        return
    try:
        new = load()
    except MwaiError as exc:
        log.error("SIGHUP received: the new settings are refused, the running ones stay",
                  extra={"error": str(exc)})
        return
    old = live.current
    changed = [f.name for f in dataclasses.fields(Settings)
               if getattr(new, f.name) != getattr(old, f.name)]
    live.current = dataclasses.replace(old, **{name: getattr(new, name)
                                               for name in LIVE_FIELDS})
    apply_levels(log_levels(live.current))
    log.info("Settings reloaded (SIGHUP)", extra={
        "applied": sorted(_NAME_OF[name] for name in changed if name in LIVE_FIELDS),
        "needs_restart": sorted(_NAME_OF[name] for name in changed
                                if name not in LIVE_FIELDS)})
