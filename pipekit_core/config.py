"""Settings: an optional pipekit.yaml plus environment variables (which win).

| variable          | pipekit.yaml key | default                     |
|-------------------|------------------|-----------------------------|
| PIPEKIT_CONFIG    | -                | ./pipekit.yaml if present   |
| PIPEKIT_DEFS      | defs             | ./module_defs               |
| PIPEKIT_DB        | database         | ./pipekit.db                |
| PIPEKIT_SECRETS   | secrets          | /etc/pipekit/secrets.env    |
| PIPEKIT_JRUNNER   | jrunner          | jrunner on PATH             |
| -                 | transport        | auto                        |
| -                 | timezone         | the machine's local zone    |
| -                 | staging_schema   | pipekit_staging             |
| -                 | schedule_status  | running (Dagster schedules) |
| -                 | sensor_status    | running (Dagster sensors)   |

``database`` / PIPEKIT_DB is a SQLite file path or a ``postgresql://user[:password]@host[:port]/db``
URL (:class:`pipekit_core.repo_backends.DatabaseURL`, a PostgreSQL repository); the whole value, or
the URL's password, may be a ``$VAR`` reference (environment, then the secrets file).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipekit_core.errors import ConfigError, PipekitError
from pipekit_core.repo_backends import DatabaseURL, is_url
from pipekit_core.secrets import Secrets, is_reference

KEYS = ("defs", "database", "secrets", "jrunner", "transport", "timezone", "staging_schema", "schedule_status",
        "sensor_status")
DEFAULT_SECRETS = "/etc/pipekit/secrets.env"


@dataclass(frozen=True)
class Settings:
    """Resolved settings. Paths are absolute."""

    defs: Path
    database: Path | DatabaseURL  # a SQLite file, or a PostgreSQL repository (str() has no password)
    secrets: Path
    jrunner: str | None  # the executable's path, or None when it cannot be found
    jrunner_setting: str  # what was asked for (for doctor)
    transport: str = "auto"
    timezone: str | None = None
    staging_schema: str = "pipekit_staging"
    config_file: Path | None = None
    schedule_status: str = "running"  # whether Dagster schedules start running: running | stopped
    sensor_status: str = "running"

    @property
    def state_dir(self) -> Path:
        """Local files of running processes (jrunner's process groups): beside a SQLite repository,
        else in the folder of pipekit.yaml (or the working directory) for a PostgreSQL one."""
        if isinstance(self.database, Path):
            return self.database.parent / ".pipekit-state"
        return (self.config_file.parent if self.config_file else Path.cwd()) / ".pipekit-state"

    def local_timezone(self) -> str:
        """The timezone for schedules: the setting, else the machine's zone, else UTC."""
        if self.timezone:
            return self.timezone
        tz = os.environ.get("TZ")
        if tz and "/" in tz:
            return tz
        try:
            link = os.readlink("/etc/localtime")
            if "zoneinfo/" in link:
                return link.split("zoneinfo/", 1)[1]
        except OSError:
            pass
        try:
            name = Path("/etc/timezone").read_text().strip()
            if name:
                return name
        except OSError:
            pass
        return "UTC"


def load_settings(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Settings:
    """Read pipekit.yaml (if any) and the environment into :class:`Settings`.

    Raises:
        ConfigError: the config file is unreadable, not a mapping, or has unknown keys.
    """
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else cwd
    cfg_path: Path | None = None
    if env.get("PIPEKIT_CONFIG"):
        cfg_path = Path(env["PIPEKIT_CONFIG"]).expanduser()
        if not cfg_path.is_absolute():
            cfg_path = cwd / cfg_path
        if not cfg_path.exists():
            raise ConfigError(f"PIPEKIT_CONFIG points at {cfg_path}, which does not exist")
    elif (cwd / "pipekit.yaml").exists():
        cfg_path = cwd / "pipekit.yaml"

    data: dict = {}
    base = cwd
    if cfg_path is not None:
        base = cfg_path.parent
        try:
            loaded = yaml.safe_load(cfg_path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"{cfg_path}: cannot read config: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{cfg_path}: expected a mapping of settings, got {type(loaded).__name__}")
        unknown = sorted(set(loaded) - set(KEYS))
        if unknown:
            raise ConfigError(f"{cfg_path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(KEYS)}")
        data = loaded

    def path(env_name: str, key: str, default: str) -> Path:
        if env.get(env_name):
            p = Path(env[env_name]).expanduser()
            return p if p.is_absolute() else (cwd / p)
        if data.get(key):
            p = Path(str(data[key])).expanduser()
            return p if p.is_absolute() else (base / p)
        p = Path(default)
        return p if p.is_absolute() else (cwd / p)

    transport = str(data.get("transport") or "auto")
    if transport not in ("native", "jrunner", "auto"):
        raise ConfigError(f"{cfg_path}: transport must be native, jrunner or auto, not {transport!r}")
    jr_setting = env.get("PIPEKIT_JRUNNER") or str(data.get("jrunner") or "jrunner")
    status = {}
    for key in ("schedule_status", "sensor_status"):
        status[key] = str(data.get(key) or "running").lower()
        if status[key] not in ("running", "stopped"):
            raise ConfigError(f"{cfg_path}: {key} must be running or stopped, not {data.get(key)!r}")
    secrets = path("PIPEKIT_SECRETS", "secrets", DEFAULT_SECRETS)
    return Settings(
        defs=path("PIPEKIT_DEFS", "defs", "module_defs").resolve(),
        database=_database(env, data, cfg_path, secrets, lambda: path("PIPEKIT_DB", "database", "pipekit.db")),
        secrets=secrets,
        jrunner=find_jrunner(jr_setting, env, base),
        jrunner_setting=jr_setting,
        transport=transport,
        timezone=str(data["timezone"]) if data.get("timezone") else None,
        staging_schema=str(data.get("staging_schema") or "pipekit_staging"),
        config_file=cfg_path,
        **status,
    )


def _database(env: Mapping[str, str], data: dict, cfg_path: Path | None, secrets: Path,
              as_path: Callable[[], Path]) -> Path | DatabaseURL:
    """The repository setting: a ``postgresql://`` URL (a whole-value ``$VAR`` resolved here), else a path."""
    where = "PIPEKIT_DB" if env.get("PIPEKIT_DB") else f"'database' in {cfg_path}"
    raw = env.get("PIPEKIT_DB") or str(data.get("database") or "")
    if is_reference(raw):
        raw = Secrets(secrets, env).resolve(raw, where=where) or ""
        if not raw:
            raise ConfigError(f"{where}: the variable it names is empty; set it to a path or a postgresql:// URL")
        if not is_url(raw):
            p = Path(raw).expanduser()
            return (p if p.is_absolute() else Path.cwd() / p).resolve()
    if is_url(raw):
        try:
            return DatabaseURL(raw, secrets)
        except PipekitError as e:
            raise ConfigError(f"{where}: {e}") from None
    return as_path().resolve()


def find_jrunner(setting: str, env: Mapping[str, str], base: Path) -> str | None:
    """The jrunner executable: an absolute/relative path, or a name looked up on PATH."""
    if os.sep in setting:
        p = Path(setting).expanduser()
        if not p.is_absolute():
            p = base / p
        return str(p) if p.exists() and os.access(p, os.X_OK) else None
    return shutil.which(setting, path=env.get("PATH"))
