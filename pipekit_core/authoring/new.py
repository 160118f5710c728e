"""``pipekit new``: write a module from a source table or query.

The module gets the query, explicit ``columns:`` (source and destination names and types, from
the source's catalog or the query's result and the one type map), ``merge_key`` from the primary
key (or ``--key``), and for ``--incremental-by COL`` a watermark on that column that reads the
destination's maximum, with a default that lets the first run read everything.

Writing: a new file gets the module alone; an existing file gets it appended *as text* at the end
of its ``modules:`` list (or a new ``modules:`` key at the end), so its comments, order and
formatting stay exactly as they were. What was written is then validated with the rules of
``pipekit validate``; on a problem the file is put back as it was and the problems are raised.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipekit_core.config import Settings
from pipekit_core.defs import Catalog, load_catalog
from pipekit_core.errors import PipekitError
from pipekit_core.models import MODULE_NAME_RE, PLACEHOLDER_RE
from pipekit_core.secrets import Secrets
from pipekit_core.sql.dialects import ColumnDef, get_dialect, parse_table_name
from pipekit_core.sql.types import map_type

__all__ = ["NewError", "NewModule", "NewRequest", "append_module_text", "build_module", "module_yaml", "write_module"]

STRATEGIES = ("full", "incremental", "append")


class NewError(PipekitError):
    """``pipekit new`` cannot write the module (what is wrong, and what to give instead)."""


@dataclass
class NewRequest:
    """The options of ``pipekit new``."""

    name: str
    source: str
    table: str | None = None
    query: str | None = None
    query_file: str | None = None
    dest: str | None = None
    dest_table: str | None = None
    strategy: str | None = None
    key: list[str] | None = None
    incremental_by: str | None = None
    file: Path | None = None


@dataclass
class Col:
    source_name: str
    source_type: str | None
    dest_name: str
    dest_type: str
    nullable: bool = True
    pk: int | None = None


@dataclass
class NewModule:
    """The module as written: its mapping, its YAML text, the file and the first run's DDL."""

    name: str
    module: dict[str, Any]
    text: str
    path: Path
    appended: bool
    ddl: list[str]
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"module": self.name, "file": str(self.path), "appended": self.appended, "definition": self.module,
                "ddl": self.ddl, "notes": self.notes}


# ----------------------------------------------------------------------------- identifiers

# Words that cannot be a bare column or table name on at least one of the source dialects.
_RESERVED = frozenset("""
all alter and any as asc between by case cast check column constraint create cross current current_date
current_time current_timestamp current_user date default delete desc distinct drop else end except exists
false fetch for foreign from full grant group having in index inner insert intersect into is join key left
like limit not null of offset on or order outer primary references right rows select session_user set some
table then time timestamp to true union unique update user using values view when where with year month day
hour minute second level position value
""".split())

_PLAIN = {
    "postgresql": re.compile(r"^[a-z_][a-z0-9_$]*$"),
    "sqlite": re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$"),
    "as400": re.compile(r"^[A-Z_#@$][A-Z0-9_#@$]*$"),
    "db2": re.compile(r"^[A-Z_#@$][A-Z0-9_#@$]*$"),
    "sqlserver": re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$"),
}


def sql_ident(kind: str, name: str) -> str:
    """``name`` bare when the database reads it back unchanged, else quoted by the dialect."""
    plain = _PLAIN.get(kind)
    if plain is not None and plain.match(name) and name.lower() not in _RESERVED:
        return name
    return get_dialect(kind).quote(name)


def dest_name(name: str) -> str:
    """A destination column name: a plain identifier in lower case (``CUSTNO`` -> ``custno``),
    anything else (spaces, other characters) as it is."""
    return name.lower() if re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name) else name


# ---------------------------------------------------------------------------------- YAML text

def _scalar(v: Any) -> str:
    text = yaml.safe_dump(v, default_flow_style=True, sort_keys=False, width=10**9, allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...").rstrip("\n")


def _block(key: str, text: str, indent: str) -> list[str]:
    """``key: |`` and the text's lines (a literal block), or ``key: value`` for one line without a
    line end. Trailing blanks are dropped from each line."""
    if "\n" not in text:
        return [f"{indent}{key}: {_scalar(text)}"]
    lines = [ln.rstrip() for ln in text.strip("\n").splitlines()]
    head = "|" + ("2" if lines and lines[0][:1].isspace() else "") + ("" if text.endswith("\n") else "-")
    return [f"{indent}{key}: {head}", *[(f"{indent}  {ln}" if ln else "") for ln in lines]]


def module_yaml(module: dict[str, Any]) -> str:
    """One module as a block-sequence item (``- name: ...``) at column 0, ending with a newline.

    Queries are literal blocks; watermarks and hooks are nested items; columns are one flow
    mapping per line, so a 40-column table stays readable.
    """
    out: list[str] = []
    first = True
    for k, v in module.items():
        lead = "- " if first else "  "
        first = False
        if k in ("query", "sql") and isinstance(v, str):
            out += [lead + ln[2:] if i == 0 else ln for i, ln in enumerate(_block(k, v, "  "))]
        elif k in ("watermarks", "hooks") and isinstance(v, list):
            out.append(f"{lead}{k}:")
            for item in v:
                sub = True
                for ik, iv in item.items():
                    pre = "    - " if sub else "      "
                    sub = False
                    if ik == "sql" and isinstance(iv, str) and "\n" in iv.strip():
                        blk = _block(ik, iv, "      ")
                        out.append(pre + blk[0].lstrip())
                        out += blk[1:]
                    else:
                        out.append(f"{pre}{ik}: {_scalar(iv)}")
        elif k == "columns" and isinstance(v, list):
            out.append(f"{lead}{k}:")
            out += [f"    - {_scalar(c)}" for c in v]
        elif k == "schedule" and isinstance(v, str):
            out.append(f"{lead}{k}: {json.dumps(v)}")  # cron in quotes, as the README writes it
        else:
            out.append(f"{lead}{k}: {_scalar(v)}")
    text = "\n".join(out) + "\n"
    back = yaml.safe_load(text)
    if back != [module]:  # pragma: no cover - the emitter above is the only writer
        raise NewError(f"internal error: the YAML written for module '{module.get('name')}' does not read back the same")
    return text


def append_module_text(existing: str, item: str, file: Path) -> str:
    """``existing`` with ``item`` (a ``- name: ...`` block at column 0) added to its ``modules:``.

    A text edit, never a re-dump: the item goes at the end of the block sequence under the
    top-level ``modules:`` key (at that sequence's indentation), or, when there is no such key,
    a ``modules:`` key is added at the end of the file. Comments, order and layout stay.
    """
    try:
        root = yaml.compose(existing) if existing.strip() else None
    except yaml.YAMLError as e:
        raise NewError(f"{file}: is not valid YAML, so nothing was appended: {e}") from None
    text = existing if existing.endswith("\n") or not existing else existing + "\n"
    if root is None:
        return text + "modules:\n" + _indent(item, 2)
    if not isinstance(root, yaml.MappingNode):
        raise NewError(f"{file}: the top level is not a mapping (connections/modules/groups); write the module "
                       "to another file with --file")
    for key, value in root.value:
        if not (isinstance(key, yaml.ScalarNode) and key.value == "modules"):
            continue
        if isinstance(value, yaml.ScalarNode) and value.value in ("", "~", "null"):
            lines = text.splitlines(keepends=True)
            at = key.start_mark.line + 1
            return "".join(lines[:at]) + _indent(item, 2) + "".join(lines[at:])
        if not isinstance(value, yaml.SequenceNode):
            raise NewError(f"{file}:{key.start_mark.line + 1}: 'modules:' is not a list; fix the file or use --file")
        if value.flow_style and not value.value:  # modules: [] -> a block list with the new item
            lines = text.splitlines(keepends=True)
            ln = lines[value.start_mark.line]
            before, after = ln[: value.start_mark.column], ln[value.end_mark.column :]
            rest = after.strip()
            lines[value.start_mark.line] = before.rstrip() + (f"  {rest}" if rest else "") + "\n" + _indent(item, 2)
            return "".join(lines)
        if value.flow_style:
            raise NewError(f"{file}:{value.start_mark.line + 1}: 'modules:' is written in flow style ([...]); "
                           "pipekit new appends to block lists (- name: ...); rewrite it as one or use --file")
        indent = value.start_mark.column
        lines = text.splitlines(keepends=True)
        end = value.end_mark
        at = end.line if end.column == 0 or end.line >= len(lines) else end.line + 1
        # keep blank lines and comments that follow the last item above the new one only when they
        # are indented as part of the list; a top-level comment introducing the next key stays put
        while at > 0 and at <= len(lines) and _is_toplevel_comment_or_blank(lines[at - 1], indent):
            at -= 1
        return "".join(lines[:at]) + _indent(item, indent) + "".join(lines[at:])
    return text + "modules:\n" + _indent(item, 2)


def _is_toplevel_comment_or_blank(line: str, indent: int) -> bool:
    s = line.strip()
    if not s:
        return True
    return s.startswith("#") and (len(line) - len(line.lstrip())) < max(indent, 1)


def _indent(item: str, n: int) -> str:
    pad = " " * n
    return "".join((pad + ln if ln.strip() else ln) for ln in item.splitlines(keepends=True))


# ------------------------------------------------------------------------------------ building

def _columns_from_table(cat: Any, conn: str, table: str) -> tuple[str, str, list[Col]]:
    from pipekit_core.authoring.inspect import resolve_table, split_target

    schema, name, sq, tq = split_target(table)
    if name is None:  # one part: a table in the default schema
        schema, name, sq, tq = None, schema, False, sq
    assert name is not None
    s, t = resolve_table(cat, f"connection '{conn}'", schema, name, sq, tq)
    cols = [Col(c.name, c.type, dest_name(c.name), "", c.nullable, c.pk) for c in cat.columns(s, t)]
    if not cols:
        raise NewError(f"connection '{conn}': table {s}.{t} has no columns")
    return s, t, cols


def build_module(req: NewRequest, settings: Settings, catalog: Catalog, secrets: Secrets | None = None,
                 log: Any = None) -> NewModule:
    """The module for ``req``, not yet written (``path`` is where it would go)."""
    from pipekit_core.authoring.inspect import endpoint_for, open_catalog

    notes: list[str] = []
    if not MODULE_NAME_RE.match(req.name):
        raise NewError(f"module name '{req.name}': use lower-case letters, digits and underscores, starting with a letter")
    if req.name in catalog.modules:
        m = catalog.modules[req.name]
        raise NewError(f"module '{req.name}' already exists ({m.source_file}); choose another name")
    if sum(x is not None for x in (req.table, req.query, req.query_file)) != 1:
        raise NewError("give exactly one of --table SCHEMA.TABLE, --query SQL or --query-file FILE")
    src_conn = catalog.connection(req.source)
    dest = req.dest or _default_dest(catalog, req.source)
    dst_conn = catalog.connection(dest)
    if not dst_conn.has_native_driver:
        raise NewError(f"destination '{dest}' ({dst_conn.kind}) has no native driver; destinations are PostgreSQL "
                       "or SQLite connections")
    secrets = secrets or Secrets(settings.secrets)
    src_ep = endpoint_for(catalog, secrets, req.source)
    src_kind = src_conn.kind
    dst_kind = dst_conn.kind
    sd = src_kind if src_kind in _PLAIN else "postgresql"

    query_text: str | None = None
    query_file: str | None = None
    source_table: tuple[str, str] | None = None
    if req.table is not None:
        with open_catalog(src_ep, settings, log) as cat:
            s, t, cols = _columns_from_table(cat, req.source, req.table)
            src_kind = cat.kind  # the catalog's dialect names the source types
        source_table = (s, t)
    else:
        sql = req.query
        if req.query_file is not None:
            p = Path(req.query_file)
            if not p.is_absolute():
                p = Path.cwd() / p
            try:
                sql = p.read_text(encoding="utf-8")
            except OSError as e:
                raise NewError(f"--query-file {req.query_file}: cannot read it ({e.strerror})") from None
            query_file = _relative_query_file(p, settings.defs, req.file)
        assert sql is not None
        if PLACEHOLDER_RE.search(sql):
            raise NewError("the query has {placeholders}: pipekit new describes the query before writing it, so give "
                           "it without them; --incremental-by COL adds the watermark and its placeholder")
        cols = _columns_from_query(src_ep, settings, sql, notes)
        query_text = sql.strip()

    seen: set[str] = set()
    for c in cols:
        if c.dest_name.lower() in seen:
            raise NewError(f"two source columns become '{c.dest_name}' on the destination; alias them apart")
        seen.add(c.dest_name.lower())
        c.dest_type = map_type(src_kind, dst_kind, c.source_type or "text")

    # strategy, key
    strategy = req.strategy or ("incremental" if req.incremental_by else "full")
    if strategy not in STRATEGIES:
        raise NewError(f"--strategy {strategy!r}: use one of {', '.join(STRATEGIES)} (window needs partitions: "
                       "written by hand)")
    if req.incremental_by and strategy == "full":
        raise NewError("--incremental-by with --strategy full: a full refresh reads everything; use incremental or "
                       "append")
    key: list[str] = []
    if req.key:
        key = [_find(cols, k, "--key").dest_name for k in req.key]
    else:
        key = [c.dest_name for c in sorted((c for c in cols if c.pk), key=lambda c: c.pk or 0)]
        if key:
            notes.append(f"merge_key from the primary key of {source_table[0]}.{source_table[1]}" if source_table
                         else "merge_key from the primary key")
    if strategy == "incremental" and not key:
        raise NewError("strategy incremental needs a merge key and the source has no primary key; give --key COLS")
    for c in cols:
        if c.dest_name in key:
            c.pk = c.pk or (key.index(c.dest_name) + 1)

    # destination table
    if req.dest_table:
        try:
            parse_table_name(req.dest_table)
        except ValueError as e:
            raise NewError(f"--dest-table: {e}") from None
        dest_table = req.dest_table
    elif source_table is not None:
        s, t = source_table
        tn = dest_name(t)
        if dst_kind == "sqlite":
            dest_table = tn
        else:
            schema = "public" if src_kind == "sqlite" else dest_name(s)
            dest_table = f"{schema}.{tn}"
    else:
        dest_table = req.name if dst_kind == "sqlite" else f"public.{req.name}"
    dest_tn = parse_table_name(dest_table)
    ddia = get_dialect(dst_kind)

    # the query
    wm: dict[str, Any] | None = None
    where = ""
    if req.incremental_by:
        c = _find(cols, req.incremental_by, "--incremental-by")
        wm_name = f"last_{re.sub(r'[^a-z0-9_]', '_', c.dest_name.lower())}"
        # the column's class, read from its PostgreSQL form (a SQLite destination keeps times as TEXT)
        pg_form = map_type(src_kind, "postgresql", c.source_type) if c.source_type else c.dest_type
        numeric = bool(re.match(r"^(smallint|integer|bigint|numeric|real|double|oid)", pg_form.lower()))
        temporal = pg_form.lower().startswith(("timestamp", "date"))
        is_date = pg_form.lower() == "date"
        max_expr = f"max({sql_ident(dst_kind, c.dest_name)})"
        if (dst_kind == "postgresql" and src_kind == "sqlserver"
                and (c.source_type or "").lower() in ("datetime", "smalldatetime")):
            # SQL Server's datetime takes at most 3 fractional digits in a literal
            max_expr = f"to_char({max_expr}, 'YYYY-MM-DD HH24:MI:SS.MS')"
        default = "0" if numeric else ("1900-01-01" if is_date else "1900-01-01 00:00:00" if temporal else "0")
        if not numeric and not temporal:
            notes.append(f"watermark on text column {c.source_name}: compared as text, default '0'")
        table_text = ".".join(sql_ident(dst_kind, p) for p in (dest_tn.schema, dest_tn.name) if p is not None)
        wm = {"name": wm_name, "sql": f"SELECT {max_expr} FROM {table_text}", "connection": dest,
              "default": default}
        placeholder = "{" + wm_name + "}" if numeric else "'{" + wm_name + "}'"
        where = f"{sql_ident(sd, c.source_name)} > {placeholder}"
        notes.append(f"watermark {wm_name}: the destination's max({c.dest_name}); its first run (no table yet) uses "
                     f"the default {default}")
    if source_table is not None:
        s, t = source_table
        src_tab = sql_ident(sd, t) if src_kind == "sqlite" and s == "main" else f"{sql_ident(sd, s)}.{sql_ident(sd, t)}"
        names = [sql_ident(sd, c.source_name) for c in cols]
        select = ("SELECT " + ", ".join(names)) if len(names) <= 6 else ("SELECT\n  " + ",\n  ".join(names))
        query_text = f"{select}\nFROM {src_tab}" + (f"\nWHERE {where}" if where else "")
    elif where:
        body = (query_text or "").rstrip().rstrip(";").rstrip()
        query_text = f"SELECT * FROM (\n{body}\n) q\nWHERE {where}"
        if query_file is not None:
            notes.append("--incremental-by with --query-file: the module gets an inline query (the file wrapped with the "
                         "watermark condition); the file itself is not changed")
            query_file = None

    module: dict[str, Any] = {"name": req.name, "source": req.source, "dest": dest, "dest_table": dest_table}
    if query_file is not None:
        module["query_file"] = query_file
    else:
        module["query"] = (query_text or "") + "\n"
    module["strategy"] = strategy
    if key:
        module["merge_key"] = key
    if wm is not None:
        module["watermarks"] = [wm]
    columns = []
    for c in cols:
        d: dict[str, Any] = {"source_name": c.source_name}
        if c.source_type:
            d["source_type"] = c.source_type
        d["dest_name"] = c.dest_name
        d["dest_type"] = c.dest_type
        columns.append(d)
    module["columns"] = columns

    table_cols = [ColumnDef(c.dest_name, c.dest_type) for c in cols]
    pk = key if strategy == "incremental" else None
    ddl = ddia.create_table_sql(dest_tn, table_cols, pk)
    path = req.file or (settings.defs / f"{req.name}.yaml")
    if not path.is_absolute():
        path = Path.cwd() / path
    return NewModule(req.name, module, module_yaml(module), path, path.exists(), ddl, notes)


def _relative_query_file(p: Path, defs: Path, file: Path | None) -> str:
    base = (file.parent if file is not None else defs).resolve()
    try:
        return str(p.resolve().relative_to(base))
    except ValueError:
        return str(p.resolve())


def _default_dest(catalog: Catalog, source: str) -> str:
    native = [n for n, c in catalog.connections.items() if c.has_native_driver and n != source]
    if len(native) == 1:
        return native[0]
    if not native and catalog.connections[source].has_native_driver:
        return source
    raise NewError("give --dest CONNECTION" + (f" (one of {', '.join(sorted(native))})" if native else
                                                ": no PostgreSQL or SQLite connection is defined"))


def _find(cols: list[Col], name: str, option: str) -> Col:
    for c in cols:
        if name in (c.source_name, c.dest_name):
            return c
    for c in cols:
        if name.lower() in (c.source_name.lower(), c.dest_name.lower()):
            return c
    raise NewError(f"{option} {name}: no such column (columns: {', '.join(c.source_name for c in cols)})")


def _columns_from_query(ep: Any, settings: Settings, sql: str, notes: list[str]) -> list[Col]:
    from pipekit_core.db import NativeDB
    from pipekit_core.transport.base import TransportContext
    from pipekit_core.transport.jrunner import JrunnerTransport
    from pipekit_core.transport.native import describe_native

    if ep.kind in ("postgresql", "sqlite"):
        with NativeDB(ep, application="pipekit new") as db:
            described = describe_native(db, sql)
        return [Col(c.name, c.type, dest_name(c.name), "") for c in described]
    if not settings.jrunner:
        raise NewError(f"connection '{ep.name}' ({ep.kind}) is read through jrunner, which was not found "
                       f"('{settings.jrunner_setting}'); set PIPEKIT_JRUNNER")
    described = JrunnerTransport(TransportContext(jrunner=settings.jrunner)).describe(ep, sql)
    notes.append("jrunner reports a query's column names only: the columns get no source_type and dest_type text; "
                 "use --table, or edit columns: dest_type")
    return [Col(c.name, None, dest_name(c.name), "") for c in described]


# ------------------------------------------------------------------------------------ writing

def write_module(new: NewModule, settings: Settings) -> list[str]:
    """Write (or append) the module, validate the definitions, and undo the write on a problem.

    Returns the warnings ``pipekit validate`` would print. Raises NewError with the problems.
    """
    path = new.path
    defs = settings.defs.resolve()
    try:
        path.resolve().relative_to(defs)
    except ValueError:
        raise NewError(f"{path} is not under the definitions folder {defs} (PIPEKIT_DEFS); pipekit would not load it") from None
    if path.suffix not in (".yaml", ".yml"):
        raise NewError(f"{path}: module files end in .yaml or .yml")
    old = path.read_text(encoding="utf-8") if path.exists() else None
    if old is None:
        text = f"# written by `pipekit new {new.name}`; edit freely\nmodules:\n" + _indent(new.text, 2)
    else:
        text = append_module_text(old, new.text, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    cat = load_catalog(settings.defs, settings.local_timezone())
    mine = [p for p in cat.problems if p.module == new.name or Path(p.file).resolve() == path.resolve()]
    if mine or new.name not in cat.modules:
        if old is None:
            path.unlink()
        else:
            path.write_text(old, encoding="utf-8")
        shown = "\n".join(str(p) for p in mine) or f"module '{new.name}' did not load"
        raise NewError(f"the module did not validate, so {path} was left as it was:\n{shown}")
    return [w for w in cat.warnings if new.name in w]
