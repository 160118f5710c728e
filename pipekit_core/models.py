"""Pydantic models of the module-definition format (see docs: "Module definitions").

Unknown keys are rejected (``extra="forbid"``) so a typo is a validation error, and closed
vocabularies are ``Literal`` types. Cross-object rules (connection names, groups, deps cycles)
live in :mod:`pipekit_core.defs`, which has the whole catalog.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

Strategy = Literal["full", "incremental", "append", "window"]
RunOn = Literal["success", "failure", "always"]
TransportName = Literal["native", "jrunner", "auto"]

MODULE_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

# Database kinds pipekit knows by URL prefix. "native" ones have a Python driver here.
NATIVE_KINDS = frozenset({"postgresql", "sqlite"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, str_strip_whitespace=False)


class Connection(_Strict):
    """A named database connection. ``password`` may be a ``$VAR`` reference."""

    url: str
    user: str | None = None
    password: str | None = None
    name: str = Field(default="", exclude=True)
    # Folder of the YAML file that defined it: relative SQLite paths resolve against it.
    base_dir: str = Field(default="", exclude=True)

    @property
    def kind(self) -> str:
        """Database kind from the URL: postgresql, sqlite, as400, sqlserver, ... (lower case)."""
        return connection_kind(self.url)

    @property
    def has_native_driver(self) -> bool:
        return self.kind in NATIVE_KINDS


def connection_kind(url: str) -> str:
    u = url.strip().lower()
    if u.startswith("jdbc:"):
        u = u[5:]
    if u.startswith(("postgresql:", "postgres:")):
        return "postgresql"
    if u.startswith("sqlite:"):
        return "sqlite"
    if u.startswith(("as400:", "db2:")):
        return "as400" if u.startswith("as400:") else "db2"
    if u.startswith(("sqlserver:", "jtds:sqlserver:")):
        return "sqlserver"
    return u.split(":", 1)[0] or "unknown"


class Watermark(_Strict):
    """A named value resolved by a small query; replaces ``{name}`` in the source query."""

    name: str
    sql: str
    connection: str | None = None
    default: str | None = None

    @field_validator("default", mode="before")
    @classmethod
    def _default_text(cls, v: Any) -> Any:
        # YAML turns 1900-01-01 into a date and 0 into an int; the original treats values as text.
        return None if v is None else str(v)


class Hook(_Strict):
    """SQL run after the merge (or on failure), in file order."""

    sql: str
    run_on: RunOn = "success"
    connection: str | None = None
    name: str | None = None


class ColumnSpec(_Strict):
    """One column of the original's ``columns_json``: names and types."""

    source_name: str
    dest_name: str | None = None
    source_type: str | None = None
    dest_type: str | None = None

    @property
    def target_name(self) -> str:
        return self.dest_name or self.source_name


class SensorSpec(_Strict):
    probe: str
    interval: int = Field(default=300, ge=1)


class Retries(_Strict):
    max: int = Field(default=0, ge=0, le=100)
    delay: float = Field(default=30, ge=0, allow_inf_nan=False)


class SchemaChange(_Strict):
    """``schema_change:``: what a run does when the source query and the destination table differ.

    ``missing_column``: a destination column the query no longer feeds (fail | fill with NULL/default);
    ``new_column``: a source column the destination lacks (add | fail | ignore = not merged);
    ``widen``: a source/declared type wider than the destination's (alter losslessly | fail).
    The string ``strict`` means every setting ``fail``.
    """

    missing_column: Literal["fail", "fill"] = "fail"
    new_column: Literal["add", "fail", "ignore"] = "add"
    widen: Literal["alter", "fail"] = "alter"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if isinstance(v, str):
            if v.strip() == "strict":
                return {"missing_column": "fail", "new_column": "fail", "widen": "fail"}
            raise ValueError(f"{v!r} is not a known shorthand; use 'strict' or a mapping "
                             "with missing_column, new_column, widen")
        return v


class Partitions(_Strict):
    """``partitions:``: time-window partitions (Dagster partitions, ``--window`` / ``--partition``).

    ``column`` is the destination column that places a row in a window (strategy ``window``
    replaces the rows whose ``column`` lies in the run's window). See :mod:`pipekit_core.partitions`.
    """

    every: Literal["hour", "day", "week", "month"]
    start: str
    end: str | None = None
    timezone: str | None = None
    column: str

    @field_validator("start", "end", mode="before")
    @classmethod
    def _point_text(cls, v: Any) -> Any:
        # YAML turns 2024-01-01 into a date (and 2024-01-01 06:00:00 into a datetime).
        return None if v is None else (v.isoformat(sep=" ") if hasattr(v, "hour") else str(v))


_DURATION_RE = re.compile(r"^(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*(?:(\d+)\s*s)?$")


def parse_duration(text: Any) -> dt.timedelta:
    """``30m``, ``2h``, ``1d``, ``1h30m`` (days, hours, minutes, seconds, in that order) as a timedelta.

    Raises ValueError for anything else (a bare number too: its unit would be a guess).
    """
    if isinstance(text, dt.timedelta):
        return text
    m = _DURATION_RE.match(text.strip()) if isinstance(text, str) else None
    if m is None or not any(m.groups()):
        raise ValueError(f"{text!r} is not a duration; write e.g. 30m, 2h, 1d or 1h30m (units d, h, m, s)")
    days, hours, minutes, seconds = (int(g or 0) for g in m.groups())
    return dt.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


Duration = Annotated[dt.timedelta, BeforeValidator(parse_duration)]


class Automation(_Strict):
    """``automation:`` (modules and groups): Dagster declarative automation of the module's asset.

    Written ``eager``, ``on_missing`` or ``{on_cron: "0 * * * *"}``; held as ``kind`` (+ ``cron``).
    The cron is checked by the loader (:mod:`pipekit_core.defs`) and evaluated in the ``timezone``
    setting.
    """

    kind: Literal["eager", "on_missing", "on_cron"]
    cron: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, v: Any) -> Any:
        usage = "use eager, on_missing or {on_cron: '<cron>'}"
        if isinstance(v, str):
            if v.strip() in ("eager", "on_missing"):
                return {"kind": v.strip()}
            if v.strip() == "on_cron":
                raise ValueError("on_cron needs its cron expression: write {on_cron: '0 * * * *'}")
            raise ValueError(f"{v!r} is not a known automation; {usage}")
        if isinstance(v, dict) and "kind" not in v:
            if set(v) != {"on_cron"}:
                keys = ", ".join(f"'{k}'" for k in v if k != "on_cron")
                raise ValueError(f"unknown key {keys}; {usage}" if keys else f"an empty mapping; {usage}")
            if not isinstance(v["on_cron"], str):
                raise ValueError(f"on_cron must be a cron expression in quotes, e.g. '0 * * * *' (got {v['on_cron']!r})")
            return {"kind": "on_cron", "cron": v["on_cron"]}
        return v

    def __str__(self) -> str:
        return f"on_cron '{self.cron}'" if self.kind == "on_cron" else self.kind


class Freshness(_Strict):
    """``freshness:``: when the module's table counts as stale (Dagster's FreshnessPolicy).

    Either a time window, ``{fail_after: 2h, warn_after: 1h}`` (fail when the last successful
    run is older than ``fail_after``; warn, optionally, when older than ``warn_after``), or a
    cron deadline, ``{deadline: "0 9 * * *", window: 1h}`` (fail when no run succeeded in the
    ``window`` before the latest deadline tick; ``window`` defaults to the time between ticks).
    The deadline's cron and the window's bound are checked by the loader.
    """

    fail_after: Duration | None = None
    warn_after: Duration | None = None
    deadline: str | None = None
    window: Duration | None = None

    @model_validator(mode="after")
    def _rules(self) -> Freshness:
        minute = dt.timedelta(minutes=1)
        if self.deadline is None and self.fail_after is None:
            raise ValueError("fail_after: required (or a deadline: cron), e.g. {fail_after: 2h, warn_after: 1h}")
        if self.deadline is not None and (self.fail_after is not None or self.warn_after is not None):
            raise ValueError("deadline: give either fail_after / warn_after (a time window) or deadline / window "
                             "(a cron deadline), not both")
        if self.window is not None and self.deadline is None:
            raise ValueError("window: only with deadline: (the time before each deadline tick a run must finish in)")
        for key in ("fail_after", "warn_after", "window"):
            value = getattr(self, key)
            if value is not None and value < minute:
                raise ValueError(f"{key}: must be at least 1m (Dagster evaluates freshness by the minute)")
        if self.warn_after is not None and self.fail_after is not None and self.warn_after >= self.fail_after:
            raise ValueError(f"warn_after: must be shorter than fail_after ({format_duration(self.warn_after)} >= "
                             f"{format_duration(self.fail_after)}): the warning comes before the failure")
        return self


def format_duration(delta: dt.timedelta) -> str:
    """A duration the way the YAML writes it (``1h30m``)."""
    total = int(delta.total_seconds())
    parts = [(total // 86400, "d"), (total % 86400 // 3600, "h"), (total % 3600 // 60, "m"), (total % 60, "s")]
    return "".join(f"{n}{unit}" for n, unit in parts if n) or "0s"


class Deletes(_Strict):
    """``deletes:``: propagate rows deleted in the source.

    ``keys_query`` returns the current set of source keys (exactly the merge_key columns); in the
    merge transaction destination rows whose key it lacks are deleted (``hard``) or get
    ``soft_column = now()`` (``soft``; a key that comes back clears it).
    """

    mode: Literal["hard", "soft"]
    keys_query: str
    soft_column: str | None = None

    @model_validator(mode="after")
    def _soft(self) -> Deletes:
        if self.mode == "soft" and not (self.soft_column or "").strip():
            raise ValueError("soft_column: required when mode is soft (the column that gets the deletion time)")
        if self.mode == "hard" and self.soft_column is not None:
            raise ValueError("soft_column: only for mode: soft (a hard delete removes the row)")
        return self


class Module(_Strict):
    """One sync job: source query -> staging -> merge into ``dest_table`` on ``dest``."""

    name: str
    source: str
    dest: str
    dest_table: str
    query: str | None = None
    query_file: str | None = None
    strategy: Strategy = "full"
    merge_key: list[str] = Field(default_factory=list)
    watermarks: list[Watermark] = Field(default_factory=list)
    hooks: list[Hook] = Field(default_factory=list)
    columns: list[ColumnSpec] | None = None
    allow_empty: bool = False
    partitions: Partitions | None = None
    deletes: Deletes | None = None
    # A destination table pipekit creates: a primary key on merge_key (incremental; when the first
    # staged keys have no NULL part), and these indexes.
    primary_key: bool = True
    indexes: list[list[str]] = Field(default_factory=list)
    schema_change: SchemaChange = Field(default_factory=SchemaChange)
    schedule: str | None = None
    sensor: SensorSpec | None = None
    automation: Automation | None = None
    freshness: Freshness | None = None
    deps: list[str] = Field(default_factory=list)
    transport: TransportName | None = None
    retries: Retries | None = None
    timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    enabled: bool = True
    description: str | None = None

    # Filled in by the loader, not by users.
    source_file: str = Field(default="", exclude=True)
    source_line: int | None = Field(default=None, exclude=True)  # line of the module's entry in source_file
    sql: str = Field(default="", exclude=True)  # the query text (inline or read from query_file)
    query_path: str = Field(default="", exclude=True)  # the query_file as read (resolved path), or ""

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not MODULE_NAME_RE.match(v):
            raise ValueError("must be lower-case letters, digits and underscores, starting with a letter")
        return v

    @field_validator("merge_key", mode="before")
    @classmethod
    def _split_key(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @field_validator("deps", mode="before")
    @classmethod
    def _deps_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @model_validator(mode="after")
    def _rules(self) -> Module:
        if (self.query is None) == (self.query_file is None):
            raise ValueError("query / query_file: give exactly one of them")
        if self.strategy == "incremental" and not self.merge_key:
            raise ValueError("merge_key: required when strategy is incremental")
        names = [w.name for w in self.watermarks]
        if len(set(names)) != len(names):
            raise ValueError("watermarks: two watermarks have the same name")
        if self.strategy == "window" and self.partitions is None:
            raise ValueError("partitions: required when strategy is window (it says which rows a window holds)")
        if self.partitions is not None and self.strategy == "full":
            raise ValueError("strategy: a full refresh replaces every row, so it cannot be partitioned; "
                             "use strategy: window to replace one window's rows")
        if self.deletes is not None:
            if self.strategy in ("full", "append"):
                raise ValueError(f"deletes: not for strategy {self.strategy} (a full refresh already drops "
                                 "deleted rows; append has no key); use it with incremental")
            if not self.merge_key:
                raise ValueError("merge_key: required with deletes: (the keys query returns the merge key columns)")
            if self.strategy == "window" and self.deletes.mode == "soft":
                raise ValueError("deletes: strategy window replaces the window's rows, so rows deleted in the "
                                 "source are already gone and cannot be soft-deleted; drop deletes: "
                                 "(window needs none) or use strategy incremental")
        return self

    def window_names(self) -> tuple[str, ...]:
        """The window placeholders this module has (``window_start``, ``window_end`` when partitioned)."""
        from pipekit_core.partitions import WINDOW_NAMES

        return WINDOW_NAMES if self.partitions is not None else ()

    def placeholders(self) -> list[str]:
        """The ``{name}`` placeholders of the query, in order (``{{``/``}}`` are literal braces)."""
        from pipekit_core.watermarks import placeholders  # watermarks imports this module

        return list(dict.fromkeys(t.name for t in placeholders(self.sql or self.query or "") if t.name))

    def automation_in(self, group: Group | None) -> Automation | None:
        """The automation that applies to the module: its own ``automation:``, else its group's."""
        return self.automation or (group.automation if group is not None else None)

    def definition_hash(self) -> str:
        """Stable hash of what the module does (Dagster code_version). When it runs and how fresh it
        must be (``automation:``, ``freshness:``) is not what it does, so it is left out."""
        payload = self.model_dump(mode="json", exclude={"automation", "freshness"})
        payload["sql"] = self.sql
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def source_path(self) -> Path | None:
        return Path(self.source_file) if self.source_file else None

    def dest_column_name(self, source_name: str) -> str:
        """The destination name of the source query's column ``source_name``: its ``columns:``
        entry's ``target_name`` (matched exactly, else case-insensitively), else the name itself."""
        specs = self.columns or []
        spec = next((c for c in specs if c.source_name == source_name), None) or next(
            (c for c in specs if c.source_name.lower() == source_name.lower()), None)
        return spec.target_name if spec else source_name


class Group(_Strict):
    """An ordered list of modules run in sequence."""

    modules: list[str]
    schedule: str | None = None
    automation: Automation | None = None  # for the members that have no automation: of their own
    stop_on_failure: bool = True
    description: str | None = None
    name: str = Field(default="", exclude=True)
    source_file: str = Field(default="", exclude=True)


class DefsFile(_Strict):
    """The top level of one YAML file."""

    connections: dict[str, Connection] = Field(default_factory=dict)
    modules: list[Module] = Field(default_factory=list)
    groups: dict[str, Group] = Field(default_factory=dict)
