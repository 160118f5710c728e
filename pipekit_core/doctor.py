"""``pipekit doctor``: config, definitions, secrets, repository, transports, connections."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from pipekit_core.config import load_settings
from pipekit_core.errors import JrunnerError, PipekitError, RunCancelled
from pipekit_core.secrets import Secrets, redact

JRUNNER_PROBE_TIMEOUT = 60.0  # seconds a jrunner probe may take before doctor reports it as hanging


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

    cat = load_catalog(s.defs, s.local_timezone())

    def defs() -> str:
        if cat.problems:
            raise PipekitError(f"{len(cat.problems)} problem(s) in {s.defs}; run 'pipekit validate'")
        return f"{len(cat.modules)} modules, {len(cat.connections)} connections in {s.defs}"

    check("definitions", defs)

    def repo() -> str:
        r = Repository(s.database)
        r.migrate()
        return r.health()  # sqlite <path> / postgresql <host:port>/<db> (reachable, ...): never a password

    check("repository", repo)
    sec = Secrets(s.secrets)
    for name, conn in cat.connections.items():
        def secrets_ok(conn=conn, name=name) -> str:  # noqa: ANN001
            sec.resolve(conn.user, where=f"connection '{name}' user")
            sec.resolve(conn.password, where=f"connection '{name}' password")
            return "resolved"

        check(f"secrets of connection '{name}'", secrets_ok)

    from pipekit_core.engine import Engine
    from pipekit_core.transport.base import CancelScope, TransportContext, get_transport

    eng = Engine(settings=s, catalog=cat)
    # Connections jrunner would open: those without a native driver, and every connection of a
    # module whose transport resolves to jrunner (source, destination, resolver connections).
    jr_conns = {n for n, c in cat.connections.items() if not c.has_native_driver and c.kind != "sqlite"}
    jr_modules = []
    for m in cat.modules.values():
        wanted = m.transport or s.transport
        src = cat.connections.get(m.source)
        if wanted == "jrunner" or (wanted == "auto" and src is not None and not src.has_native_driver):
            jr_modules.append(m.name)
            for n in (m.source, m.dest, *(w.connection or m.dest for w in m.watermarks)):
                if n in cat.connections and cat.connections[n].kind != "sqlite":
                    jr_conns.add(n)

    def jrunner() -> str:
        if s.jrunner:
            used = f"used by {len(jr_modules)} module(s)" if jr_modules else "no module uses it"
            return f"found at {s.jrunner} ({used})"
        if jr_conns or jr_modules:
            raise PipekitError(
                f"'{s.jrunner_setting}' not found, but {len(jr_modules)} module(s) and {len(jr_conns)} connection(s) "
                "need it; set PIPEKIT_JRUNNER or 'jrunner' in pipekit.yaml"
            )
        return f"not found ('{s.jrunner_setting}'), not needed: no module uses it"

    check("jrunner", jrunner)

    native = get_transport("native", TransportContext())

    def jrunner_probe(ep: Any, kind: str) -> str:
        probe = "SELECT 1 FROM SYSIBM.SYSDUMMY1" if kind in ("as400", "db2") else "SELECT 1"
        scope = CancelScope()
        timer = threading.Timer(JRUNNER_PROBE_TIMEOUT, scope.cancel, args=(f"timed out after {JRUNNER_PROBE_TIMEOUT:g} s",))
        timer.daemon = True
        timer.start()
        try:
            jr = get_transport("jrunner", TransportContext(cancel=scope, jrunner=s.jrunner))
            v = jr.query_value(ep, probe)
        except JrunnerError as e:
            first = next((ln.strip() for ln in e.last_lines if ln.strip()), "no output")
            raise PipekitError(f"jrunner {probe} failed (exit code {e.exit_code}): {first}") from None
        except RunCancelled:
            raise PipekitError(f"jrunner {probe} did not answer within {JRUNNER_PROBE_TIMEOUT:g} s") from None
        finally:
            timer.cancel()
        return f"jrunner {probe} -> {v}"

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
            if name in jr_conns:
                if not s.jrunner:
                    raise PipekitError(
                        f"{'; '.join(parts) + '; ' if parts else ''}jrunner is needed for this connection but not found"
                    )
                parts.append(jrunner_probe(ep, conn.kind))
            if not parts:
                raise PipekitError(f"no native driver for {conn.kind} and jrunner is not configured")
            return "; ".join(parts)

        check(f"connection '{name}' ({conn.kind})", answers)
    return ok
