"""pipekit_core.lineage: the tables a module's query reads and its plain-column lineage (sqlglot)."""

from __future__ import annotations

import time
from pathlib import Path

from pipekit_core.defs import load_catalog
from pipekit_core.lineage import ColumnRef, TableRef, dest_table_ref, module_lineage, query_lineage
from tests.helpers import write_defs


def tables(sql: str, kind: str = "postgresql") -> list[str]:
    found = query_lineage(sql, kind)
    assert found.error is None, found.error
    return [str(t) for t in found.tables]


def columns(sql: str, kind: str = "postgresql") -> dict[str, list[tuple[str, str]]]:
    found = query_lineage(sql, kind)
    assert found.error is None, found.error
    return {col: [(str(r.table), r.column) for r in refs] for col, refs in found.columns.items()}


def test_join_with_qualified_columns_and_renames() -> None:
    sql = """
        SELECT o.id, o.amount AS total, c.name AS customer, o.amount * 2 AS doubled, upper(c.name) AS shout
        FROM sales.orders o
        JOIN customers AS c ON c.id = o.customer_id
        WHERE o.updated_at > '{since}'
    """
    assert tables(sql) == ["sales.orders", "public.customers"]  # unqualified: PostgreSQL's public
    assert columns(sql) == {
        "id": [("sales.orders", "id")],
        "total": [("sales.orders", "amount")],
        "customer": [("public.customers", "name")],
    }  # expressions have no lineage


def test_unqualified_column_in_a_join_and_star_have_no_lineage() -> None:
    sql = "SELECT id, o.status, * FROM sales.orders o JOIN sales.customers c ON c.id = o.customer_id"
    assert columns(sql) == {"status": [("sales.orders", "status")]}
    # one table: an unqualified column is certainly that table's
    assert columns("SELECT id, status AS state FROM sales.orders") == {
        "id": [("sales.orders", "id")], "state": [("sales.orders", "status")]}
    assert columns("SELECT * FROM sales.orders") == {}


def test_cte_names_and_subquery_aliases_are_not_tables() -> None:
    sql = """
        WITH recent AS (SELECT id, customer_id AS cust FROM sales.orders WHERE updated_at > '{since}')
        SELECT r.id, r.cust, x.n
        FROM recent r
        JOIN (SELECT customer_id, count(*) AS n FROM sales.order_lines GROUP BY customer_id) x
          ON x.customer_id = r.cust
        WHERE r.id NOT IN (SELECT order_id FROM audit.cancelled)
    """
    assert sorted(tables(sql)) == ["audit.cancelled", "sales.order_lines", "sales.orders"]
    # through the CTE to the table; x.n is an aggregate: nothing
    assert columns(sql) == {"id": [("sales.orders", "id")], "cust": [("sales.orders", "customer_id")]}


def test_quoted_identifiers_keep_their_case_unquoted_ones_fold() -> None:
    sql = 'SELECT "OrderNo", t."Line Total" AS "Total", Status FROM "Sales"."Order Lines" t WHERE t.X > {n}'
    assert tables(sql) == ["Sales.Order Lines"]
    assert columns(sql) == {
        "OrderNo": [("Sales.Order Lines", "OrderNo")],
        "Total": [("Sales.Order Lines", "Line Total")],
        "status": [("Sales.Order Lines", "status")],  # PostgreSQL folds unquoted names to lower case
    }
    assert tables("SELECT a FROM Sales.Orders") == ["sales.orders"]


def test_placeholders_and_literal_braces() -> None:
    sql = ("SELECT id FROM sales.orders WHERE updated_at >= '{window_start}' AND updated_at < '{window_end}' "
           "AND id > {last_id} AND note <> '{{not a placeholder}}'")
    assert tables(sql) == ["sales.orders"]
    assert columns(sql) == {"id": [("sales.orders", "id")]}


def test_db2_fetch_first_and_db2_clauses() -> None:
    sql = """
        SELECT h.ORDNO, h.CUSNO AS customer, CURRENT DATE AS loaded_on, l.qty
        FROM ERPLIB.ORDHDR h JOIN ERPLIB.ORDLIN l ON l.ORDNO = h.ORDNO
        WHERE h.CHGDT > '{since}'
        ORDER BY h.ORDNO
        FETCH FIRST 1000 ROWS ONLY
        WITH UR
    """
    for kind in ("as400", "db2"):
        assert tables(sql, kind) == ["ERPLIB.ORDHDR", "ERPLIB.ORDLIN"]  # DB2 folds unquoted names to upper case
        assert columns(sql, kind) == {
            "ORDNO": [("ERPLIB.ORDHDR", "ORDNO")],
            "CUSTOMER": [("ERPLIB.ORDHDR", "CUSNO")],
            "QTY": [("ERPLIB.ORDLIN", "QTY")],
        }
    # DB2 for i system naming (LIBRARY/TABLE) and its dummy table
    assert tables("SELECT a FROM erplib/ordhdr FOR READ ONLY", "as400") == ["ERPLIB.ORDHDR"]
    assert tables("SELECT CURRENT TIMESTAMP FROM SYSIBM.SYSDUMMY1", "as400") == []
    # no fixed default schema on DB2 (the library list decides): the name stays unqualified
    assert query_lineage("SELECT a FROM ordhdr", "db2").tables == (TableRef("ORDHDR"),)


def test_sqlite_and_sql_server_compare_names_case_insensitively() -> None:
    assert tables('SELECT Id FROM "Customers"', "sqlite") == ["main.customers"]
    assert columns("SELECT Id FROM Customers", "sqlite") == {"Id": [("main.customers", "Id")]}
    assert tables("SELECT TOP 10 [Id], x.[Name] FROM [Sales].[Big Customers] x WITH (NOLOCK)", "sqlserver") == [
        "sales.big customers"]
    assert tables("SELECT a FROM erp.dbo.t", "sqlserver") == ["erp.dbo.t"]
    assert query_lineage("SELECT a FROM erp.dbo.t", "sqlserver").tables == (TableRef("t", "dbo", "erp"),)


def test_unparsable_and_non_select_queries_give_a_reason() -> None:
    bad = query_lineage("SELECT id FROM sales.orders WHERE d > CURRENT DATE - 7 DAYS AND (", "postgresql")
    assert bad.tables == () and bad.columns == {}
    assert bad.error is not None and "sqlglot (postgres) cannot read the query" in bad.error
    assert "line 1" in bad.error and "\x1b" not in bad.error and "\n" not in bad.error
    for sql in ("DELETE FROM sales.orders", "SELECT 1; SELECT 2", "", "CALL erp.refresh()"):
        found = query_lineage(sql, "postgresql")
        assert found.error, sql
    # a union reads its tables, but its columns are not simple
    union = query_lineage("SELECT a FROM t1 UNION ALL SELECT a FROM t2", "postgresql")
    assert [str(t) for t in union.tables] == ["public.t1", "public.t2"] and union.columns == {}


def test_dest_table_ref_matches_what_queries_read() -> None:
    assert dest_table_ref("public.orders", "postgresql") == query_lineage("SELECT 1 FROM Orders", "postgresql").tables[0]
    assert dest_table_ref('"Sales"."Orders"', "postgresql") == TableRef("Orders", "Sales")
    assert dest_table_ref('"Orders"', "sqlite") == TableRef("orders", "main")
    assert dest_table_ref("a.b.c", "postgresql") is None


def test_loader_records_line_and_query_file_and_columns_rename(tmp_path: Path) -> None:
    defs = tmp_path / "defs"
    (defs / "sql").mkdir(parents=True)
    (defs / "sql" / "orders.sql").write_text("SELECT o.id, o.cust AS customer_id, o.amt FROM sales.orders o\n")
    write_defs(defs, """\
        connections:
          erp: {url: "jdbc:postgresql://127.0.0.1:1/erp"}
          dw: {url: "jdbc:sqlite:dw.db"}
        modules:
          - name: customers
            source: erp
            dest: dw
            dest_table: customers
            query: SELECT id FROM sales.customers

          - name: orders
            source: erp
            dest: dw
            dest_table: orders
            query_file: sql/orders.sql
            columns:
              - {source_name: AMT, dest_name: amount}
        """)
    cat = load_catalog(defs)
    assert not cat.problems
    orders = cat.module("orders")
    assert (cat.module("customers").source_line, orders.source_line) == (5, 11)
    assert Path(orders.query_path) == defs / "sql" / "orders.sql"
    assert cat.module("customers").query_path == ""
    found = module_lineage(orders, "postgresql")
    assert found.columns == {
        "id": (ColumnRef(TableRef("orders", "sales"), "id"),),
        "customer_id": (ColumnRef(TableRef("orders", "sales"), "cust"),),
        "amount": (ColumnRef(TableRef("orders", "sales"), "amt"),),  # columns: matched case-insensitively
    }
    # neither the line nor the path changes what the module does
    assert "source_line" not in orders.model_dump() and "query_path" not in orders.model_dump()


def test_parsing_a_thousand_distinct_queries_is_fast() -> None:
    queries = [
        f"SELECT o.id, o.amount AS total_{i}, c.name FROM sales.orders_{i} o "
        f"JOIN sales.customers c ON c.id = o.customer_id WHERE o.updated_at > '{{since}}' AND o.kind = {i}"
        for i in range(1000)
    ]
    t0 = time.perf_counter()
    found = [query_lineage(q, "postgresql") for q in queries]
    elapsed = time.perf_counter() - t0
    assert all(f.error is None and len(f.tables) == 2 for f in found)
    assert elapsed < 20, f"1,000 queries took {elapsed:.1f} s"
