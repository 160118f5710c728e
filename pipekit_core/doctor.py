"""``pipekit doctor``: config, definitions, secrets, repository, transports, connections."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from pipekit_core.config import load_settings
from pipekit_core.errors import PipekitError
from pipekit_core.secrets import Secrets, redact


def run_doctor(say: Callable[[str], None]) -> bool:
    """Run every check, print one line each; True when all passed."""
    ok = True

    def check(label: str, fn: Callable[[], str]) -> bool:
        nonlocal ok
        try:
            detail = fn()
            say(f"ok    {label}: {redact(detail)}")
            return True
        except Exception as e:  # noqa: BLE001 - doctor reports every failure and goes on
            ok = False
            say(f"FAIL  {label}: {redact(str(e) or type(e).__name__)}")
            return False

    try:
        s = load_settings()
    except PipekitError as e:
        say(f"FAIL  config: {e}")
        return False
    say(f"ok    config: {s.config_file or 'no pipekit.yaml (defaults and environment)'}")

    from pipekit_core.defs import load_catalog
    from pipekit_core.repo import Repository

    cat = load_catalog(s.defs)

    def defs() -> str:
        if cat.problems:
            raise PipekitError(f"{len(cat.problems)} problem(s) in {s.defs}; run 'pipekit validate'")
        return f"{len(cat.modules)} modules, {len(cat.connections)} connections in {s.defs}"

    check("definitions", defs)

    def repo() -> str:
        r = Repository(s.database)
        r.migrate()
        return f"{s.database} (schema version {r.schema_version()})"

    check("repository", repo)
    sec = Secrets(s.secrets)
    for name, conn in cat.connections.items():
        def secrets_ok(conn=conn, name=name) -> str:  # noqa: ANN001
            sec.resolve(conn.user, where=f"connection '{name}' user")
            sec.resolve(conn.password, where=f"connection '{name}' password")
            return "resolved"

        check(f"secrets of connection '{name}'", secrets_ok)

    needs_jrunner = any(not c.has_native_driver for c in cat.connections.values()) or s.transport == "jrunner" or any(
        m.transport == "jrunner" for m in cat.modules.values()
    )

    def jrunner() -> str:
        if s.jrunner:
            return f"found at {s.jrunner}"
        if needs_jrunner:
            raise PipekitError(f"'{s.jrunner_setting}' not found; set PIPEKIT_JRUNNER or 'jrunner' in pipekit.yaml")
        return f"not found ('{s.jrunner_setting}'), not needed: every source has a native driver"

    check("jrunner", jrunner)

    from pipekit_core.engine import Engine
    from pipekit_core.transport.base import TransportContext, get_transport

    eng = Engine(settings=s, catalog=cat)
    native = get_transport("native", TransportContext())
    jr = get_transport("jrunner", TransportContext(jrunner=s.jrunner)) if s.jrunner else None
    for name, conn in cat.connections.items():
        def answers(name=name, conn=conn) -> str:  # noqa: ANN001
            ep = eng.endpoint(name)
            parts = []
            if conn.has_native_driver:
                with contextlib.suppress(Exception):
                    if conn.kind == "sqlite" and not ep.sqlite_path().exists():
                        return f"{ep.sqlite_path()} does not exist yet (created on first use)"
                v = native.query_value(ep, "SELECT 1")
                parts.append(f"native SELECT 1 -> {v}")
            if jr is not None and conn.kind != "sqlite":
                probe = "SELECT 1 FROM SYSIBM.SYSDUMMY1" if conn.kind in ("as400", "db2") else "SELECT 1"
                v = jr.query_value(ep, probe)
                parts.append(f"jrunner {probe} -> {v}")
            if not parts:
                raise PipekitError(f"no native driver for {conn.kind} and jrunner is not configured")
            return "; ".join(parts)

        check(f"connection '{name}' ({conn.kind})", answers)
    return ok
