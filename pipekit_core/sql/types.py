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
from collections.abc import Callable
from typing import Any

__all__ = ["DEST_KINDS", "SOURCE_KINDS", "TYPE_MAP_DOC", "InexactValue", "map_type", "value_guard"]

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


def sqlite_affinity(declared: str) -> str:
    """The affinity of a SQLite column declared ``declared`` (BLOB for no type)."""
    return _sqlite_affinity(declared) if declared.strip() else "BLOB"


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


# Declared SQLite types that name a PostgreSQL type exactly; the rest go by affinity below.
# Every SQLite integer is 64-bit and every REAL an 8-byte float, whatever the spelling says.
# DATETIME/TIMESTAMP stay text: SQLite keeps any text there ('now', '...Z', unix seconds), which
# a PostgreSQL timestamp would reinterpret (the current time, a dropped zone) rather than refuse.
_SQLITE_DECLARED_PG = {"boolean": "boolean", "bool": "boolean", "date": "date"}


def _sqlite_to_pg(source_type: str) -> str:
    """A PostgreSQL type for an SQLite declared type (or a sampled Python value type).

    The declared type comes first: ``DECIMAL(15,2)`` -> ``numeric(15,2)``, ``CHAR(10)`` ->
    ``char(10)``, ``VARCHAR(50)`` -> ``varchar(50)``, ``DATE`` -> ``date`` (a value that is not
    an ISO date then fails the run, see :func:`value_guard`), ``BOOLEAN`` -> ``boolean``; any ``INT`` spelling -> ``bigint`` and
    ``REAL``/``FLOAT``/``DOUBLE`` -> ``double precision`` (SQLite's storage sizes); otherwise
    SQLite's affinity rules decide.
    """
    t = source_type.strip()
    if t in _PY_VALUE_TYPES:
        t = _PY_VALUE_TYPES[t]
    if not t:  # no declared type and no value seen
        return "text"
    aff = _sqlite_affinity(t)
    if aff in ("INTEGER", "REAL", "BLOB"):
        return _SQLITE_AFFINITY_TO_PG[aff]
    low = " ".join(t.lower().split())
    m = _GENERIC_RE.match(low)
    if m and m["base"] in _SQLITE_DECLARED_PG and not m["mod"]:
        return _SQLITE_DECLARED_PG[m["base"]]
    if m and m["base"] in ("decimal", "numeric", "dec", "char", "character", "nchar", "varchar",
                           "character varying", "nvarchar", "varying character", "native character"):
        if m["base"] in ("varying character",):
            low = "varchar" + low[len("varying character"):]
        if m["base"] == "native character":
            low = "char" + low[len("native character"):]
        return _generic_to_pg("sqlite", low)
    if aff == "TEXT":
        return "text"
    return "text"  # another NUMERIC-affinity name: SQLite keeps whatever was written


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
        ["INTEGER", "REAL", "TEXT", "BLOB", "NUMERIC(10,2)", "DECIMAL(15,2)", "CHAR(10)", "VARCHAR(50)"]
        + ["DATE", "BOOLEAN", "DATETIME", ""]
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


# ----------------------------------------------------------------------------- schema changes

Widening = str  # 'same' | 'lossless' | 'lossy'

_INT_DIGITS = {"smallint": 5, "integer": 10, "bigint": 19}
_INT_RANK = {"smallint": 1, "integer": 2, "bigint": 3}


def _pg_canon(type_text: str) -> str | None:
    """A PostgreSQL type in one spelling (``character varying(10)`` -> ``varchar(10)``), or None when
    pipekit does not know the type (enums, domains, extension types)."""
    t = " ".join(type_text.strip().lower().split())
    if not t:
        return None
    canon, _ = _pg_type(t)
    if canon in ("text", "text[]"):
        base = t.lstrip("_").split("(")[0].split("[")[0].strip()
        if base not in ("text", "name", "char", "\"char\""):
            return None
    if canon == "varchar":  # varchar without a length holds any text
        return "text"
    return canon


def _mod(canon: str, head: str) -> tuple[int, ...] | None:
    m = re.fullmatch(re.escape(head) + r"(?:\((\d+)(?:,(-?\d+))?\))?", canon)
    if not m:
        return None
    return tuple(int(g) for g in m.groups() if g is not None)


def widening(old: str, new: str, dialect: str) -> Widening:
    """How a column of type ``old`` compares with type ``new`` on a ``dialect`` destination.

    ``'same'``: the same type (or types pipekit cannot judge: SQLite affinities, enums, domains);
    ``'lossless'``: every ``old`` value is exactly a ``new`` value, so ``ALTER COLUMN ... TYPE new``
    loses nothing (smallint -> integer -> bigint, an integer -> numeric with room for its digits,
    real -> double precision, varchar(n)/char(n) -> varchar(m >= n) or text, numeric(p,s) ->
    numeric(p2, s2) with s2 >= s and p2 - s2 >= p - s, numeric(p,s) -> numeric);
    ``'lossy'``: anything else. The one place pipekit decides what a schema change may alter.
    """
    if dialect != "postgresql":
        return "same"  # SQLite: declared types are affinities; a column holds any value
    a, b = _pg_canon(old), _pg_canon(new)
    if a is None or b is None or a == b:
        return "same"
    if a.endswith("[]") or b.endswith("[]"):
        return "lossy"
    if a in _INT_RANK:
        if b in _INT_RANK:
            return "lossless" if _INT_RANK[b] > _INT_RANK[a] else "lossy"
        nb = _mod(b, "numeric")
        if nb is not None:
            return "lossless" if not nb or nb[0] - (nb[1] if len(nb) > 1 else 0) >= _INT_DIGITS[a] else "lossy"
        if b == "double precision":
            return "lossless" if a != "bigint" else "lossy"
        if b == "real":
            return "lossless" if a == "smallint" else "lossy"
        return "lossy"
    if a == "real" and b == "double precision":
        return "lossless"
    na, nb = _mod(a, "numeric"), _mod(b, "numeric")
    if na is not None and nb is not None:
        if not nb:
            return "lossless"  # unconstrained numeric holds any numeric
        if not na:
            return "lossy"
        pa, sa = na[0], (na[1] if len(na) > 1 else 0)
        pb, sb = nb[0], (nb[1] if len(nb) > 1 else 0)
        return "lossless" if sb >= sa and pb - sb >= pa - sa else "lossy"
    for head in ("timestamp", "time"):
        for tail in ("", " with time zone"):
            ta, tb = _precision(a, head, tail), _precision(b, head, tail)
            if ta is not None and tb is not None:  # timestamp(3) -> timestamp(6) / timestamp
                return "lossless" if tb >= ta else "lossy"
    la = _mod(a, "varchar") or _mod(a, "char")
    if la:
        if b == "text":
            return "lossless"
        lb = _mod(b, "varchar")
        if lb and lb[0] >= la[0]:
            return "lossless"
        return "lossy"
    return "lossy"


# ----------------------------------------------------------------------------- exact values

class InexactValue(ValueError):
    """A value the destination column type cannot hold exactly; ``hint`` is a type that can."""

    def __init__(self, reason: str, hint: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint


def _fits_float32(v: float) -> bool:
    import struct

    try:
        return struct.unpack("f", struct.pack("f", v))[0] == v or v != v
    except OverflowError:
        return False


_ISO_DATE_RE = re.compile(r"^(\d{4,}-\d\d-\d\d( BC)?|-?infinity)$")


def value_guard(dest_kind: str, dest_type: str) -> Callable[[Any], Any] | None:
    """A function that passes a Python value (int/float/str/...) bound for a ``dest_type`` column
    on a ``dest_kind`` destination, made exact for it, or raises :class:`InexactValue`.

    The one place pipekit decides, per value, whether a row-by-row copy (sources read into Python:
    SQLite, PostgreSQL -> SQLite) would lose precision: an int beyond 2**53 into a double, a real
    with a fraction into an integer, digits beyond a numeric's scale (PostgreSQL would round), a
    float into a REAL4 it does not fit. Floats bound for text get their shortest exact form
    (``repr``), never SQLite's 15-digit rendering. None: nothing to check for this type.
    """
    if dest_kind == "sqlite":
        aff = _sqlite_affinity(dest_type) if dest_type.strip() else "BLOB"
        if aff == "REAL":
            def real8(v: Any) -> Any:
                if isinstance(v, int) and not isinstance(v, bool) and float(v) != v:
                    raise InexactValue(f"the integer {v} has no exact 64-bit float form", "NUMERIC")
                return v
            return real8
        if aff == "TEXT":
            return lambda v: repr(v) if isinstance(v, float) else v
        return None
    canon, cls = _pg_type(dest_type)
    if canon == "date":
        def date(v: Any) -> Any:
            # PostgreSQL reads 'now', 'today', 'epoch', '2024-05-01 10:00' as dates without a word.
            if isinstance(v, str) and not _ISO_DATE_RE.match(v):
                raise InexactValue(f"{v!r} is not an ISO date (YYYY-MM-DD)", "text")
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                raise InexactValue(f"the number {v!r} is not a date", "text")
            return v
        return date
    if cls == _INT:
        def integer(v: Any) -> Any:
            if isinstance(v, float):
                if not v.is_integer():
                    raise InexactValue(f"the real {v!r} is not a whole number", "double precision")
                return int(v)
            return v
        return integer
    if canon == "real":
        def real4(v: Any) -> Any:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                if (isinstance(v, int) and float(v) != v) or not _fits_float32(float(v)):
                    raise InexactValue(f"{v!r} has no exact 32-bit float (real) form", "double precision")
            return v
        return real4
    if canon == "double precision":
        def double(v: Any) -> Any:
            if isinstance(v, int) and not isinstance(v, bool) and float(v) != v:
                raise InexactValue(f"the integer {v} has no exact 64-bit float form", "numeric")
            return v
        return double
    m = re.fullmatch(r"numeric\((\d+)(?:,(-?\d+))?\)", canon)
    if m:
        scale = int(m[2] or 0)
        from decimal import Decimal, InvalidOperation

        def numeric(v: Any) -> Any:
            if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                return v
            try:
                d = Decimal(repr(v) if isinstance(v, float) else str(v).strip())
                rounded = d.is_finite() and d != d.quantize(Decimal(1).scaleb(-scale), rounding="ROUND_DOWN")
            except InvalidOperation:
                return v  # not a number, or too many digits: the database's own error names it
            if rounded:
                raise InexactValue(f"{v!r} has more than {scale} decimal places (it would be rounded)", "numeric")
            return v
        return numeric
    return None  # psycopg writes floats in their shortest exact form (repr) already


def _precision(canon: str, head: str, tail: str) -> int | None:
    """Fractional-second digits of a time/timestamp type (6 when not given), None for other types."""
    m = re.fullmatch(re.escape(head) + r"(?:\((\d+)\))?" + re.escape(tail), canon)
    return None if m is None else int(m[1] or 6)


def holds(dest_type: str, source_type: str, dialect: str) -> bool:
    """True when a ``dest_type`` column already stores every value of ``source_type`` exactly, so an
    undeclared source type needs no change: the same type, a lossless widening the other way round
    (an ``int4`` source into a ``bigint`` column), or a text column (every value has its text form)."""
    if widening(source_type, dest_type, dialect) in ("same", "lossless"):
        return True
    return _pg_canon(dest_type) == "text" and not source_type.strip().endswith("]")
