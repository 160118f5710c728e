"""Destination column types from source result types, per (source kind, destination kind).

Used when a module has no ``columns:`` and the destination table does not exist yet. The
source type is what the transport reports: a PostgreSQL ``pg_type`` name (``int4``,
``numeric(12,2)``, ``_int4``; ``format_type`` spellings such as ``character varying(20)`` are
understood too), an SQLite declared type or a Python value type name (``int``, ``str``,
``NoneType``), or a JDBC type name for SQL Server / DB2 sources. Whatever is not recognised
becomes text: a wrong guess would make the load fail, while text holds any value.
``TYPE_MAP_DOC`` is the mapping as a markdown table for the README.
"""

from __future__ import annotations

import re

__all__ = ["DEST_KINDS", "SOURCE_KINDS", "TYPE_MAP_DOC", "map_type"]

SOURCE_KINDS = ("postgresql", "sqlite", "sqlserver", "as400", "db2")
DEST_KINDS = ("postgresql", "sqlite")

# Storage classes used to derive the SQLite type from a PostgreSQL one.
_INT, _NUM, _REAL, _BOOL, _BLOB, _TEXT = "int", "numeric", "real", "bool", "blob", "text"
_SQLITE_OF_CLASS = {
    _INT: "INTEGER",
    _NUM: "NUMERIC",
    _REAL: "REAL",
    _BOOL: "INTEGER",
    _BLOB: "BLOB",
    _TEXT: "TEXT",
}

# PostgreSQL type name (pg_type or format_type spelling) -> (DDL head, DDL tail, class).
# The modifier, if any, goes between head and tail: timestamp(3) with time zone.
_PG: dict[str, tuple[str, str, str]] = {}
for _names, _spec in [
    (("int2", "smallint"), ("smallint", "", _INT)),
    (("int4", "int", "integer"), ("integer", "", _INT)),
    (("int8", "bigint"), ("bigint", "", _INT)),
    (("oid",), ("oid", "", _INT)),
    (("float4", "real"), ("real", "", _REAL)),
    (("float8", "double precision"), ("double precision", "", _REAL)),
    (("numeric", "decimal"), ("numeric", "", _NUM)),
    (("bool", "boolean"), ("boolean", "", _BOOL)),
    (("bytea",), ("bytea", "", _BLOB)),
    (("text", "name"), ("text", "", _TEXT)),
    (("varchar", "character varying"), ("varchar", "", _TEXT)),
    (("bpchar", "character"), ("char", "", _TEXT)),
    (("date",), ("date", "", _TEXT)),
    (("time",), ("time", "", _TEXT)),
    (("timetz",), ("time", " with time zone", _TEXT)),
    (("timestamp",), ("timestamp", "", _TEXT)),
    (("timestamptz",), ("timestamp", " with time zone", _TEXT)),
    (("varbit", "bit varying"), ("bit varying", "", _TEXT)),
]:
    for _n in _names:
        _PG[_n] = _spec
for _n in (
    "interval uuid json jsonb xml money inet cidr macaddr macaddr8 bit tsvector tsquery "
    "point line lseg box path polygon circle int4range int8range numrange tsrange tstzrange "
    "daterange int4multirange int8multirange nummultirange tsmultirange tstzmultirange "
    "datemultirange pg_lsn"
).split():
    _PG[_n] = (_n, "", _TEXT)

_PG_RE = re.compile(
    r"^(?P<base>[a-z_][a-z0-9_ ]*?)\s*(?:\((?P<mod>[^()]*)\))?\s*"
    r"(?P<tz>with(?:out)? time zone)?\s*(?P<arr>(?:\[\d*\])*)$"
)


def _pg_type(source_type: str) -> tuple[str, str]:
    """Canonical PostgreSQL DDL text and storage class for a PostgreSQL type name."""
    t = " ".join(source_type.strip().lower().split())
    array = False
    if t.startswith("_"):
        t, array = t[1:], True
    if t.startswith("interval"):  # interval, interval(3), interval day to second
        return (t + "[]" if array else t), _TEXT
    m = _PG_RE.match(t)
    if not m or (m["base"] not in _PG and m["base"] != "char"):
        return ("text[]" if array or (m and m["arr"]) else "text"), _TEXT
    base, mod, tz = m["base"], m["mod"], m["tz"]
    array = array or bool(m["arr"])
    if base == "char":  # "char" is PostgreSQL's 1-byte internal type; char(n) is bpchar
        head, tail, cls = ("char", "", _TEXT) if mod else ("text", "", _TEXT)
    else:
        head, tail, cls = _PG[base]
        if base in ("bpchar", "character") and not mod:
            head = "bpchar"  # bpchar without length is unbounded; plain "char" would mean char(1)
    if tz == "with time zone" and base in ("time", "timestamp"):
        tail = " with time zone"
    ddl = head + (f"({mod.replace(' ', '')})" if mod else "") + tail
    if array:
        return ddl + "[]", _TEXT
    return ddl, cls


# SQL Server / DB2 (JDBC) type names -> PostgreSQL DDL; a modifier is kept where marked.
_GENERIC: dict[str, tuple[str, bool]] = {
    "tinyint": ("smallint", False),
    "smallint": ("smallint", False),
    "int": ("integer", False),
    "integer": ("integer", False),
    "bigint": ("bigint", False),
    "decimal": ("numeric", True),
    "dec": ("numeric", True),
    "numeric": ("numeric", True),
    "decfloat": ("numeric", False),
    "money": ("numeric(19,4)", False),
    "smallmoney": ("numeric(10,4)", False),
    "real": ("real", False),
    "float": ("double precision", False),
    "double": ("double precision", False),
    "double precision": ("double precision", False),
    "bit": ("boolean", False),
    "boolean": ("boolean", False),
    "char": ("char", True),
    "character": ("char", True),
    "nchar": ("char", True),
    "graphic": ("char", True),
    "varchar": ("varchar", True),
    "nvarchar": ("varchar", True),
    "character varying": ("varchar", True),
    "vargraphic": ("varchar", True),
    "long varchar": ("text", False),
    "text": ("text", False),
    "ntext": ("text", False),
    "clob": ("text", False),
    "dbclob": ("text", False),
    "xml": ("text", False),
    "date": ("date", False),
    "time": ("time", False),
    "timestamp": ("timestamp", False),
    "datetime": ("timestamp", False),
    "datetime2": ("timestamp", False),
    "smalldatetime": ("timestamp", False),
    "datetimeoffset": ("timestamp with time zone", False),
    "binary": ("bytea", False),
    "varbinary": ("bytea", False),
    "blob": ("bytea", False),
    "image": ("bytea", False),
    "rowversion": ("bytea", False),
    "uniqueidentifier": ("uuid", False),
}
_GENERIC_RE = re.compile(r"^(?P<base>[a-z_][a-z0-9_ ]*?)\s*(?:\((?P<mod>[^()]*)\))?$")


def _generic_to_pg(source_kind: str, source_type: str) -> str:
    t = " ".join(source_type.strip().lower().split()).removesuffix(" identity")
    if t.endswith("for bit data"):  # DB2 CHAR(n) FOR BIT DATA: bytes
        return "bytea"
    if source_kind == "sqlserver" and t == "timestamp":  # SQL Server's rowversion
        return "bytea"
    m = _GENERIC_RE.match(t)
    if not m or m["base"] not in _GENERIC:
        return "text"
    ddl, keep_mod = _GENERIC[m["base"]]
    mod = (m["mod"] or "").replace(" ", "")
    if keep_mod and mod:
        if mod == "max":
            return "text"
        return f"{ddl}({mod})"
    if ddl == "char":
        return "bpchar"
    return ddl


_PY_VALUE_TYPES = {"int": "INTEGER", "float": "REAL", "str": "TEXT", "bytes": "BLOB", "NoneType": ""}
_SQLITE_AFFINITY_TO_PG = {"INTEGER": "bigint", "REAL": "double precision", "TEXT": "text", "BLOB": "bytea"}


def _sqlite_affinity(declared: str) -> str:
    """SQLite's column affinity rules (https://sqlite.org/datatype3.html, 3.1)."""
    d = declared.upper()
    if "INT" in d:
        return "INTEGER"
    if any(k in d for k in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in d or not d.strip():
        return "BLOB"
    if any(k in d for k in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def _sqlite_to_pg(source_type: str) -> str:
    t = source_type.strip()
    if t in _PY_VALUE_TYPES:
        t = _PY_VALUE_TYPES[t]
    if not t:  # no declared type and no value seen
        return "text"
    aff = _sqlite_affinity(t)
    if aff in _SQLITE_AFFINITY_TO_PG:
        return _SQLITE_AFFINITY_TO_PG[aff]
    m = re.match(r"^(NUMERIC|DECIMAL)\s*(\(\s*\d+\s*(,\s*\d+\s*)?\))?$", t, re.IGNORECASE)
    if m:
        return "numeric" + (m[2].replace(" ", "") if m[2] else "")
    return "text"  # BOOLEAN, DATE, DATETIME, ...: SQLite keeps whatever was written


def map_type(source_kind: str, dest_kind: str, source_type: str) -> str:
    """The destination column type for a source result column type.

    Args:
        source_kind: ``Connection.kind`` of the source (postgresql, sqlite, sqlserver, as400, db2).
        dest_kind: ``Connection.kind`` of the destination (postgresql or sqlite).
        source_type: the type the transport reports for the column.

    Returns:
        SQL type text for CREATE TABLE on the destination (``""`` = no declared type on SQLite).

    Raises:
        ValueError: unknown source kind, or a destination kind with no mapping.

    Example:
        >>> map_type("postgresql", "postgresql", "_int4")
        'integer[]'
        >>> map_type("postgresql", "sqlite", "numeric(12,2)")
        'NUMERIC'
    """
    src = source_kind.strip().lower()
    dst = dest_kind.strip().lower()
    src = "postgresql" if src == "postgres" else src
    dst = "postgresql" if dst == "postgres" else dst
    if src not in SOURCE_KINDS:
        raise ValueError(
            f"no type mapping from source kind {source_kind!r}; known: {', '.join(SOURCE_KINDS)}; "
            "declare the column types with columns: dest_type"
        )
    if dst not in DEST_KINDS:
        raise ValueError(
            f"no type mapping to destination kind {dest_kind!r}; destinations: {', '.join(DEST_KINDS)}"
        )
    if src == "sqlite":
        if dst == "sqlite":
            t = source_type.strip()
            return _PY_VALUE_TYPES.get(t, t)
        return _sqlite_to_pg(source_type)
    pg = _pg_type(source_type)[0] if src == "postgresql" else _generic_to_pg(src, source_type)
    if dst == "postgresql":
        return pg
    cls = _pg_type(pg)[1]
    if cls == _NUM and not _fits_sqlite_real(pg):
        return "TEXT"  # SQLite's NUMERIC keeps ~15 digits: the exact digits go in as text
    return _SQLITE_OF_CLASS[cls]


def _fits_sqlite_real(numeric_type: str) -> bool:
    """numeric(p[,s]) with p <= 15: every value fits a 64-bit float exactly (DBL_DIG is 15)."""
    m = re.match(r"^numeric\((\d+)(?:,-?\d+)?\)$", numeric_type.replace(" ", ""))
    return m is not None and int(m[1]) <= 15


_DOC_SAMPLES: list[tuple[str, list[str]]] = [
    (
        "postgresql",
        "int2 int4 int8 numeric numeric(12,2) float4 float8 bool text varchar(20) bpchar(3) date "
        "time timestamp timestamptz interval uuid json jsonb bytea _int4 _text my_enum".split(),
    ),
    (
        "sqlite",
        ["INTEGER", "REAL", "TEXT", "BLOB", "NUMERIC(10,2)", "BOOLEAN", "DATETIME", ""]
        + "int float str bytes NoneType".split(),
    ),
    (
        "sqlserver",
        "int bigint decimal(12,2) float bit nvarchar(50) nvarchar(max) datetime2 datetimeoffset "
        "varbinary(max) uniqueidentifier timestamp".split(),
    ),
    (
        "as400",
        ["INTEGER", "DECIMAL(11,2)", "CHAR(10)", "VARCHAR(50)", "CHAR(10) FOR BIT DATA"]
        + "DATE TIMESTAMP GRAPHIC(5) CLOB".split(),
    ),
]


def _build_doc() -> str:
    lines = [
        "| Source | Source type | PostgreSQL destination | SQLite destination |",
        "|---|---|---|---|",
    ]
    for kind, samples in _DOC_SAMPLES:
        for t in samples:
            pg = map_type(kind, "postgresql", t)
            lite = map_type(kind, "sqlite", t)
            shown = f"`{t}`" if t else "(none)"
            lines.append(f"| {kind} | {shown} | `{pg}` | {f'`{lite}`' if lite else '(none)'} |")
    lines += [
        "",
        "Notes: SQLite has no exact decimal type. `numeric(p,s)` with p <= 15 becomes `NUMERIC`",
        "(64-bit floats hold 15 significant digits exactly); wider or unconstrained `numeric`",
        "becomes `TEXT` holding the exact digits. Booleans become 0/1. Unrecognised types",
        "(enums, domains, composite types) become text. Declare `columns:` with `dest_type` to",
        "choose another type. What each type carries exactly is in docs/fidelity.md.",
    ]
    return "\n".join(lines)


TYPE_MAP_DOC: str = _build_doc()
