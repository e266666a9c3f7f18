"""Where each setting's value comes from: default, env file, environment, command line.

Precedence, lowest first: the table's default, the env file, the environment,
the command line (options such as --db, --workers). The env file is --env-file,
else $MWAI_ENV_FILE, else /etc/mwai/mwai.env when that file exists: every
command reads the same file as the service, so `mwai alert` and `mwai monitor`
judge with the service's thresholds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mwai.errors import ConfigError
from mwai.scrub import Scrubber
from mwai.settings import SETTINGS, SETTINGS_BY_NAME

DEFAULT_ENV_FILE = "/etc/mwai/mwai.env"

DEFAULT = "default"
ENV_FILE = "env file"
ENVIRONMENT = "environment"
COMMAND_LINE = "command line"


@dataclass(frozen=True)
class Sourced:
    """The raw value of every setting given somewhere, and where it won."""

    values: dict[str, str]
    sources: dict[str, str]
    env_file: str | None
    # Names given in the environment or the env file (for the unknown-name check).
    given: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)

    def source_of(self, name: str) -> str:
        return self.sources.get(name, DEFAULT)


def env_file_path(environ: Mapping[str, str], option: str | None,
                  default_path: str = DEFAULT_ENV_FILE) -> tuple[str | None, bool]:
    """(the env file to read, whether it was asked for explicitly)."""
    if option:
        return option, True
    if environ.get("MWAI_ENV_FILE"):
        return environ["MWAI_ENV_FILE"], True
    if Path(default_path).is_file():
        return default_path, False
    return None, False


def gather(environ: Mapping[str, str], env_file_option: str | None = None,
           command_line: Mapping[str, str] | None = None,
           default_env_file: str = DEFAULT_ENV_FILE) -> Sourced:
    """Every layer merged, the higher winning, each value's source recorded."""
    path, explicit = env_file_path(environ, env_file_option, default_env_file)
    notes: list[str] = []
    from_file: dict[str, str] = {}
    if path is not None:
        try:
            from_file = read_env_file(path)
        except ConfigError as exc:
            if explicit:
                raise
            # The default file of the service: an operator without the right to
            # read it still gets the read-only commands, with a word about it.
            notes.append(f"{exc.problems[0]}; its settings are not applied (run as root or "
                         "the mwai user, or set MWAI_ENV_FILE)")
            path = None
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    for layer, source in ((from_file, ENV_FILE), (environ, ENVIRONMENT),
                          (command_line or {}, COMMAND_LINE)):
        for name, value in layer.items():
            if name in SETTINGS_BY_NAME or layer is from_file:
                values[name] = value
                sources[name] = source
    if path is not None:
        values["MWAI_ENV_FILE"] = path
        sources.setdefault("MWAI_ENV_FILE", COMMAND_LINE if env_file_option else
                           ENVIRONMENT if explicit else DEFAULT)
    given = tuple(sorted({*from_file, *(n for n in environ if n.startswith("MWAI_"))}))
    return Sourced(values, sources, path, given, notes)


def effective_rows(sourced: Sourced) -> list[dict[str, str | bool]]:
    """Each setting's effective raw value and its source; secrets masked (mwai.scrub)."""
    secrets = [sourced.values[s.name] for s in SETTINGS if s.secret and sourced.values.get(s.name)]
    scrubber = Scrubber(secrets)
    rows: list[dict[str, str | bool]] = []
    for setting in SETTINGS:
        value = sourced.values.get(setting.name, setting.default)
        rows.append({"name": setting.name, "value": scrubber.text(value),
                     "source": sourced.source_of(setting.name), "secret": setting.secret})
    return rows


_ENV_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


def read_env_file(path: str | Path) -> dict[str, str]:
    """Read a systemd EnvironmentFile / dotenv: KEY=VALUE lines, # comments, quotes.

    Raises ConfigError naming the file and line for anything else.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise ConfigError([f"env file {file}: cannot read it ({reason})"]) from None
    values: dict[str, str] = {}
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        match = _ENV_LINE.match(stripped)
        if not match:
            problems.append(f"{file}:{number}: expected KEY=VALUE")
            continue
        key, value = match.group(1), match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
            if match.group(2).strip()[0] == '"':
                value = value.replace('\\"', '"').replace("\\\\", "\\")
        values[key] = value
    if problems:
        raise ConfigError(problems)
    return values

