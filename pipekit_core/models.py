"""Pydantic models of the module-definition format (see docs: "Module definitions").

Unknown keys are rejected (``extra="forbid"``) so a typo is a validation error, and closed
vocabularies are ``Literal`` types. Cross-object rules (connection names, groups, deps cycles)
live in :mod:`pipekit_core.defs`, which has the whole catalog.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
    deps: list[str] = Field(default_factory=list)
    transport: TransportName | None = None
    retries: Retries | None = None
    timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    enabled: bool = True
    description: str | None = None

    # Filled in by the loader, not by users.
    source_file: str = Field(default="", exclude=True)
    sql: str = Field(default="", exclude=True)  # the query text (inline or read from query_file)

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

    def definition_hash(self) -> str:
        """Stable hash of what the module does (Dagster code_version)."""
        payload = self.model_dump(mode="json")
        payload["sql"] = self.sql
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def source_path(self) -> Path | None:
        return Path(self.source_file) if self.source_file else None


class Group(_Strict):
    """An ordered list of modules run in sequence."""

    modules: list[str]
    schedule: str | None = None
    stop_on_failure: bool = True
    description: str | None = None
    name: str = Field(default="", exclude=True)
    source_file: str = Field(default="", exclude=True)


class DefsFile(_Strict):
    """The top level of one YAML file."""

    connections: dict[str, Connection] = Field(default_factory=dict)
    modules: list[Module] = Field(default_factory=list)
    groups: dict[str, Group] = Field(default_factory=dict)
