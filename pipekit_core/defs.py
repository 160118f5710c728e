"""Load and validate the module definitions folder (``module_defs/``) into a :class:`Catalog`.

Every ``*.yaml`` / ``*.yml`` file under the folder (recursively, hidden paths skipped) forms one
namespace of connections, modules and groups. Loading never raises for a definition problem: each
one becomes a :class:`Problem` naming the file, the line, the module and the field, and the
object at fault is left out, so one broken module never takes the others down.

Example::

    catalog = load_catalog(Path("module_defs"))
    for p in catalog.problems:
        print(p)        # module_defs/erp.yaml:12: module 'orders': field 'strategy': ...
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from croniter import croniter
from pydantic import BaseModel, ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pipekit_core.errors import UnknownModuleError
from pipekit_core.models import Automation, Connection, Group, Module, format_duration
from pipekit_core.partitions import WINDOW_NAMES, WindowError, spec_for
from pipekit_core.sql.dialects import parse_table_name
from pipekit_core.watermarks import tokenize

TOP_LEVEL_KEYS = ("connections", "modules", "groups")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED_NAMES = frozenset({"pipekit_all"})  # `pipekit_all_job` is the job of every module
# libyaml's parser when PyYAML was built with it (several times faster than the pure-Python one);
# both compose nodes with marks, so problems keep their line numbers either way.
_FAST_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Problem:
    """One definition problem: where it is (file, 1-based line) and what is wrong."""

    file: str
    line: int | None
    module: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        parts = [self.file if self.line is None else f"{self.file}:{self.line}"]
        if self.module is not None:
            parts.append(f"module '{self.module}'")
        if self.field is not None:
            parts.append(f"field '{self.field}'")
        return one_line(": ".join(parts + [self.message]))


def one_line(text: str) -> str:
    """``text`` with control characters (line breaks, tabs, NUL, ...) shown as escapes, so that a
    name or key from a file can never split a problem over lines or hide part of it."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    known = sorted(set(known))
    close = difflib.get_close_matches(name, known, n=3)
    if close:
        return " (did you mean " + " or ".join(f"'{c}'" for c in close) + "?)"
    return f" (known: {', '.join(known)})" if known and len(known) <= 12 else ""


def cron_problem(expr: str) -> str | None:
    """Why ``expr`` is not a cron expression Dagster accepts, or None: the one check of every cron
    key (``schedule:``, ``automation: {on_cron}``, ``freshness: {deadline}``). Dagster takes the
    5-field form only (croniter also takes a 6th, seconds field) and refuses February 30/31."""
    if not croniter.is_valid(expr):
        return f"'{expr}' is not a valid cron expression"
    fields = croniter.expand(expr)[0]
    if len(fields) != 5:
        return (f"'{expr}' has {len(fields)} fields; write the 5-field form (minute hour day-of-month month "
                "day-of-week), the only one Dagster accepts")
    if fields[3] == [2] and len(fields[2]) == 1 and fields[2][0] in (30, 31):
        return f"'{expr}' never fires (February has no day {fields[2][0]})"
    return None


def double_schedules(cat: Catalog, ticks: int = 400) -> list[str]:
    """Modules whose own ``schedule:`` and their group's fire at the same moment (checked over the
    next ``ticks`` firings of each): the second run finds the lock held and fails."""
    out = []
    start = dt.datetime.now(dt.timezone.utc)

    def fires(expr: str) -> set[dt.datetime]:
        it = croniter(expr, start)
        return {it.get_next(dt.datetime) for _ in range(ticks)}

    for g in cat.groups.values():
        if not g.schedule or cron_problem(g.schedule):
            continue
        group_ticks = fires(g.schedule)
        for name in g.modules:
            mod = cat.modules.get(name)
            if mod is None or not mod.schedule or cron_problem(mod.schedule) or not mod.enabled:
                continue
            both = sorted(group_ticks & fires(mod.schedule))
            if both:
                out.append(f"{mod.source_file}: module '{name}' is scheduled twice: its schedule '{mod.schedule}' and "
                           f"group '{g.name}''s '{g.schedule}' both fire at {both[0].isoformat()} (UTC); the second run "
                           "finds the module already running and is skipped. Keep one of them")
    return out


def smallest_cron_interval(expr: str) -> dt.timedelta:
    """The shortest time between two ticks of ``expr`` (UTC; sampled over 1,000 ticks from a year
    ago, as Dagster samples it to bound a cron freshness window)."""
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=365)
    ticks = croniter(expr, start)
    prev: dt.datetime = ticks.get_next(dt.datetime)
    smallest: dt.timedelta | None = None
    for _ in range(999):
        tick: dt.datetime = ticks.get_next(dt.datetime)
        if tick - start > dt.timedelta(days=365 * 20):
            break
        if tick > prev and (smallest is None or tick - prev < smallest):
            smallest = tick - prev
        prev = tick
    return smallest or dt.timedelta(days=365 * 20)


@dataclass
class Catalog:
    """Everything the definitions folder defines: valid objects plus the problems found.

    ``modules`` holds only valid modules (enabled or not), files in sorted path order and
    modules in file order. ``groups`` holds only valid groups; a group's ``modules`` lists the
    members as written, minus members left out of ``modules`` for problems of their own.
    """

    defs_dir: Path
    connections: dict[str, Connection] = field(default_factory=dict)
    modules: dict[str, Module] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # valid but likely unintended (printed, not refused)
    files: list[Path] = field(default_factory=list)

    def enabled_modules(self) -> list[Module]:
        """Valid modules with ``enabled: true``, in catalog order."""
        return [m for m in self.modules.values() if m.enabled]

    def _get(self, kind: str, table: dict[str, Any], name: str) -> Any:
        if name in table:
            return table[name]
        own = [str(p) for p in self.problems
               if (p.module == name if kind == "module" else (p.field or "").startswith(f"{kind}s.{name}"))]
        if own:
            raise UnknownModuleError(f"{kind} '{name}' is not loaded: its definition has problems:\n" + "\n".join(own))
        # A file that could not be read whole (invalid YAML, a bad top level) may be where it is.
        unread = [str(p) for p in self.problems if p.module is None and p.field is None]
        where = ("; these definition files could not be read whole, it may be in one of them:\n" + "\n".join(unread)
                 if unread else "")
        raise UnknownModuleError(f"unknown {kind} '{name}'{_did_you_mean(name, table)}{where}")

    def module(self, name: str) -> Module:
        """The valid module ``name``; raises UnknownModuleError (with close matches) otherwise."""
        return self._get("module", self.modules, name)

    def group(self, name: str) -> Group:
        """The valid group ``name``; raises UnknownModuleError (with close matches) otherwise."""
        return self._get("group", self.groups, name)

    def group_of(self, module_name: str) -> str | None:
        """Name of the group that lists ``module_name``, or None."""
        return next((g.name for g in self.groups.values() if module_name in g.modules), None)

    def automation_of(self, module_name: str) -> Automation | None:
        """The ``automation:`` that applies to a valid module: its own, else its group's, or None."""
        group = self.group_of(module_name)
        return self.modules[module_name].automation_in(self.groups.get(group) if group else None)

    def connection(self, name: str) -> Connection:
        """The connection ``name``; raises UnknownModuleError (with close matches) otherwise."""
        return self._get("connection", self.connections, name)

    def broken_files(self) -> dict[str, list[Problem]]:
        """Problems grouped by file, for the files that have any."""
        out: dict[str, list[Problem]] = {}
        for p in self.problems:
            out.setdefault(p.file, []).append(p)
        return out

    def in_dependency_order(self, names: list[str]) -> list[str]:
        """``names`` reordered so each module comes after its deps in the list; stable otherwise.

        Deps outside ``names`` are ignored; should a cycle remain, its members keep their order.
        """
        deps = {n: [d for d in (self.modules[n].deps if n in self.modules else []) if d in names] for n in names}
        done: list[str] = []
        pending = list(dict.fromkeys(names))
        while pending:
            ready = next((n for n in pending if all(d in done for d in deps[n] if d != n)), pending[0])
            done.append(ready)
            pending.remove(ready)
        return done



def _line(node: Node | None) -> int | None:
    return None if node is None else node.start_mark.line + 1


def _entry(node: Node | None, key: Any) -> tuple[Node, Node] | None:
    """(key node, value node) of ``key`` in a mapping node; the last one wins, as in YAML."""
    if isinstance(node, MappingNode):
        for k, v in reversed(node.value):
            if isinstance(k, ScalarNode) and k.value == str(key):
                return k, v
    return None


def _at(node: Node | None, loc: Iterable[Any]) -> Node | None:
    """The deepest node along ``loc`` (pydantic error location) that exists."""
    for part in loc:
        if isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
        elif (kv := _entry(node, part)) is not None:
            node = kv[1]
        else:
            break
    return node


def _path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _parse_yaml(text: str) -> tuple[Node | None, list[tuple[tuple[Any, ...], str, int, int]], Any]:
    """(root node, duplicate keys, data) of one YAML document, parsed once: compose, then construct.

    Uses libyaml when available; a text it rejects is parsed again with the pure-Python loader,
    whose messages name the offending character or alias (the error raised is that loader's).
    """
    try:
        return _parse_with(_FAST_YAML_LOADER, text)
    except Exception:
        if _FAST_YAML_LOADER is yaml.SafeLoader:
            raise
        return _parse_with(yaml.SafeLoader, text)


def _parse_with(loader_class: Any, text: str) -> tuple[Node | None, list[tuple[tuple[Any, ...], str, int, int]], Any]:
    loader = loader_class(text)
    try:
        root = loader.get_single_node()
        dups = _duplicate_keys(root) if root is not None else []
        data = loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()
    return root, dups, data


def _duplicate_keys(node: Node, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], str, int, int]]:
    """(path, key, line, first line) of every key repeated in a mapping, at any depth."""
    out: list[tuple[tuple[Any, ...], str, int, int]] = []
    if isinstance(node, MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            if isinstance(k, ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                if k.value in seen:
                    out.append((path, k.value, k.start_mark.line + 1, seen[k.value]))
                seen.setdefault(k.value, k.start_mark.line + 1)
                out += _duplicate_keys(v, path + (k.value,))
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            out += _duplicate_keys(item, path + (i,))
    return out



def _without_errors(model: type[BaseModel], raw: Any, e: ValidationError) -> Any:
    """``raw`` validated with what the errors point at left out (a mistyped key dropped, a bad value
    of a key that has a default replaced by the default), or None when that cannot make it valid
    (a required key is missing or wrong)."""
    import copy

    if not isinstance(raw, dict):
        return None
    data = copy.deepcopy(raw)
    for err in e.errors():
        loc = tuple(err["loc"])
        if not loc:
            return None
        target = loc if err["type"] == "extra_forbidden" else loc[:1]
        if target[0] in model.model_fields and model.model_fields[target[0]].is_required():
            return None
        parent: Any = data
        for part in target[:-1]:
            try:
                parent = parent[part]
            except (KeyError, IndexError, TypeError):
                return None
        if isinstance(parent, dict):
            parent.pop(target[-1], None)
        else:
            return None
    try:
        return model.model_validate(data)
    except ValidationError:
        return None


@dataclass(eq=False)
class _Item:
    """One connection, module or group as found in a file, valid or not."""

    kind: str  # "connection" | "module" | "group"
    name: str | None
    file: str
    base_dir: Path
    node: Node | None
    index: int = 0
    key_line: int | None = None  # line of the name key (connections, groups)
    model: Any = None
    ok: bool = True
    # A module whose definition has schema errors, with the offending keys left out: its other
    # checks (connections, SQL, schedule, ...) still run on it, so every problem is reported at once.
    partial: Any = None

    @property
    def line(self) -> int | None:
        return self.key_line or _line(self.node)

    def field_name(self, loc: Iterable[Any] = ()) -> str | None:
        rel = _path(loc)
        prefix = f"{self.kind}s.{self.name}" if self.kind != "module" else (
            "" if self.name else f"modules[{self.index}]")
        return ".".join(x for x in (prefix, rel) if x) or None


class _Loader:
    def __init__(self, defs_dir: Path, timezone: str = "UTC") -> None:
        self.cat = Catalog(defs_dir=defs_dir)
        self.timezone = timezone
        self.items: list[_Item] = []

    def problem(self, file: str, line: int | None, message: str, module: str | None = None,
                field_: str | None = None) -> None:
        self.cat.problems.append(Problem(file, line, module, field_, message))

    def fail(self, item: _Item, loc: Iterable[Any], message: str, line: int | None = None) -> None:
        """Record a problem on ``item`` at ``loc`` (at ``line``, else the line of loc) and reject it."""
        loc = tuple(loc)
        item.ok = False
        if line is None:
            at = _at(item.node, loc)
            line = item.line if at is item.node else _line(at)
        module = item.name if item.kind == "module" else None
        self.problem(item.file, line, message, module, item.field_name(loc))

    def load_file(self, path: Path) -> None:
        file = str(path)
        try:
            root, dups, data = _parse_yaml(path.read_text(encoding="utf-8"))
        except yaml.MarkedYAMLError as e:
            # An unclosed quote is found at the end of the file: point at where the scalar starts.
            unclosed = (e.context or "").startswith("while scanning a quoted scalar") and e.context_mark
            mark = e.context_mark if unclosed else (e.problem_mark or e.context_mark)
            msg = " ".join(str(x) for x in (e.context, e.problem) if x)
            self.problem(file, mark.line + 1 if mark else None, f"invalid YAML: {msg}")
            return
        except Exception as e:  # noqa: BLE001 - OSError, UnicodeDecodeError, odd YAML: all are problems
            self.problem(file, None, f"cannot read: {e}")
            return
        if data is None:
            return
        if not isinstance(data, dict):
            self.problem(file, _line(root), "the top level must be a mapping with keys " + ", ".join(TOP_LEVEL_KEYS))
            return
        start = len(self.items)
        for key, value in data.items():
            kv = _entry(root, key)
            if key not in TOP_LEVEL_KEYS:
                self.problem(file, _line(kv[0] if kv else root),
                             f"unknown top-level key '{key}'{_did_you_mean(str(key), TOP_LEVEL_KEYS)}")
            elif value is not None:
                self.collect(path, str(key), value, kv[1] if kv else None)
        for dpath, key, line, first in dups:
            owner = next((it for it in self.items[start:] if len(dpath) > 1 and (
                (it.kind, it.index) == ("module", dpath[1]) if dpath[0] == "modules"
                else (it.kind + "s", it.name) == (dpath[0], str(dpath[1])))), None)
            msg = f"duplicate key '{key}' (first at line {first}); the last one wins in YAML"
            if owner is None:
                self.problem(file, line, msg, field_=_path(dpath) or None)
            else:
                owner.ok = False
                module = owner.name if owner.kind == "module" else None
                self.problem(file, line, msg, module, owner.field_name(dpath[2:] + (key,)))

    def collect(self, path: Path, key: str, value: Any, node: Node | None) -> None:
        file = str(path)
        if key == "modules":
            if not isinstance(value, list):
                self.problem(file, _line(node), "must be a list of modules (each item starting with '- name:')",
                             field_="modules")
                return
            for i, raw in enumerate(value):
                name = raw.get("name") if isinstance(raw, dict) else None
                item = _Item("module", name if isinstance(name, str) else None, file, path.parent,
                             _at(node, [i]), index=i)
                self.validate(item, Module, raw)
            return
        if not isinstance(value, dict):
            self.problem(file, _line(node), f"must be a mapping of {key[:-1]} names to definitions", field_=key)
            return
        for name, raw in value.items():
            kind, model = ("connection", Connection) if key == "connections" else ("group", Group)
            kv = _entry(node, name)
            item = _Item(kind, str(name), file, path.parent, kv[1] if kv else node,
                         key_line=_line(kv[0]) if kv else None)
            self.validate(item, model, raw)

    def validate(self, item: _Item, model: type[BaseModel], raw: Any) -> None:
        self.items.append(item)
        try:
            item.model = model.model_validate(raw)
        except ValidationError as e:
            for err in e.errors():
                self.pydantic_problem(item, model, err)
            if model is Module:
                before = len(self.cat.problems)
                item.partial = _without_errors(model, raw, e)
                if item.partial is None and before and self.cat.problems[-1].module == item.name:
                    # where the later checks truly cannot run, the module's last problem says so
                    last = self.cat.problems[-1]
                    self.cat.problems[-1] = dataclasses.replace(
                        last, message=last.message + " (its other checks were skipped until this is fixed)")

    def pydantic_problem(self, item: _Item, model: type[BaseModel], err: Any) -> None:
        loc, kind, msg = tuple(err["loc"]), err["type"], err["msg"]
        if kind == "extra_forbidden":
            kv = _entry(_at(item.node, loc[:-1]), loc[-1])
            hint = _did_you_mean(str(loc[-1]), _model_at(model, loc[:-1]))
            self.fail(item, loc[:-1], f"unknown key '{loc[-1]}'{hint}", _line(kv[0]) if kv else None)
            return
        if kind == "missing":
            self.fail(item, loc, f"required key '{loc[-1]}' is missing")
            return
        msg = msg.removeprefix("Value error, ")
        if kind == "value_error":  # "field: what is wrong" from a model's own rule: point at the field
            head, sep, rest = msg.partition(": ")
            first = head.split(" / ")[0]
            if sep and first in (_model_at(model, loc) if loc else model.model_fields):
                self.fail(item, (*loc, first), rest if " / " not in head else msg)
                return
        if kind == "literal_error":
            msg += f" (got {err.get('input')!r})"
        elif kind in ("dict_type", "model_type") and not loc:
            msg = f"a {item.kind} must be a mapping of keys, not {type(err.get('input')).__name__}"
        self.fail(item, loc, msg)

    def finish(self) -> Catalog:
        cat = self.cat
        conns: dict[str, _Item] = {}
        for it in (i for i in self.items if i.kind == "connection" and i.model is not None):
            if (first := conns.get(it.name)) is not None:  # type: ignore[arg-type]
                where = f"{first.file}:{first.line} and {it.file}:{it.line}"
                for dup, note in ((first, "the first one is used"), (it, "this one is ignored")):
                    self.problem(dup.file, dup.line, f"connection '{it.name}' is defined twice ({where}); {note}",
                                 field_=dup.field_name())
                continue
            conns[it.name] = it  # type: ignore[index]
            it.model.name, it.model.base_dir = it.name, str(it.base_dir)
            cat.connections[it.name] = it.model  # type: ignore[index]
        modules = [i for i in self.items if i.kind == "module"]
        defined = {m.name for m in modules if m.name}
        for name in defined:
            same = [m for m in modules if m.name == name]
            where = ", ".join(f"{s.file}:{_line(_at(s.node, ['name']))}" for s in same)
            for s in same if len(same) > 1 else []:
                self.fail(s, ["name"], f"module name '{name}' is defined more than once: {where}")
        parsed = [m for m in modules if m.model is not None]
        for m in parsed:
            self.check_module(m, defined)
        for m in modules:
            if m.model is None and m.partial is not None:  # report its other problems too
                m.model = m.partial
                try:
                    self.check_module(m, defined)
                finally:
                    m.model = None
        self.check_cycles(parsed)
        self.check_groups(defined)
        self.check_automation()
        for m in modules:
            if m.ok and m.model is not None:
                m.model.source_file, m.model.source_line = m.file, m.line
                cat.modules[m.model.name] = m.model
        for g in self.items:
            if g.kind == "group" and g.ok and g.model is not None:
                g.model.name, g.model.source_file = g.name, g.file
                g.model.modules = [n for n in g.model.modules if n in cat.modules]
                cat.groups[g.name] = g.model  # type: ignore[index]
        order = {str(f): i for i, f in enumerate(cat.files)}
        cat.problems.sort(key=lambda p: (order.get(p.file, -1), p.line or 0))
        cat.warnings += double_schedules(cat)
        return cat

    def check_module(self, it: _Item, defined: set[str]) -> None:
        m: Module = it.model
        conns = self.cat.connections
        refs: list[tuple[tuple[Any, ...], str | None]] = [(("source",), m.source), (("dest",), m.dest)]
        refs += [(("watermarks", i, "connection"), w.connection) for i, w in enumerate(m.watermarks)]
        refs += [(("hooks", i, "connection"), h.connection) for i, h in enumerate(m.hooks)]
        broken = {c.name: c for c in self.items if c.kind == "connection" and c.model is None}
        for loc, ref in refs:
            if ref in broken:
                self.fail(it, loc, f"connection '{ref}' has problems ({broken[ref].file}:{broken[ref].line})")
            elif ref is not None and ref not in conns:
                self.fail(it, loc, f"unknown connection '{ref}'{_did_you_mean(ref, conns)}")
        src, dst = conns.get(m.source), conns.get(m.dest)
        if dst is not None and not dst.has_native_driver:
            self.fail(it, ["dest"],
                      f"destination-side SQL needs a native driver, and connection '{m.dest}' is {dst.kind}, "
                      "which has none (native: postgresql, sqlite)")
        if m.transport == "jrunner":
            for role, c in (("source", src), ("dest", dst)):
                if c is not None and c.kind == "sqlite":
                    self.fail(it, ["transport"], f"jrunner has no SQLite driver ({role} '{c.name}' is "
                              "SQLite); use transport native or auto")
        if m.transport == "native":
            used = [(("source",), src)] + [(("watermarks", i, "connection"), conns.get(w.connection or ""))
                                           for i, w in enumerate(m.watermarks)]
            for loc, c in used:
                if c is not None and not c.has_native_driver:
                    self.fail(it, ["transport"], f"no native driver for kind {c.kind} (connection '{c.name}', "
                              f"{_path(loc)}); use transport jrunner or auto")
        self.read_sql(it)
        for i, dep in enumerate(m.deps):
            if dep not in defined:
                self.fail(it, ["deps", i], f"unknown dep '{dep}'{_did_you_mean(dep, defined)}")
        if m.schedule is not None and (why := cron_problem(m.schedule)):
            self.fail(it, ["schedule"], why)
        self.check_names(it, dst)
        if m.name in _RESERVED_NAMES:  # pipekit_all_job runs every module
            self.fail(it, ["name"], f"the module name '{m.name}' is reserved")
        self.check_partitions(it)
        for i, w in enumerate(m.watermarks):
            if w.name in WINDOW_NAMES:
                self.fail(it, ["watermarks", i, "name"], f"watermark name '{w.name}' is reserved for the "
                          "window of partitioned modules")
            if not _IDENT_RE.match(w.name):
                self.fail(it, ["watermarks", i, "name"], f"watermark name '{w.name}' cannot be a "
                          "{placeholder}: use letters, digits and underscores, not starting with a digit")
        targets = [c.target_name for c in m.columns or []]
        for key in m.merge_key:
            if m.columns is not None and key not in targets:
                src_of = {c.source_name: c.target_name for c in m.columns}
                hint = (f"; merge_key uses destination names: '{src_of[key]}'" if key in src_of
                        else f"; destination columns: {', '.join(targets)}")
                self.fail(it, ["merge_key"], f"merge_key column '{key}' is not in columns{hint}")

    def check_partitions(self, it: _Item) -> None:
        """partitions: has a known timezone and period-aligned start / end; its column (and
        deletes: soft_column) is a destination column where columns: lists them."""
        m: Module = it.model
        targets = [c.target_name for c in m.columns or []]
        if m.partitions is not None:
            try:
                spec_for(m, self.timezone)
            except WindowError as e:
                field_ = "timezone" if "time zone" in str(e) else ("end" if "end" in str(e) else "start")
                self.fail(it, ["partitions", field_], str(e).split(": ", 1)[1])
            if m.columns is not None and m.partitions.column not in targets:
                self.fail(it, ["partitions", "column"], f"partitions column '{m.partitions.column}' is not in "
                          f"columns (destination names: {', '.join(targets)})")
        d = m.deletes
        if d is not None and d.soft_column and d.soft_column in targets:
            self.fail(it, ["deletes", "soft_column"], f"soft_column '{d.soft_column}' is also a column of the "
                      "query (columns:); it must be a destination column of its own")

    def check_names(self, it: _Item, dst: Connection | None) -> None:
        """dest_table parses as [schema.]table (a schema only where the destination has them);
        merge_key and columns: names are non-empty, without NUL."""
        m: Module = it.model
        try:
            table = parse_table_name(m.dest_table)
        except ValueError as e:
            self.fail(it, ["dest_table"], str(e))
        else:
            if dst is not None and dst.kind == "sqlite" and table.schema not in (None, "main"):
                self.fail(it, ["dest_table"], f"'{m.dest_table}': SQLite has no schemas (destination "
                          f"'{dst.name}' is SQLite); write the table name alone, e.g. \"{table.name}\"")
        named: list[tuple[tuple[Any, ...], str | None]] = [(("merge_key", i), k) for i, k in enumerate(m.merge_key)]
        for i, c in enumerate(m.columns or []):
            named += [(("columns", i, "source_name"), c.source_name), (("columns", i, "dest_name"), c.dest_name)]
        for loc, name in named:
            if name is not None and (not name.strip() or "\x00" in name):
                self.fail(it, loc, f"column name {name!r} is empty or has a NUL character")

    def read_sql(self, it: _Item) -> None:
        m: Module = it.model
        m.sql = m.query or ""
        if m.query_file is not None:
            qpath = it.base_dir / m.query_file  # an absolute query_file stays absolute
            try:
                m.sql, m.query_path = qpath.read_text(encoding="utf-8"), str(qpath)
            except (OSError, UnicodeDecodeError) as e:
                reason = "file not found" if isinstance(e, FileNotFoundError) else str(e)
                return self.fail(it, ["query_file"], f"cannot read query_file '{m.query_file}' ({qpath}): {reason}")
        qkey = "query" if m.query_file is None else "query_file"
        names = {w.name for w in m.watermarks} | set(m.window_names())
        tokens = self.check_template(it, [qkey], m.sql, names, "the query")
        used = {t.name for t in tokens if t.name is not None}
        for i, w in enumerate(m.watermarks):
            if w.name not in used:
                self.fail(it, ["watermarks", i, "name"], f"watermark '{w.name}' is never used in the query "
                          f"(no {{{w.name}}} in {qkey})")
        if m.strategy == "window" and not used & set(m.window_names()):
            self.fail(it, [qkey], "strategy window: the query must select the window's rows with "
                      "{window_start} and {window_end} (e.g. WHERE ordered_at >= '{window_start}' AND "
                      "ordered_at < '{window_end}')")
        if m.deletes is not None:
            self.check_template(it, ["deletes", "keys_query"], m.deletes.keys_query, names, "the keys query")
        if m.partitions is not None:  # hooks of a partitioned module are templates too
            for i, h in enumerate(m.hooks):
                self.check_template(it, ["hooks", i, "sql"], h.sql, names, f"hook #{i + 1}")

    def check_template(self, it: _Item, loc: list[Any], sql: str, names: set[str], what: str) -> list[Any]:
        """Report lone braces and unknown ``{placeholders}`` of one SQL template (at their line)."""
        node = _at(it.node, loc)
        tokens = tokenize(sql)
        seen: set[str] = set()
        for tok in tokens:
            if tok.name is None and not tok.stray or tok.name in names or tok.name in seen:
                continue
            line = _line(node)
            if isinstance(node, ScalarNode) and node.style == "|" and line:
                line += 1 + sql.count("\n", 0, tok.pos)
            if tok.stray:
                self.fail(it, loc, f"{what} has a lone '{tok.text}' that is not a placeholder; write "
                          f"'{tok.text * 2}' for a literal '{tok.text}'", line=line)
                continue
            seen.add(tok.name or "")  # report each name once
            if tok.name in WINDOW_NAMES:
                self.fail(it, loc, f"{what} uses {{{tok.name}}} but the module has no partitions: "
                          "(window placeholders need partitions:)", line=line)
            else:
                self.fail(it, loc, f"{what} uses {{{tok.name}}} but the module has no watermark "
                          f"named '{tok.name}'", line=line)
        return tokens

    def check_cycles(self, modules: list[_Item]) -> None:
        items = {m.model.name: m for m in modules}
        done: set[str] = set()
        stack: list[str] = []  # the current path of the depth-first walk

        def visit(n: str) -> None:
            stack.append(n)
            for d in items[n].model.deps:
                if d in stack:
                    cycle = " -> ".join(stack[stack.index(d):] + [d])
                    for member in stack[stack.index(d):]:
                        self.fail(items[member], ["deps"], f"deps cycle: {cycle}")
                elif d in items and d not in done:
                    visit(d)
            stack.pop()
            done.add(n)

        for n in items:
            if n not in done:
                visit(n)

    def check_groups(self, defined: set[str]) -> None:
        member_of: dict[str, _Item] = {}
        for g in (i for i in self.items if i.kind == "group" and i.model is not None):
            grp: Group = g.model
            if not _IDENT_RE.match(g.name or ""):
                self.fail(g, [], f"group name '{g.name}' must be letters, digits and underscores")
            elif g.name in defined or g.name in _RESERVED_NAMES:
                self.fail(g, [], f"group '{g.name}' has the name of a module: their jobs ({g.name}_job) would clash")
            if not grp.modules:
                self.fail(g, ["modules"], "a group needs at least one module")
            if grp.schedule is not None and (why := cron_problem(grp.schedule)):
                self.fail(g, ["schedule"], why)
            for i, name in enumerate(grp.modules):
                if name not in defined:
                    self.fail(g, ["modules", i], f"unknown module '{name}'{_did_you_mean(name, defined)}")
                elif grp.modules.index(name) != i:
                    self.fail(g, ["modules", i], f"module '{name}' is listed twice")
                elif name in member_of:
                    first = member_of[name]
                    self.fail(g, ["modules", i], f"module '{name}' is already in group '{first.name}' "
                              f"({first.file}:{first.line}); a module belongs to at most one group")
                    self.problem(first.file, first.line, f"module '{name}' is also listed in group "
                                 f"'{g.name}' ({g.file}:{g.line})", None, first.field_name(["modules"]))
                else:
                    member_of[name] = g

    def check_automation(self) -> None:
        """``automation:`` and ``freshness:`` crons, and the triggers that would start a module twice.

        A module is started by Dagster's declarative automation (``automation:``, its own or its
        group's) *or* by pipekit's triggers (its ``schedule:``, its ``sensor:``, its group's
        ``schedule:``), never both: each combination of the two is a problem. Combinations of
        pipekit's own triggers (a module schedule beside its group's, a schedule and a sensor) stay
        allowed, as before; a member's own ``automation:`` replaces its group's.
        """
        groups = [g for g in self.items if g.kind == "group" and g.model is not None]
        for g in groups:
            grp: Group = g.model
            if grp.automation is None:
                continue
            self.check_automation_cron(g, grp.automation)
            if grp.schedule is not None:
                self.fail(g, ["automation"], f"automation: {grp.automation} and schedule: '{grp.schedule}' would both "
                          f"start the group's modules; keep one of them")
        group_of: dict[str, _Item] = {}
        for g in reversed(groups):  # the first group listing a module is its group (a second one is an error)
            if g.ok:  # a group with problems is left out: neither its schedule nor its automation applies
                group_of.update(dict.fromkeys(g.model.modules, g))
        for it in (i for i in self.items if i.kind == "module" and i.model is not None):
            m: Module = it.model
            if m.automation is not None:
                self.check_automation_cron(it, m.automation)
            if m.freshness is not None and m.freshness.deadline is not None:
                if why := cron_problem(m.freshness.deadline):
                    self.fail(it, ["freshness", "deadline"], why)
                elif m.freshness.window is not None:
                    gap = smallest_cron_interval(m.freshness.deadline)
                    if m.freshness.window > gap:
                        self.fail(it, ["freshness", "window"], f"window {format_duration(m.freshness.window)} is longer "
                                  f"than the time between two deadline ticks ({format_duration(gap)}); shorten it or leave it out "
                                  "(the default is that whole time)")
            self.check_double_start(it, group_of.get(m.name))

    def check_double_start(self, it: _Item, g: _Item | None) -> None:
        """The module's automation (its own, else its group's) beside a schedule or sensor."""
        m: Module = it.model
        grp: Group | None = g.model if g is not None else None
        auto = m.automation_in(grp)
        if auto is None:
            return
        own = m.automation is not None
        for key, value in (("schedule", m.schedule and f"'{m.schedule}'"), ("sensor", m.sensor and "(a probe)")):
            if not value:
                continue
            if own or g is None:  # reported at the module's own key: automation: when it has one
                self.fail(it, ["automation"], f"automation: {auto} and {key}: {value} would both start this module; "
                          "keep one of them")
            else:
                self.fail(it, [key], f"group '{g.name}' ({g.file}:{g.line}) has automation: {auto}, which starts this "
                          f"module, and {key}: {value} would start it too; keep one of them")
        if own and g is not None and grp is not None and grp.schedule is not None:
            self.fail(it, ["automation"], f"group '{g.name}' ({g.file}:{g.line}) has schedule: '{grp.schedule}', which "
                      f"runs this module in {g.name}_job; automation: {auto} would start it too; keep one of them")

    def check_automation_cron(self, it: _Item, auto: Automation) -> None:
        if auto.kind == "on_cron" and (why := cron_problem(auto.cron or "")):
            self.fail(it, ["automation", "on_cron"], why)


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the nested model at ``loc`` (for "did you mean" hints on unknown keys)."""
    for part in loc:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(str(part))
        outer = getattr(info.annotation, "__args__", (info.annotation,)) if info else ()
        nested = [inner for a in outer for inner in getattr(a, "__args__", (a,))]
        sub = next((a for a in nested if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if sub is None:
            return []
        model = sub
    return [n for n, f in model.model_fields.items() if not f.exclude]


def _yaml_files(defs_dir: Path) -> list[Path]:
    found = [p for p in defs_dir.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()]
    visible = [p for p in found if not any(part.startswith(".") for part in p.relative_to(defs_dir).parts)]
    return sorted(visible, key=lambda p: p.relative_to(defs_dir).as_posix())


def load_catalog(defs_dir: Path, timezone: str = "UTC") -> Catalog:
    """Load every YAML file under ``defs_dir`` into a :class:`Catalog`.

    ``timezone`` is the ``timezone`` setting (``Settings.local_timezone()``): the zone of
    ``partitions:`` that name none, in which their start and end must be period boundaries.

    Never raises for definition problems: they are collected in ``Catalog.problems`` (a missing
    defs folder is one Problem) and the objects at fault are left out.
    """
    defs_dir = Path(defs_dir)
    loader = _Loader(defs_dir, timezone)
    if not defs_dir.is_dir():
        what = "is not a folder" if defs_dir.exists() else "does not exist"
        loader.problem(str(defs_dir), None, f"the module definitions folder {what} (set PIPEKIT_DEFS or "
                       "'defs' in pipekit.yaml)")
        return loader.cat
    loader.cat.files = _yaml_files(defs_dir)
    for path in loader.cat.files:
        loader.load_file(path)
    return loader.finish()
