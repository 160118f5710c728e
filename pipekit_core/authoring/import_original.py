"""``pipekit import-original``: the original pipekit's SQLite state as YAML definitions.

The original's model is documented (driver, connection, module with ``columns_json`` and a
comma-separated ``merge_key``, watermark with resolver SQL / connection / default, hook with
run order and ``run_on``, groups and their schedules), but its exact table and column names are
not published. So nothing here assumes them: the tables are found in ``sqlite_master`` and their
columns with ``PRAGMA table_info``, and both are matched **by meaning** against lists of the names
such a schema plausibly uses (``module`` / ``modules`` / ``jobs``; ``source_connection_id`` /
``src_conn_id`` / ``sourceConnectionId`` ...; a ``module_`` prefix on a module's own column is
ignored). Every table and column that could not be mapped is reported, with the reason where it
is known (run history, lock state, driver jars); nothing is guessed silently.

What is written (``--out``, default ``module_defs/imported/``):

- ``connections.yaml``: JDBC URL and user as stored; a ``$VAR`` password stays the reference. A
  password stored literally is **not** written: it becomes ``$<NAME>_PASSWORD`` and the report
  says to set it (``pipekit secrets set``).
- ``modules.yaml``: every module, with its query (literal braces doubled, since the original
  replaced only ``{watermark}`` tokens), strategy, merge key as a list, columns, watermarks and
  hooks (in run order). Names are made valid (lower case, ``_``) and each rename is reported.
- ``groups.yaml``: groups with their members in order and their cron schedule.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipekit_core.errors import PipekitError
from pipekit_core.models import MODULE_NAME_RE

__all__ = ["ImportError_", "ImportReport", "discover", "import_original", "write_import"]


class ImportError_(PipekitError):  # noqa: N801 - ImportError is Python's
    """The file is not an original pipekit database, or the output cannot be written."""


# ------------------------------------------------------------------------------- meanings

# role -> names a table with that role may have (normalised: lower case, snake_case)
TABLE_NAMES: dict[str, tuple[str, ...]] = {
    "group_member": ("group_module", "group_modules", "group_member", "group_members", "module_group_member",
                     "module_group_members", "group_item", "group_items", "group_entry", "group_entries",
                     "group_module_map", "module_group_map", "group_membership", "group_memberships"),
    "driver": ("driver", "drivers", "jdbc_driver", "jdbc_drivers", "driver_registration", "driver_registrations"),
    "connection": ("connection", "connections", "conn", "conns", "database", "databases", "datasource",
                   "datasources", "data_source", "data_sources", "db_connection", "db_connections"),
    "module": ("module", "modules", "job", "jobs", "sync", "syncs", "sync_job", "sync_jobs", "sync_module",
               "sync_modules"),
    "watermark": ("watermark", "watermarks", "module_watermark", "module_watermarks"),
    "hook": ("hook", "hooks", "post_hook", "post_hooks", "module_hook", "module_hooks", "post_merge_hook",
             "post_merge_hooks"),
    "group": ("group", "groups", "module_group", "module_groups", "grp", "grps", "job_group", "job_groups"),
    "schedule": ("schedule", "schedules", "group_schedule", "group_schedules", "cron", "crons", "cron_schedule",
                 "cron_schedules"),
    "run_log": ("run_log", "run_logs", "runlog", "runlogs", "run", "runs", "run_history", "history", "module_run",
                "module_runs"),
}
# tables that are state or application bookkeeping, never definitions
IGNORED_TABLES = {
    "run_log": "run history stays in the original (pipekit keeps its own run log from the first run)",
    "driver": "the database kind comes from each connection's JDBC URL; jrunner keeps its own JDBC drivers",
}

_ID = ("id", "rowid_", "pk", "uid")
# role -> field -> accepted column names (after the role prefix is dropped)
FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    "connection": {
        "id": _ID,
        "name": ("name", "label", "title", "alias"),
        "url": ("jdbc_url", "url", "jdbc", "connection_url", "conn_url", "jdbc_string", "connection_string",
                "jdbcurl", "dsn", "uri"),
        "user": ("username", "user", "user_name", "login", "db_user", "uid_", "usr"),
        "password": ("password", "password_ref", "password_var", "password_env", "passwd", "pwd", "secret",
                     "password_reference", "pass"),
    },
    "module": {
        "id": _ID,
        "name": ("name", "label", "title", "slug"),
        "source": ("source_connection_id", "source_conn_id", "src_connection_id", "src_conn_id", "source_id",
                   "src_id", "source_connection", "source_conn", "source", "src", "source_connection_name"),
        "dest": ("dest_connection_id", "dest_conn_id", "dst_connection_id", "dst_conn_id", "destination_connection_id",
                 "target_connection_id", "dest_id", "dst_id", "destination_id", "target_id", "dest_connection",
                 "dest_conn", "dest", "dst", "destination", "target", "dest_connection_name"),
        "query": ("source_query", "query", "source_sql", "sql", "select_sql", "pull_sql", "query_sql", "src_query",
                  "source_select", "extract_sql"),
        "dest_table": ("dest_table", "destination_table", "target_table", "dest_table_name", "table_name",
                       "dst_table", "target", "table"),
        "strategy": ("merge_strategy", "strategy", "mode", "sync_mode", "load_strategy", "merge_mode", "load_mode"),
        "merge_key": ("merge_key", "merge_keys", "key_columns", "key_cols", "primary_key", "pk_columns", "keys",
                      "key", "merge_columns"),
        "enabled": ("enabled", "is_enabled", "active", "is_active"),
        "columns": ("columns_json", "columns", "column_map", "column_mapping", "columns_map", "column_json",
                    "cols_json", "mapping_json"),
        "description": ("description", "notes", "comment", "descr", "desc"),
        "timeout": ("timeout", "timeout_s", "timeout_seconds", "timeout_sec"),
        "schedule": ("cron", "schedule", "cron_expr", "cron_expression"),
        "group": ("group_id", "grp_id", "module_group_id"),
        "group_order": ("group_order", "group_position", "run_order", "position", "sort_order", "seq"),
    },
    "watermark": {
        "id": _ID,
        "module": ("module_id", "mod_id", "job_id", "module", "module_name"),
        "name": ("name", "watermark_name", "placeholder", "token", "key", "label"),
        "sql": ("resolver_sql", "resolver", "sql", "query", "resolver_query", "resolve_sql", "value_sql"),
        "connection": ("connection_id", "resolver_connection_id", "conn_id", "connection", "resolver_conn_id",
                       "resolver_connection"),
        "default": ("default_value", "default", "default_val", "fallback", "initial_value", "fallback_value",
                    "dflt"),
    },
    "hook": {
        "id": _ID,
        "module": ("module_id", "mod_id", "job_id", "module", "module_name"),
        "name": ("name", "label", "title"),
        "sql": ("sql", "hook_sql", "statement", "query", "body"),
        "order": ("run_order", "order", "position", "seq", "sort_order", "ordinal", "idx", "sequence"),
        "run_on": ("run_on", "when", "trigger", "on", "run_when", "condition"),
        "connection": ("connection_id", "conn_id", "connection"),
        "enabled": ("enabled", "is_enabled", "active"),
    },
    "group": {
        "id": _ID,
        "name": ("name", "label", "title"),
        "description": ("description", "notes", "comment", "descr"),
        "stop_on_failure": ("stop_on_failure", "stop_on_error", "fail_fast", "stop_on_fail", "halt_on_failure"),
        "schedule": ("cron", "schedule", "cron_expr", "cron_expression"),
        "enabled": ("enabled", "is_enabled", "active"),
    },
    "group_member": {
        "id": _ID,
        "group": ("group_id", "grp_id", "module_group_id", "group", "group_name"),
        "module": ("module_id", "mod_id", "job_id", "module", "module_name"),
        "order": ("position", "run_order", "sort_order", "seq", "order", "ordinal", "idx", "sequence",
                  "group_order"),
    },
    "schedule": {
        "id": _ID,
        "group": ("group_id", "grp_id", "module_group_id", "group", "group_name"),
        "module": ("module_id", "mod_id", "job_id", "module", "module_name"),
        "cron": ("cron", "cron_expr", "cron_expression", "expression", "schedule", "spec", "cron_spec"),
        "enabled": ("enabled", "is_enabled", "active"),
    },
}
_PREFIXES = {
    "connection": ("connection_", "conn_"), "module": ("module_", "mod_", "job_"), "watermark": ("watermark_", "wm_"),
    "hook": ("hook_",), "group": ("group_", "grp_"), "group_member": ("member_",), "schedule": ("schedule_", "sched_"),
}
# columns that hold run state or bookkeeping, not definitions: reported with this reason
STATE_COLUMNS = {
    "running": "the run lock (pipekit keeps locks in its own repository)",
    "locked": "the run lock", "lock": "the run lock", "running_since": "the run lock", "pid": "the run lock",
    "locked_at": "the run lock", "locked_by": "the run lock",
    "created_at": "bookkeeping", "updated_at": "bookkeeping", "created": "bookkeeping", "modified": "bookkeeping",
    "modified_at": "bookkeeping", "last_run_at": "run state", "last_run": "run state", "last_status": "run state",
    "last_value": "run state (resolved anew each run)", "current_value": "run state (resolved anew each run)",
    "last_fired_at": "scheduler state (Dagster keeps its own)", "last_fire_time": "scheduler state (Dagster keeps its own)",
    "last_fired": "scheduler state (Dagster keeps its own)", "next_fire_at": "scheduler state (Dagster keeps its own)",
    **{c: "not needed: pipekit reads the database kind from the JDBC URL" for c in (
        "driver_id", "driver", "driver_kind", "kind", "driver_name", "db_type")},
}


def norm(name: str) -> str:
    """``sourceConnectionId`` / ``Source-Connection ID`` -> ``source_connection_id``."""
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name.strip())
    return re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_")


# --------------------------------------------------------------------------------- discovery

@dataclass
class TableMap:
    role: str
    table: str
    fields: dict[str, str] = field(default_factory=dict)  # field -> column
    unmapped: list[str] = field(default_factory=list)


@dataclass
class Discovery:
    tables: dict[str, TableMap] = field(default_factory=dict)  # role -> map
    unmapped_tables: list[tuple[str, str]] = field(default_factory=list)  # (table, reason)


def _table_role(name: str, taken: set[str]) -> str | None:
    n = norm(name)
    n = n.removeprefix("pipekit_")
    for role, names in TABLE_NAMES.items():
        if role not in taken and n in names:
            return role
    return None


def _map_columns(role: str, columns: list[str]) -> TableMap:
    tm = TableMap(role, "")
    spec = FIELDS.get(role, {})
    taken: set[str] = set()
    for fld, names in spec.items():
        for col in columns:
            if col in taken:
                continue
            n = norm(col)
            cands = [n] + [n.removeprefix(p) for p in _PREFIXES.get(role, ()) if n.startswith(p)]
            if any(c in names for c in cands):
                tm.fields[fld] = col
                taken.add(col)
                break
    tm.unmapped = [c for c in columns if c not in taken]
    return tm


def discover(con: sqlite3.Connection) -> Discovery:
    """Which table plays which role, and which column holds which field."""
    d = Discovery()
    names = [r[0] for r in con.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name")]
    pending = []
    for t in names:
        role = _table_role(t, set(d.tables))
        if role is None:
            pending.append(t)
            continue
        cols = [r[1] for r in con.execute(f"PRAGMA table_info({_q(t)})")]
        tm = _map_columns(role, cols)
        tm.table = t
        d.tables[role] = tm
    for t in pending:
        cols = [r[1] for r in con.execute(f"PRAGMA table_info({_q(t)})")]
        ncols = {norm(c) for c in cols}
        # an unnamed link table: a group reference and a module reference, little else
        if "group_member" not in d.tables and ncols & set(FIELDS["group_member"]["group"]) \
                and ncols & set(FIELDS["group_member"]["module"]) and len(cols) <= 5:
            tm = _map_columns("group_member", cols)
            tm.table = t
            d.tables["group_member"] = tm
            continue
        d.unmapped_tables.append((t, "not recognised as a part of the original's model"))
    return d


def _q(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


# ------------------------------------------------------------------------------------- import

@dataclass
class ImportReport:
    source: str
    tables: dict[str, str] = field(default_factory=dict)  # role -> table
    counts: dict[str, int] = field(default_factory=dict)
    unmapped: list[tuple[str, str]] = field(default_factory=list)  # (table.column or table, reason)
    renamed: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, old, new)
    notes: list[str] = field(default_factory=list)
    secrets_needed: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # validation problems of what was written
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "tables": self.tables, "counts": self.counts,
            "not_mapped": [{"field": f, "reason": r} for f, r in self.unmapped],
            "renamed": [{"kind": k, "from": a, "to": b} for k, a, b in self.renamed],
            "notes": self.notes, "secrets_needed": self.secrets_needed, "files": self.files,
            "problems": self.problems, "warnings": self.warnings,
        }


@dataclass
class Imported:
    connections: dict[str, dict[str, Any]]
    modules: list[dict[str, Any]]
    groups: dict[str, dict[str, Any]]
    report: ImportReport


def _rows(con: sqlite3.Connection, tm: TableMap | None) -> list[dict[str, Any]]:
    if tm is None:
        return []
    cur = con.execute(f"SELECT * FROM {_q(tm.table)}")
    cols = [d[0] for d in cur.description]
    back = {v: k for k, v in tm.fields.items()}
    out = []
    for r in cur:
        row = dict(zip(cols, r, strict=True))
        out.append({back[c]: v for c, v in row.items() if c in back} | {"_raw": row})
    return out


def _safe_name(raw: Any, kind: str, taken: set[str], report: ImportReport, module_rule: bool) -> str:
    text = str(raw if raw is not None else "").strip()
    name = re.sub(r"[^a-z0-9_]+", "_", norm(text) if text else "").strip("_") or kind
    if module_rule and not re.match(r"^[a-z]", name):
        name = f"m_{name}"
    base, i = name, 2
    while name in taken:
        name = f"{base}_{i}"
        i += 1
    taken.add(name)
    if name != text:
        report.renamed.append((kind, text, name))
    return name


def _truthy(v: Any, default: bool = True) -> bool:
    if v is None or v == "":
        return default
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "t", "yes", "y", "on")
    return bool(v)


def _escape_braces(sql: str, names: dict[str, str]) -> tuple[str, bool]:
    """The original replaced ``{name}`` for each watermark and left every other brace alone; here a
    literal brace is written ``{{`` / ``}}``. ``names`` maps original names to imported ones."""
    out, i, changed = [], 0, False
    pat = re.compile(r"\{([^{}]+)\}")
    while i < len(sql):
        m = pat.match(sql, i) if sql[i] == "{" else None
        if m and m.group(1) in names:
            out.append("{" + names[m.group(1)] + "}")
            i = m.end()
            continue
        c = sql[i]
        if c in "{}":
            out.append(c * 2)
            changed = True
        else:
            out.append(c)
        i += 1
    return "".join(out), changed


def _ref(value: Any, by_id: dict[Any, str], by_name: dict[str, str]) -> str | None:
    if value is None or value == "":
        return None
    if value in by_id:
        return by_id[value]
    if str(value) in by_name:
        return by_name[str(value)]
    try:
        return by_id.get(int(value))
    except (TypeError, ValueError):
        return None


def import_original(path: Path) -> Imported:
    """Read the original's SQLite file (read-only) into definitions and a report."""
    if not path.exists():
        raise ImportError_(f"{path} does not exist; give the original pipekit's pipekit.db")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as e:
        raise ImportError_(f"{path}: not a SQLite database ({e})") from None
    try:
        return _import(con, path)
    finally:
        con.close()


def _import(con: sqlite3.Connection, path: Path) -> Imported:
    rep = ImportReport(source=str(path))
    d = discover(con)
    if "module" not in d.tables:
        found = ", ".join(t for t, _ in d.unmapped_tables) or "none"
        raise ImportError_(f"{path}: no table of modules found (tables: {found}); is this the original pipekit's "
                           "pipekit.db?")
    rep.tables = {role: tm.table for role, tm in d.tables.items()}
    for t, why in d.unmapped_tables:
        rep.unmapped.append((t, why))
    for role, why in IGNORED_TABLES.items():
        if role in d.tables:
            rep.unmapped.append((d.tables[role].table, f"not imported: {why}"))
    required = {"connection": ("name", "url"), "module": ("name", "query", "source", "dest", "dest_table")}
    for role, tm in d.tables.items():
        if role in IGNORED_TABLES:
            continue
        for col in tm.unmapped:
            state = STATE_COLUMNS.get(norm(col))
            reason = (state if state.startswith("not needed") else f"not imported: {state}") if state else None
            rep.unmapped.append((f"{tm.table}.{col}", reason or "no field of that meaning"))
        for fld in required.get(role, ()):
            if fld not in tm.fields:
                rep.unmapped.append((f"{tm.table}.<{fld}>", f"no column holding the {fld} was found"))

    # connections ------------------------------------------------------------------------------
    conns: dict[str, dict[str, Any]] = {}
    conn_by_id: dict[Any, str] = {}
    conn_by_name: dict[str, str] = {}
    taken: set[str] = set()
    for r in _rows(con, d.tables.get("connection")):
        name = _safe_name(r.get("name") or f"connection_{r.get('id')}", "connection", taken, rep, module_rule=False)
        entry: dict[str, Any] = {"url": str(r.get("url") or "")}
        if r.get("user"):
            entry["user"] = str(r["user"])
        pw = r.get("password")
        if pw:
            pw = str(pw)
            if re.match(r"^\$(\{[A-Za-z_][A-Za-z0-9_]*\}|[A-Za-z_][A-Za-z0-9_]*)$", pw):
                entry["password"] = pw
                rep.secrets_needed.append(pw.lstrip("$").strip("{}"))
            else:
                var = re.sub(r"[^A-Z0-9_]", "_", name.upper()) + "_PASSWORD"
                entry["password"] = f"${var}"
                rep.secrets_needed.append(var)
                rep.notes.append(f"connection '{name}' stored its password literally; it was not copied. Set it with "
                                 f"`pipekit secrets set {var}`")
        conns[name] = entry
        if r.get("id") is not None:
            conn_by_id[r["id"]] = name
        conn_by_name[str(r.get("name"))] = name
    rep.counts["connections"] = len(conns)

    # watermarks and hooks by module ------------------------------------------------------------
    wms: dict[Any, list[dict[str, Any]]] = {}
    for r in _rows(con, d.tables.get("watermark")):
        wms.setdefault(r.get("module"), []).append(r)
    hooks: dict[Any, list[dict[str, Any]]] = {}
    for r in _rows(con, d.tables.get("hook")):
        hooks.setdefault(r.get("module"), []).append(r)

    # modules ------------------------------------------------------------------------------------
    modules: list[dict[str, Any]] = []
    mod_by_id: dict[Any, str] = {}
    mod_by_name: dict[str, str] = {}
    module_group: list[tuple[Any, Any, str]] = []  # (group ref, order, module) from module columns
    taken = set()
    mrows = _rows(con, d.tables.get("module"))
    mrows.sort(key=lambda r: (r.get("id") is None, r.get("id") if isinstance(r.get("id"), int) else 0))
    for r in mrows:
        orig = r.get("name") or f"module_{r.get('id')}"
        name = _safe_name(orig, "module", taken, rep, module_rule=True)
        if r.get("id") is not None:
            mod_by_id[r["id"]] = name
        mod_by_name[str(orig)] = name
        m: dict[str, Any] = {"name": name}
        src = _ref(r.get("source"), conn_by_id, conn_by_name)
        dst = _ref(r.get("dest"), conn_by_id, conn_by_name)
        if src is None:
            rep.problems.append(f"module '{name}': its source connection ({r.get('source')!r}) was not found")
        if dst is None:
            rep.problems.append(f"module '{name}': its destination connection ({r.get('dest')!r}) was not found")
        m["source"] = src or str(r.get("source"))
        m["dest"] = dst or str(r.get("dest"))
        m["dest_table"] = str(r.get("dest_table") or "")
        # watermarks first: the query's placeholders follow their names
        mine = [w for key in (r.get("id"), orig) for w in wms.get(key, [])]
        wm_names: dict[str, str] = {}
        wtaken: set[str] = set()
        wm_out = []
        for w in mine:
            wname_raw = str(w.get("name") or "")
            wname = _safe_name(wname_raw, "watermark", wtaken, rep, module_rule=False)
            wm_names[wname_raw] = wname
            entry = {"name": wname, "sql": str(w.get("sql") or "")}
            wconn = _ref(w.get("connection"), conn_by_id, conn_by_name)
            if wconn:
                entry["connection"] = wconn
            elif w.get("connection") not in (None, ""):
                rep.problems.append(f"module '{name}': watermark '{wname}': connection {w.get('connection')!r} was not found")
            if w.get("default") is not None:
                entry["default"] = str(w["default"])
            wm_out.append(entry)
        query, escaped = _escape_braces(str(r.get("query") or ""), wm_names)
        if escaped:
            rep.notes.append(f"module '{name}': literal braces in the query were doubled ({{{{ and }}}}), as the "
                             "format requires; the original left them as they were")
        used = {n for n in wm_names.values() if "{" + n + "}" in query}
        for entry in wm_out:
            if entry["name"] not in used:
                rep.unmapped.append((f"module '{name}' watermark '{entry['name']}'",
                                     "not imported: its {placeholder} is not in the query (it would do nothing)"))
        wm_out = [e for e in wm_out if e["name"] in used]
        for e in wm_out:
            if "default" not in e:
                rep.notes.append(f"module '{name}': watermark '{e['name']}' has no default: a run whose resolver "
                                 "returns no value (a first run) fails naming it; add default: if the original "
                                 "relied on an empty substitution")
        m["query"] = query.strip() + "\n"
        strategy = str(r.get("strategy") or "full").strip().lower()
        if strategy not in ("full", "incremental", "append"):
            rep.problems.append(f"module '{name}': merge strategy {r.get('strategy')!r} is not full, incremental or "
                                "append; it was written as it is: fix it in modules.yaml")
        m["strategy"] = strategy
        key = [k.strip() for k in str(r.get("merge_key") or "").split(",") if k.strip()]
        if key:
            m["merge_key"] = key
        if wm_out:
            m["watermarks"] = wm_out
        hk = sorted((h for key in (r.get("id"), orig) for h in hooks.get(key, [])),
                    key=lambda h: (_num(h.get("order")), _num(h.get("id"))))
        h_out = []
        for h in hk:
            if not _truthy(h.get("enabled")):
                rep.unmapped.append((f"module '{name}' hook #{h.get('id')}", "not imported: disabled in the original"))
                continue
            entry = {"sql": str(h.get("sql") or "").strip()}
            run_on = str(h.get("run_on") or "success").strip().lower()
            if run_on not in ("success", "failure", "always"):
                rep.problems.append(f"module '{name}': hook run_on {h.get('run_on')!r} is not success, failure or always")
            entry["run_on"] = run_on
            hconn = _ref(h.get("connection"), conn_by_id, conn_by_name)
            if hconn:
                entry["connection"] = hconn
            if h.get("name"):
                entry["name"] = str(h["name"])
            h_out.append(entry)
        if h_out:
            m["hooks"] = h_out
        cols = _columns(r.get("columns"), name, rep)
        if cols:
            m["columns"] = cols
        if r.get("timeout") not in (None, "", 0):
            try:
                m["timeout"] = float(r["timeout"])
            except (TypeError, ValueError):
                rep.unmapped.append((f"module '{name}' timeout", f"not a number: {r['timeout']!r}"))
        if r.get("schedule"):
            m["schedule"] = str(r["schedule"]).strip()
        if not _truthy(r.get("enabled")):
            m["enabled"] = False
        if r.get("description"):
            m["description"] = str(r["description"])
        if r.get("group") is not None:
            module_group.append((r["group"], r.get("group_order"), name))
        modules.append(m)
    rep.counts["modules"] = len(modules)
    rep.counts["watermarks"] = sum(len(m.get("watermarks", [])) for m in modules)
    rep.counts["hooks"] = sum(len(m.get("hooks", [])) for m in modules)

    # groups ---------------------------------------------------------------------------------------
    groups: dict[str, dict[str, Any]] = {}
    group_by_id: dict[Any, str] = {}
    group_by_name: dict[str, str] = {}
    gtaken: set[str] = set()
    for r in _rows(con, d.tables.get("group")):
        gname = _safe_name(r.get("name") or f"group_{r.get('id')}", "group", gtaken, rep, module_rule=True)
        g: dict[str, Any] = {"modules": []}
        if r.get("schedule"):
            g["schedule"] = str(r["schedule"]).strip()
        g["stop_on_failure"] = _truthy(r.get("stop_on_failure"), True)
        if r.get("description"):
            g["description"] = str(r["description"])
        if not _truthy(r.get("enabled")) and g.get("schedule"):
            rep.unmapped.append((f"group '{gname}' schedule", "not imported: the group was disabled in the original"))
            g.pop("schedule")
        groups[gname] = g
        if r.get("id") is not None:
            group_by_id[r["id"]] = gname
        group_by_name[str(r.get("name"))] = gname
    members: list[tuple[str, Any, Any, str]] = []
    for r in _rows(con, d.tables.get("group_member")):
        gname_ref = _ref(r.get("group"), group_by_id, group_by_name)
        mname = _ref(r.get("module"), mod_by_id, mod_by_name)
        if gname_ref is None or mname is None:
            rep.problems.append(f"group member row {r['_raw']!r}: its group or module was not found; not imported")
            continue
        members.append((gname_ref, _num(r.get("order")), _num(r.get("id")), mname))
    for gref, order, mname in module_group:
        gname_ref = _ref(gref, group_by_id, group_by_name)
        if gname_ref is not None:
            members.append((gname_ref, _num(order), 0, mname))
    for gname_ref, _o, _i, mname in sorted(members, key=lambda x: (x[0], x[1], x[2])):
        if mname not in groups[gname_ref]["modules"]:
            if any(mname in g["modules"] for g in groups.values()):
                rep.problems.append(f"module '{mname}' is in more than one group; kept in the first, dropped from "
                                    f"'{gname_ref}' (a module belongs to at most one group)")
                continue
            groups[gname_ref]["modules"].append(mname)
    for r in _rows(con, d.tables.get("schedule")):
        cron = str(r.get("cron") or "").strip()
        if not cron:
            continue
        if not _truthy(r.get("enabled")):
            rep.unmapped.append((f"schedule '{cron}'", "not imported: disabled in the original"))
            continue
        gname_ref = _ref(r.get("group"), group_by_id, group_by_name)
        mname = _ref(r.get("module"), mod_by_id, mod_by_name)
        if gname_ref is not None:
            if groups[gname_ref].get("schedule") not in (None, cron):
                rep.unmapped.append((f"group '{gname_ref}' schedule '{cron}'",
                                     "not imported: the group has another schedule already (one per group)"))
            else:
                groups[gname_ref]["schedule"] = cron
        elif mname is not None:
            mod = next(m for m in modules if m["name"] == mname)
            mod["schedule"] = cron
        else:
            rep.problems.append(f"schedule {cron!r}: neither its group nor its module was found; not imported")
    for gname, g in list(groups.items()):
        if not g["modules"]:
            rep.unmapped.append((f"group '{gname}'", "not imported: it has no modules"))
            del groups[gname]
    rep.counts["groups"] = len(groups)
    rep.notes.append("every module uses transport: auto (native for PostgreSQL and SQLite sources, jrunner for "
                     "DB2 for i and SQL Server), where the original ran everything through jrunner")
    return Imported(conns, modules, groups, rep)


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("inf")


_COL_KEYS = ("source_name", "source_type", "dest_name", "dest_type")


def _columns(raw: Any, module: str, rep: ImportReport) -> list[dict[str, Any]]:
    if raw in (None, "", "[]"):
        return []
    try:
        data = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
    except ValueError as e:
        rep.unmapped.append((f"module '{module}' columns_json", f"not valid JSON ({e}); columns: left out"))
        return []
    if not isinstance(data, list):
        rep.unmapped.append((f"module '{module}' columns_json", "not a JSON list; columns: left out"))
        return []
    out = []
    extra: set[str] = set()
    for item in data:
        if not isinstance(item, dict):
            rep.unmapped.append((f"module '{module}' columns_json item {item!r}", "not an object; left out"))
            continue
        by_norm = {norm(k): k for k in item}
        col: dict[str, Any] = {}
        for k in _COL_KEYS:
            src = by_norm.get(k) or by_norm.get(k.replace("_name", "")) or by_norm.get(k.replace("dest_", "target_"))
            if src is not None and item[src] not in (None, ""):
                col[k] = str(item[src])
        extra |= {k for k in item if k not in [by_norm.get(x) for x in _COL_KEYS]
                  and norm(k) not in ("source", "dest", "target_name", "target_type")}
        if "source_name" not in col:
            rep.unmapped.append((f"module '{module}' columns_json item {item!r}", "has no source_name; left out"))
            continue
        out.append(col)
    for k in sorted(extra):
        rep.unmapped.append((f"module '{module}' columns_json key '{k}'", "no field of that meaning"))
    return out


# -------------------------------------------------------------------------------------- writing

HEADER = "# imported by `pipekit import-original` from {src}\n# fields it could not map are listed in its report\n"


def render(imp: Imported) -> dict[str, str]:
    """File name -> YAML text."""
    from pipekit_core.authoring.new import _indent, _scalar, module_yaml

    head = HEADER.format(src=Path(imp.report.source).name)
    files: dict[str, str] = {}
    if imp.connections:
        body = yaml.safe_dump({"connections": imp.connections}, sort_keys=False, default_flow_style=False,
                              width=10**9, allow_unicode=True)
        files["connections.yaml"] = head + body
    if imp.modules:
        files["modules.yaml"] = head + "modules:\n" + "\n".join(_indent(module_yaml(m), 2) for m in imp.modules)
    if imp.groups:
        lines = ["groups:"]
        for name, g in imp.groups.items():
            lines.append(f"  {_scalar(name)}:")
            lines.append(f"    modules: {_scalar(g['modules'])}")
            if g.get("schedule"):
                lines.append(f"    schedule: {json.dumps(g['schedule'])}")
            lines.append(f"    stop_on_failure: {_scalar(g['stop_on_failure'])}")
            if g.get("description"):
                lines.append(f"    description: {_scalar(g['description'])}")
        text = "\n".join(lines) + "\n"
        if yaml.safe_load(text) != {"groups": imp.groups}:  # pragma: no cover - the lines above are the writer
            raise ImportError_("internal error: groups.yaml does not read back as imported")
        files["groups.yaml"] = head + text
    return files


def write_import(imp: Imported, out: Path, *, force: bool = False, defs: Path | None = None,
                 timezone: str = "UTC") -> ImportReport:
    """Write the files under ``out`` and validate them (with the whole definitions folder when
    ``out`` is inside ``defs``); the validation's problems go into the report."""
    from pipekit_core.defs import load_catalog

    files = render(imp)
    existing = [out / f for f in files if (out / f).exists()]
    if existing and not force:
        raise ImportError_(f"{', '.join(str(p) for p in existing)} already exist(s); remove them or pass --force")
    used_names = set(imp.connections) | {m["name"] for m in imp.modules} | set(imp.groups)
    out.mkdir(parents=True, exist_ok=True)
    for fname, text in files.items():
        (out / fname).write_text(text, encoding="utf-8")
        imp.report.files.append(str(out / fname))
    root = out
    if defs is not None:
        try:
            out.resolve().relative_to(defs.resolve())
            root = defs
        except ValueError:
            pass
    cat = load_catalog(root, timezone)
    imp.report.problems.extend(str(p) for p in cat.problems)
    imp.report.warnings.extend(w for w in cat.warnings if any(n in w for n in used_names))
    return imp.report


def is_valid_module_name(name: str) -> bool:
    return MODULE_NAME_RE.match(name) is not None
