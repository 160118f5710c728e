"""Differential testing: random tables, module shapes and source changes through every transport
pair; after EVERY run the destination equals the canonical image of what the module should hold.

Values come from the fidelity matrix (tests/reliability/test_fidelity.py, docs/fidelity.md) plus a
few values that only a wrong session setting breaks. The PostgreSQL databases have hostile defaults
(conftest.HOSTILE). Canonical images:

- PostgreSQL destination fed by PostgreSQL: each cell's PostgreSQL text form read in a *pinned*
  session (DateStyle=ISO, IntervalStyle=postgres, extra_float_digits=3, TimeZone=UTC,
  bytea_output=hex): exact digits and scale of numerics, shortest round-trip floats, UTC-normalized
  timestamptz, hex bytea. A ``columns: dest_type: text`` cast must hold exactly that text.
- SQLite destination fed by PostgreSQL: the documented conversion per type with its storage class
  (test_fidelity.TO_SQLITE, docs/fidelity.md "PostgreSQL -> SQLite").
- PostgreSQL destination fed by SQLite: the Python value SQLite holds, exactly (int, float, str,
  bytes); a declared NUMERIC(p,s) arrives as numeric(p,s) with its scale (README type table,
  "sqlite | NUMERIC(10,2) | numeric(10,2)"); an undeclared int/real column keeps every value exact
  (issue 10 §3: never silent precision loss).
- SQLite destination fed by SQLite: the value and storage class the source holds.

Module model: ``full`` = the source; ``incremental`` (watermark ``max(ver)`` on the destination) =
by merge key, NULL-safely (README "Keys match NULL-safely"), the latest source row whose ``ver`` was
above the watermark when a run read it (rows deleted at the source stay); ``append`` = the multiset
of every row appended (``ver`` above the watermark).

Re-run one pair quickly: ``pytest tests/differential -k pg_sqlite`` (pair ids: PAIRS).
"""

from __future__ import annotations

import itertools
import shutil
import sqlite3
import textwrap
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pipekit_core.config import load_settings
from pipekit_core.engine import Engine, run_module
from pipekit_core.errors import PhaseError
from tests.conftest import PG_PASSWORD, jdbc_url
from tests.differential.conftest import DiffDBs
from tests.reliability.test_fidelity import LITE_COLUMNS, PG_COLUMNS, TO_SQLITE

pytestmark = [pytest.mark.differential, pytest.mark.postgres]

STANDIN = str(Path(__file__).resolve().parents[1] / "jrunner_standin" / "jrunner")
PINNED = ("-c DateStyle=ISO -c IntervalStyle=postgres -c extra_float_digits=3 -c TimeZone=UTC "
          "-c bytea_output=hex -c client_encoding=UTF8")

# ---------------------------------------------------------------------------------- catalogues

# Values a hostile session setting breaks, with their SQLite form (docs/fidelity.md conventions:
# ISO text, UTC-normalized timestamptz, PostgreSQL's interval text, exact REALs).
EXTRA_PG: dict[str, list[tuple[str, Any]]] = {
    "r": [("1.2345678", 1.2345678), ("16777216", 16777216.0)],
    "d": [("0.30000000000000004", 0.30000000000000004), ("-1.2345678901234567e-300", -1.2345678901234567e-300)],
    "dt": [("'2024-03-04'", "2024-03-04"), ("'1999-12-31'", "1999-12-31")],
    "ts": [("'2024-03-04 05:06:07.5'", "2024-03-04 05:06:07.500000")],
    "tstz": [("'2024-11-03 01:30:00-04'", "2024-11-03 05:30:00+00:00"), ("'2024-03-10 07:00:00+00'", "2024-03-10 07:00:00+00:00")],
    "iv": [("'1 day -02:00:00'", "1 day -02:00:00"), ("'-1 mons +3 days'", "-1 mons +3 days")],
    "b": [("'\\x5c00'", b"\\\x00")],
    "n12": [("-272.60", -272.6)],
}


@dataclass(frozen=True)
class PgCol:
    name: str
    type: str
    literals: tuple[str | None, ...]
    sqlite: tuple[Any, ...]  # the SQLite value of each literal (storage class included)


PG_CAT: dict[str, PgCol] = {}
for _n, _t, _lits in PG_COLUMNS:
    _extra = EXTRA_PG.get(_n, [])
    PG_CAT[_n] = PgCol(_n, _t, tuple(_lits) + tuple(e[0] for e in _extra),
                       tuple(TO_SQLITE[_n][1]) + tuple(e[1] for e in _extra))

# SQLite source columns: (name, declared type, Python values inserted).
_LITE_FID = {c[0]: c for c in LITE_COLUMNS}
LITE_CAT: dict[str, tuple[str, tuple[Any, ...]]] = {
    "i": ("INTEGER", tuple(_LITE_FID["i"][2])),
    "r": ("REAL", tuple(_LITE_FID["r"][2]) + (0.30000000000000004, -0.0)),
    "t": ("TEXT", tuple(_LITE_FID["t"][2])),
    "b": ("BLOB", tuple(_LITE_FID["b"][2])),
    # README type table: sqlite NUMERIC(10,2) -> numeric(10,2); issue 10 §3: -272.60 keeps its scale
    "dec": ("NUMERIC(10,2)", ("-272.60", "100.00", None, "0.01", "12345678.90")),
    # an undeclared column with integers and reals: every value exact (issue 10 §3)
    "mx": ("", (9007199254740993, 1.5, None, -2, 2.25)),
}

# Columns whose values a sampled destination type may not hold: a run may refuse them (loudly,
# naming the column and ``columns: dest_type``) instead of copying; never silently change them.
REFUSABLE = {"mx"}

# --------------------------------------------------------------------------------- transport pairs


@dataclass(frozen=True)
class Pair:
    id: str
    source: str  # postgresql | sqlite
    dest: str
    transport: str = "native"
    cast_text: bool = False  # a columns: dest_type text, which forces PG->PG text COPY


PAIRS = [
    Pair("pg_pg_binary", "postgresql", "postgresql"),
    Pair("pg_pg_text", "postgresql", "postgresql", cast_text=True),
    Pair("pg_sqlite", "postgresql", "sqlite"),
    Pair("sqlite_pg", "sqlite", "postgresql"),
    Pair("sqlite_sqlite", "sqlite", "sqlite"),
    Pair("jrunner_pg_pg", "postgresql", "postgresql", transport="jrunner"),
]

# ------------------------------------------------------------------------------------- scenarios

Key = tuple[Any, ...]


@dataclass
class Shape:
    cols: list[str]
    strategy: str
    composite: bool
    renames: set[str]
    casts: set[str]
    rows: list[dict[str, Any]]  # k1, k2, and per column an index into its catalogue
    batches: list[list[tuple]] = field(default_factory=list)


def _ncat(pair: Pair, col: str) -> int:
    return len(PG_CAT[col].literals) if pair.source == "postgresql" else len(LITE_CAT[col][1])


@st.composite
def shapes(draw: st.DrawFn, pair: Pair) -> Shape:
    names = sorted(PG_CAT) if pair.source == "postgresql" else sorted(LITE_CAT)
    cols = draw(st.lists(st.sampled_from(names), min_size=1, max_size=4, unique=True))
    strategy = draw(st.sampled_from(["full", "incremental", "append"]))
    composite = draw(st.booleans())
    renames = set(draw(st.lists(st.sampled_from(cols), unique=True, max_size=2)))
    casts: set[str] = set()
    if pair.cast_text:
        casts = set(draw(st.lists(st.sampled_from(cols), unique=True, min_size=1, max_size=2)))
    k2s = st.sampled_from([None, "a", "b"])

    def values() -> st.SearchStrategy[dict[str, int]]:
        return st.fixed_dictionaries({c: st.integers(0, _ncat(pair, c) - 1) for c in cols})

    keys = st.tuples(st.integers(0, 6), k2s)
    unique_by = (lambda k: k) if composite else (lambda k: k[0])
    ks = draw(st.lists(keys, min_size=1, max_size=6, unique_by=unique_by))
    rows = [{"k1": k1, "k2": k2, **draw(values())} for k1, k2 in ks]
    batches = []
    for _ in range(draw(st.integers(1, 3))):
        ops = draw(st.lists(st.one_of(
            st.tuples(st.just("update"), st.integers(0, 99), st.sampled_from(cols), st.integers(0, 99)),
            st.tuples(st.just("delete"), st.integers(0, 99)),
            st.tuples(st.just("insert"), keys, values()),
        ), min_size=1, max_size=4))
        batches.append(ops)
    return Shape(cols, strategy, composite, renames, casts, rows, batches)


class Model:
    """The source table and what the destination must hold, as catalogue indexes."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.ver = 1
        self.source: dict[Key, dict[str, Any]] = {}
        for r in shape.rows:
            self.source[self.key(r)] = {**r, "ver": 1}
        self.dest_keyed: dict[Key, dict[str, Any]] = {}
        self.dest_list: list[dict[str, Any]] = []

    def key(self, r: dict[str, Any]) -> Key:
        # NULL-safe: None is a value of the key tuple, equal to None
        return (r["k1"], r["k2"]) if self.shape.composite else (r["k1"],)

    def dest_rows(self) -> list[dict[str, Any]]:
        if self.shape.strategy == "append":
            return list(self.dest_list)
        return list(self.dest_keyed.values())

    def run(self) -> None:
        s = self.shape.strategy
        if s == "full":
            self.dest_keyed = {k: dict(r) for k, r in self.source.items()}
            return
        w = max((r["ver"] for r in self.dest_rows()), default=0)
        fresh = [dict(r) for r in self.source.values() if r["ver"] > w]
        if s == "incremental":
            for r in fresh:
                self.dest_keyed[self.key(r)] = r
        else:
            self.dest_list.extend(fresh)

    def apply(self, ops: list[tuple], pair: Pair) -> list[tuple[str, dict[str, Any] | Key]]:
        """Apply a batch to the model; return the SQL-level changes (op, row-or-key)."""
        self.ver += 1
        out: list[tuple[str, Any]] = []
        for op in ops:
            keys = list(self.source)
            if op[0] == "update" and keys:
                k = keys[op[1] % len(keys)]
                col = op[2]
                self.source[k][col] = op[3] % _ncat(pair, col)
                self.source[k]["ver"] = self.ver
                out.append(("upsert", dict(self.source[k])))
            elif op[0] == "delete" and len(keys) > 1:  # a full refresh of an empty source is refused
                k = keys[op[1] % len(keys)]
                del self.source[k]
                out.append(("delete", k))
            elif op[0] == "insert":
                r = {"k1": op[1][0], "k2": op[1][1], **op[2], "ver": self.ver}
                k = self.key(r)
                if k in self.source:
                    continue
                self.source[k] = r
                out.append(("upsert", dict(r)))
        return out


# -------------------------------------------------------------------------------- databases


def pinned(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, options=PINNED)


def _where(key: Key, composite: bool, ph: str) -> tuple[str, list[Any]]:
    if composite:
        return f"k1 = {ph} AND k2 IS NOT DISTINCT FROM {ph}" if ph == "%s" else f"k1 = {ph} AND k2 IS {ph}", list(key)
    return f"k1 = {ph}", [key[0]]


class Source:
    def __init__(self, pair: Pair, dbs: DiffDBs, table: str, tmp: Path) -> None:
        self.pair, self.table = pair, table
        self.url = dbs.src
        self.path = tmp / "src.db"

    def create(self, shape: Shape, rows: list[dict[str, Any]]) -> None:
        if self.pair.source == "postgresql":
            cols = ", ".join(f"{c} {PG_CAT[c].type}" for c in shape.cols)
            with pinned(self.url) as c:
                c.execute(f"CREATE TABLE {self.table} (k1 integer NOT NULL, k2 text, ver integer NOT NULL, {cols})")
        else:
            cols = ", ".join(f'{c} {LITE_CAT[c][0]}'.strip() for c in shape.cols)
            with sqlite3.connect(self.path) as c:
                c.execute(f"CREATE TABLE {self.table} (k1 INTEGER NOT NULL, k2 TEXT, ver INTEGER NOT NULL, {cols})")
            c.close()
        for r in rows:
            self.upsert(shape, r)

    def upsert(self, shape: Shape, r: dict[str, Any]) -> None:
        self.delete(shape, (r["k1"], r["k2"]) if shape.composite else (r["k1"],))
        if self.pair.source == "postgresql":
            vals = []
            for c in shape.cols:
                lit, typ = PG_CAT[c].literals[r[c]], PG_CAT[c].type
                vals.append(f"CAST({lit if lit is not None else 'NULL'} AS {typ})")
            with pinned(self.url) as con:
                con.execute(f"INSERT INTO {self.table} VALUES (%s, %s, %s, {', '.join(vals)})",
                            [r["k1"], r["k2"], r["ver"]])
        else:
            params = [r["k1"], r["k2"], r["ver"]] + [LITE_CAT[c][1][r[c]] for c in shape.cols]
            with sqlite3.connect(self.path) as con:
                con.execute(f"INSERT INTO {self.table} VALUES ({', '.join('?' * len(params))})", params)
            con.close()

    def delete(self, shape: Shape, key: Key) -> None:
        if self.pair.source == "postgresql":
            where, params = _where(key, shape.composite, "%s")
            with pinned(self.url) as con:
                con.execute(f"DELETE FROM {self.table} WHERE {where}", params)
        else:
            where, params = _where(key, shape.composite, "?")
            with sqlite3.connect(self.path) as con:
                con.execute(f"DELETE FROM {self.table} WHERE {where}", params)
            con.close()


_PG_TEXT: dict[tuple[str, int], str | None] = {}


def pg_canonical_text(src_url: str, col: str, idx: int) -> str | None:
    """PostgreSQL's text form of a catalogue value in a pinned session (cached)."""
    if (col, idx) not in _PG_TEXT:
        lit = PG_CAT[col].literals[idx]
        with pinned(src_url) as c:
            _PG_TEXT[(col, idx)] = c.execute(f"SELECT CAST({lit or 'NULL'} AS {PG_CAT[col].type})::text").fetchone()[0]
    return _PG_TEXT[(col, idx)]


def _lite_to_pg(col: str, v: Any) -> Any:
    if v is None:
        return None
    if col == "dec":
        return str(Decimal(str(v)).quantize(Decimal("0.01")))
    if col == "mx":
        return Decimal(str(v))
    return v


def _pg_from_lite_actual(col: str, v: Any) -> Any:
    if v is None:
        return None
    if col == "dec":
        return str(v) if isinstance(v, Decimal) else f"{type(v).__name__}:{v!r}"
    if col == "mx":
        return Decimal(str(v))
    return v


_LITE_STORED: dict[tuple[str, int], Any] = {}


def lite_stored(col: str, idx: int) -> Any:
    """The value (and storage class) SQLite holds for a catalogue value in its declared column."""
    if (col, idx) not in _LITE_STORED:
        con = sqlite3.connect(":memory:")
        con.execute(f"CREATE TABLE x (v {LITE_CAT[col][0]})")
        con.execute("INSERT INTO x VALUES (?)", [LITE_CAT[col][1][idx]])
        _LITE_STORED[(col, idx)] = con.execute("SELECT v FROM x").fetchone()[0]
        con.close()
    return _LITE_STORED[(col, idx)]


def _sort(rows: list[tuple]) -> list[tuple]:
    return sorted(rows, key=lambda r: (r[0], r[1] is None, r[1] or "", r[2], repr(r)))


def expected_image(pair: Pair, shape: Shape, rows: list[dict[str, Any]], src_url: str) -> list[tuple]:
    out = []
    for r in rows:
        vals: list[Any] = []
        for c in shape.cols:
            i = r[c]
            if pair.source == "postgresql" and pair.dest == "postgresql":
                vals.append(pg_canonical_text(src_url, c, i))
            elif pair.source == "postgresql":
                v = PG_CAT[c].sqlite[i]
                vals.append((type(v).__name__, v))
            elif pair.dest == "postgresql":
                vals.append(_lite_to_pg(c, lite_stored(c, i)))
            else:
                v = lite_stored(c, i)
                vals.append((type(v).__name__, v))
        out.append((r["k1"], r["k2"], r["ver"], *vals))
    return _sort(out)


def actual_image(pair: Pair, shape: Shape, table: str, dst_url: str, lite: Path) -> list[tuple]:
    names = [f"{c}_r" if c in shape.renames else c for c in shape.cols]
    if pair.dest == "postgresql":
        if pair.source == "postgresql":
            sel = ", ".join(f'"{n}"::text' for n in names)
        else:
            sel = ", ".join(f'"{n}"' for n in names)
        with pinned(dst_url) as c:
            got = c.execute(f"SELECT k1, k2, ver, {sel} FROM {table}").fetchall()
        if pair.source == "sqlite":
            got = [(*g[:3], *(_pg_from_lite_actual(c, v) for c, v in zip(shape.cols, g[3:], strict=True))) for g in got]
        return _sort([tuple(g) for g in got])
    con = sqlite3.connect(lite)
    try:
        got = con.execute(f"SELECT k1, k2, ver, {', '.join(chr(34) + n + chr(34) for n in names)} FROM {table}").fetchall()
    finally:
        con.close()
    return _sort([(*g[:3], *((type(v).__name__, v) for v in g[3:])) for g in got])


# ------------------------------------------------------------------------------------- the engine

_SEQ = itertools.count(1)


def write_module(pair: Pair, shape: Shape, dbs: DiffDBs, tmp: Path, table: str) -> Engine:
    conn = '{{url: "{u}", user: pipekit, password: $PK_TEST_PW}}'
    src = conn.format(u=jdbc_url(dbs.src)) if pair.source == "postgresql" else f'{{url: "jdbc:sqlite:{tmp}/src.db"}}'
    dst = conn.format(u=jdbc_url(dbs.dst)) if pair.dest == "postgresql" else f'{{url: "jdbc:sqlite:{tmp}/dst.db"}}'
    dest_table = f"public.{table}" if pair.dest == "postgresql" else table
    query = f"SELECT k1, k2, ver, {', '.join(shape.cols)} FROM {table}"
    mod = [f"name: {table}", "source: src", "dest: dst", f"dest_table: {dest_table}",
           f"strategy: {shape.strategy}", f"transport: {pair.transport}"]
    if shape.strategy != "full":
        query += " WHERE ver > {since}"
        mod.append("watermarks: [{name: since, sql: \"SELECT coalesce(max(ver), 0) FROM " + dest_table
                   + "\", default: '0'}]")
    if shape.strategy == "incremental":
        mod.append("merge_key: [k1, k2]" if shape.composite else "merge_key: [k1]")
    mod.append(f'query: "{query}"')
    specs = []
    for c in ["k1", "k2", "ver", *shape.cols]:  # columns: lists every column when it is given
        spec = f"source_name: {c}"
        if c in shape.renames:
            spec += f", dest_name: {c}_r"
        if c in shape.casts:
            spec += ", dest_type: text"
        specs.append("{" + spec + "}")
    if shape.renames or shape.casts:
        mod.append(f"columns: [{', '.join(specs)}]")
    text = "connections:\n  src: " + src + "\n  dst: " + dst + "\nmodules:\n  - " + "\n    ".join(mod) + "\n"
    (tmp / "defs").mkdir(exist_ok=True)
    (tmp / "defs" / "defs.yaml").write_text(text)
    env = {"PIPEKIT_DEFS": str(tmp / "defs"), "PIPEKIT_DB": str(tmp / "pipekit.db"),
           "PIPEKIT_SECRETS": str(tmp / "secrets.env"), "PIPEKIT_JRUNNER": STANDIN, "PK_TEST_PW": PG_PASSWORD}
    eng = Engine(settings=load_settings(env, cwd=tmp), env=env)
    assert eng.catalog.problems == [], (eng.catalog.problems, text)
    return eng


def describe(pair: Pair, shape: Shape, step: int, defs: str) -> str:
    return textwrap.dedent(f"""
        pair {pair.id}, run {step}, strategy {shape.strategy}, composite key {shape.composite},
        columns {[(c, PG_CAT[c].type if pair.source == 'postgresql' else LITE_CAT[c][0]) for c in shape.cols]},
        renames {sorted(shape.renames)}, casts to text {sorted(shape.casts)}
        defs:
        {defs}""")


def check_pair(pair: Pair, shape: Shape, dbs: DiffDBs) -> None:
    """Create the source, run the module, then apply each batch of changes and run again; after
    every run compare the destination with the model's canonical image."""
    n = next(_SEQ)
    table = f"d{n}_{pair.id}"
    tmp = dbs.tmp / table
    tmp.mkdir()
    model = Model(shape)
    src = Source(pair, dbs, table, tmp)
    src.create(shape, list(model.source.values()))
    eng = write_module(pair, shape, dbs, tmp, table)
    defs = (tmp / "defs" / "defs.yaml").read_text()
    try:
        for step in range(len(shape.batches) + 1):
            if step:
                for op, arg in model.apply(shape.batches[step - 1], pair):
                    if op == "delete":
                        src.delete(shape, arg)
                    else:
                        src.upsert(shape, arg)
            before = actual_image(pair, shape, table, dbs.dst, tmp / "dst.db") if step else []
            try:
                res = run_module(eng, table)
            except PhaseError as e:
                # Issue 10 §3: a value the chosen destination type cannot hold exactly may fail the
                # run naming the column and the dest_type to declare -- loudly, nothing written.
                msg = str(e)
                named = [c for c in shape.cols if c in REFUSABLE and (f"'{c}'" in msg or f"'{c}_r'" in msg)]
                if not (named and "dest_type" in msg):
                    raise AssertionError(describe(pair, shape, step, defs)) from e
                assert actual_image(pair, shape, table, dbs.dst, tmp / "dst.db") == before, msg
                return
            assert res.status == "success", describe(pair, shape, step, defs)
            model.run()
            want = expected_image(pair, shape, model.dest_rows(), dbs.src)
            got = actual_image(pair, shape, table, dbs.dst, tmp / "dst.db")
            assert got == want, describe(pair, shape, step, defs)
    finally:
        if pair.source == "postgresql" or pair.dest == "postgresql":
            with pinned(dbs.src) as c:
                c.execute(f"DROP TABLE IF EXISTS {table}")
            with pinned(dbs.dst) as c:
                c.execute(f"DROP TABLE IF EXISTS {table}")
        shutil.rmtree(tmp, ignore_errors=True)


def explicit(pair: Pair) -> list[Shape]:
    """Examples every profile runs first: the cases of issue 10 §2/§3, with a NULL key part."""
    if pair.source == "postgresql":
        cols = ["dt", "tstz", "iv", "r", "d"]
        row = {"dt": 5, "tstz": 5, "iv": 5, "r": 5, "d": 5}
        return [Shape(cols, strategy, True, {"dt"}, {"iv"} if pair.cast_text else set(),
                      [{"k1": 1, "k2": None, **row}, {"k1": 1, "k2": "a", **row}],
                      [[("update", 0, "r", 6), ("insert", (2, None), row)]])
                for strategy in ("full", "incremental", "append")]
    return [Shape(["dec", "mx"], "incremental", True, set(), set(),
                  [{"k1": 1, "k2": None, "dec": 0, "mx": 1}], [[("update", 0, "mx", 0), ("insert", (1, "a"), {"dec": 1, "mx": 4})]])]


@pytest.mark.parametrize("pair", PAIRS, ids=[p.id for p in PAIRS])
def test_destination_equals_canonical_image(pair: Pair, diff_dbs: DiffDBs) -> None:
    def prop(shape: Shape) -> None:
        check_pair(pair, shape, diff_dbs)

    for ex in explicit(pair):
        prop = example(shape=ex)(prop)
    given(shape=shapes(pair))(prop)()
