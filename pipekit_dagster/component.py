"""``PipekitComponent``: pipekit as a Dagster Component, for ``dg`` projects.

A ``defs.yaml`` in a dg project's ``defs/`` folder::

    type: pipekit_dagster.PipekitComponent
    attributes:
      defs: module_defs                              # the module definitions folder (relative to this file's folder)
      database: "{{ context.project_root }}/pipekit.db"
      translation:                                   # per module, like dagster-dbt's translation
        key_prefix: erp
        description: "{{ module.name }}: {{ module.strategy }} sync from {{ module.source }}"
        tags: {source_system: erp}

It builds exactly what :func:`pipekit_dagster.build_definitions` builds (the same function): one
asset per module, the jobs, schedules, sensors, checks, resources and the in-process executor.
Every name that would clash between two instances in one code location (jobs, schedules,
sensors, the module checks, pools, ops, the ``pipekit`` resource key) is prefixed with the
instance's ``name`` (default: its folder under ``defs/``); see :class:`pipekit_dagster.constants.Naming`.

Registered for ``dg`` through the ``dagster_dg_cli.registry_modules`` entry point (pyproject.toml),
so ``dg list components`` shows it and ``dg scaffold defs pipekit_dagster.PipekitComponent NAME``
creates a working instance (:class:`PipekitComponentScaffolder`).
"""

# No `from __future__ import annotations`: dg.Resolvable reads the field annotations as types.

import contextlib
import logging
import re
import sqlite3
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import dagster as dg
from dagster.components.utils.translation import TranslationFn, TranslationFnResolver

from pipekit_dagster import constants as c
from pipekit_dagster.resources import PipekitResource
from pipekit_dagster.sensors import ModuleFailure
from pipekit_dagster.translator import PipekitModuleData, PipekitSourceTable, PipekitTranslator

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _template_vars(data: PipekitModuleData) -> dict[str, object]:
    """What ``translation:`` templates see for each module (beside ``spec``, the default spec)."""
    return {"module": data.module, "data": data, "group": data.group}


ResolvedPipekitTranslation = Annotated[
    TranslationFn[PipekitModuleData],
    TranslationFnResolver[PipekitModuleData](template_vars_for_translation_fn=_template_vars),
]


class PipekitComponentScaffolder(dg.Scaffolder):
    """``dg scaffold defs pipekit_dagster.PipekitComponent NAME``: a ``defs.yaml`` and an example
    module folder (``module_defs/example.yaml``) that runs as it is: a small SQLite source
    database it creates in ``module_defs/data/``, copied into a SQLite warehouse beside it."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        target = request.target_path
        ident = _ident(target.name)
        if request.scaffold_format == "python":
            # not dagster's own python stub (a load() whose body is `...`, which loads nothing):
            # a component.py that returns a working instance on the module folder written below
            module_path, _, class_name = request.type_name.rpartition(".")
            (target / "component.py").write_text(
                COMPONENT_PY_TEMPLATE.format(module=module_path or "pipekit_dagster", cls=class_name, name=ident)
            )
        else:
            (target / "defs.yaml").write_text(DEFS_YAML_TEMPLATE.format(type=request.type_name, name=ident))
        module_defs = target / "module_defs"
        module_defs.mkdir(exist_ok=True)
        (module_defs / "example.yaml").write_text(EXAMPLE_MODULE_TEMPLATE.format(module=f"{ident}_greetings"))
        (module_defs / ".gitignore").write_text("# source and warehouse databases of the example\ndata/\n")
        make_example_source(module_defs / "data" / "example_source.db")


@dg.scaffold_with(PipekitComponentScaffolder)
@dataclass
class PipekitComponent(dg.Component, dg.Resolvable):
    """pipekit modules as Dagster assets: one asset per module of a module definitions folder
    (watermarks, staging, merge, hooks), with its jobs, schedules, sensors and checks.

    `dg scaffold defs pipekit_dagster.PipekitComponent my_sync` creates a working instance with
    an example module. Attributes (paths are relative to the folder of the defs.yaml):

    - `defs`: the module definitions folder (pipekit's YAML: connections, modules, groups).
    - `database`: pipekit's repository (SQLite file or postgresql:// URL); default: PIPEKIT_DB,
      else `database` in the pipekit.yaml, else ./pipekit.db.
    - `config`: a pipekit.yaml (secrets, jrunner, transport, timezone, staging_schema).
    - `name`: prefix of this instance's jobs, schedules, sensors, checks, pools and resource key
      (default: the folder of the defs.yaml under defs/).
    - `translation`: asset attributes per module (key, key_prefix, group_name, description, tags,
      metadata, owners, kinds, ...); templates see `module`, `data` (group, kinds, upstream) and `spec`.
    - `schedule_status` / `sensor_status`: `running` (default: the YAML is the source of truth) or `stopped`.
    """

    defs: str = "module_defs"
    database: str | None = None
    config: str | None = None
    name: str | None = None
    translation: ResolvedPipekitTranslation | None = None
    schedule_status: Literal["running", "stopped"] = "running"
    sensor_status: Literal["running", "stopped"] = "running"

    @classmethod
    def get_spec(cls) -> dg.ComponentTypeSpec:
        return dg.ComponentTypeSpec(
            description="pipekit database sync modules (a SQL query on a source copied into a destination "
            "table: watermarks, staging, merge, hooks) as Dagster assets, jobs, schedules and sensors.",
            tags=["pipekit", "database", "sync"],
            produces=["asset", "asset_check", "job", "schedule", "sensor", "resource"],
        )

    # -- what a Python subclass may override --------------------------------------------------
    def get_asset_spec(self, data: PipekitModuleData) -> dg.AssetSpec:
        """The asset spec of one module: :class:`PipekitTranslator`'s (its deps on source tables are
        the keys of :meth:`get_source_asset_spec`), then ``translation:``."""
        spec = _ComponentTranslator(self).default_asset_spec(data)
        return self.translation(spec, data) if self.translation is not None else spec

    def get_source_asset_spec(self, table: PipekitSourceTable) -> dg.AssetSpec:
        """The external asset of a table the modules read and no module writes
        (:meth:`PipekitTranslator.get_source_asset_spec`: key ``[name, connection, schema, table]``,
        group ``pipekit_sources``). ``translation:`` does not apply here (it is per module: its
        templates see ``module``); override this in a subclass, or use ``post_processing``. The
        module assets' deps follow the key returned here; keep it a function of ``table`` alone."""
        return PipekitTranslator().get_source_asset_spec(table)

    def notify_failures(self, failures: list[ModuleFailure]) -> None:
        """Called by the run-failure sensor with each failed run's module failures (default: nothing
        beyond the sensor's log lines); override to send them somewhere."""

    # -- building ------------------------------------------------------------------------------
    def naming(self, context: dg.ComponentLoadContext) -> c.Naming:
        """This instance's names: ``name``, else its folder under ``defs/`` as an identifier."""
        if self.name is not None:
            if not _NAME.match(self.name):
                raise ValueError(
                    f"PipekitComponent at {context.path}: attribute 'name' is {self.name!r}; use a letter followed "
                    "by letters, digits and underscores (it prefixes job, schedule, sensor and resource names)"
                )
            return c.Naming(self.name)
        folder = _folder(context)
        try:
            rel = folder.resolve().relative_to(Path(context.defs_module_path).resolve()).as_posix()
        except ValueError:
            rel = folder.name
        return c.Naming(_ident(rel))

    def resource(self, context: dg.ComponentLoadContext) -> PipekitResource:
        """The ``pipekit`` resource of this instance, bound to its definitions folder."""

        def path(value: str | None) -> str | None:
            if not value:
                return None
            if "://" in value:  # a postgresql:// repository URL
                return value
            return str((_folder(context) / value).resolve())

        return PipekitResource(defs=path(self.defs), database=path(self.database), config=path(self.config))

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        build_definitions = _build_definitions()
        naming = self.naming(context)
        resource = self.resource(context)
        defs = build_definitions(
            resource,
            _ComponentTranslator(self),
            schedule_status=dg.DefaultScheduleStatus(self.schedule_status.upper()),
            sensor_status=dg.DefaultSensorStatus(self.sensor_status.upper()),
            notify_failures=self.notify_failures,
            naming=naming,
        )
        _claim_module_names(context, defs, resource.defs or "(PIPEKIT_DEFS)")
        return defs


class _ComponentTranslator(PipekitTranslator):
    """The component's :meth:`PipekitComponent.get_asset_spec` and
    :meth:`PipekitComponent.get_source_asset_spec` as a translator (the source tables its modules
    read are keyed under the instance's name by default: PipekitSourceTable.namespace)."""

    def __init__(self, component: "PipekitComponent") -> None:
        self.component = component

    def get_asset_spec(self, data: PipekitModuleData) -> dg.AssetSpec:
        return self.component.get_asset_spec(data)

    def default_asset_spec(self, data: PipekitModuleData) -> dg.AssetSpec:
        """:class:`PipekitTranslator`'s spec, its source-table deps keyed by the component."""
        return super().get_asset_spec(data)

    def get_source_asset_spec(self, table: PipekitSourceTable) -> dg.AssetSpec:
        return self.component.get_source_asset_spec(table)


@dataclass(frozen=True)
class _ModuleOwner:
    place: str  # the instance's defs.yaml (or component.py)
    folder: str  # its module definitions folder
    file: str  # the module's YAML file
    tree: object  # the component tree (one load of the code location) it was built in


# Module name -> the instance that defines it, for every PipekitComponent instance built in this
# process. Module names are the keys of pipekit's repository (locks, run log, watermarks) and the
# names of the assets' graphs: two instances of one code location must not both define one. An
# entry counts only for the component tree that made it (the tree is held, so its id is never
# reused): the same instance building again, or a later load (a reload) in which a module moved
# from one folder to another, is no clash.
_MODULE_OWNERS: dict[str, _ModuleOwner] = {}


def _claim_module_names(context: dg.ComponentLoadContext, defs: dg.Definitions, folder: str) -> None:
    """Record the modules of this instance; raise naming both instances when another instance of
    the same load already defines one of them."""
    tree = context.component_tree
    here = _instance_place(context)
    for name in [n for n, o in _MODULE_OWNERS.items() if o.tree is not tree or o.place == here]:
        del _MODULE_OWNERS[name]  # an older load's, or this instance's previous build's
    mine = {name: _ModuleOwner(here, folder, file, tree) for name, file in _module_files(defs).items()}
    for name, me in mine.items():
        other = _MODULE_OWNERS.get(name)
        if other is not None:
            raise dg.DagsterInvalidDefinitionError(
                f"pipekit module '{name}' is defined by two PipekitComponent instances of this code location: "
                f"{other.place} (in {other.file if other.file != '?' else other.folder}) and {me.place} (in "
                f"{me.file if me.file != '?' else me.folder}). Module names are the keys of pipekit's repository (locks, "
                "run log, watermarks) and name the asset's graph and steps, so they must be unique in a code "
                f"location: rename the module in one of the two folders (e.g. '{name}' -> '<system>_{name}', "
                "with the deps and groups that list it); translation: key_prefix changes only the asset key."
            )
    _MODULE_OWNERS.update(mine)


def _folder(context: dg.ComponentLoadContext) -> Path:
    """The instance's folder: ``context.path`` for a defs.yaml, the folder of a component.py."""
    path = Path(context.path)
    return path.parent if path.suffix == ".py" else path


def _instance_place(context: dg.ComponentLoadContext) -> str:
    """Where an instance is declared: its defs.yaml (or component.py), else its folder."""
    path = Path(context.path)
    for decl in ("defs.yaml", "component.py"):
        if path.is_dir() and (path / decl).exists():
            return str(path / decl)
    return str(path)


def _module_files(defs: dg.Definitions) -> dict[str, str]:
    """Module name -> its YAML file (or "?"), for the module assets of ``defs`` (graph-backed,
    the graph named after the module)."""
    out: dict[str, str] = {}
    for asset in defs.assets or []:
        if isinstance(asset, dg.AssetsDefinition) and isinstance(asset.node_def, dg.GraphDefinition):
            spec = next(iter(asset.specs))
            file = spec.metadata.get(c.DEFINITION_FILE)
            out[asset.node_def.name] = str(getattr(file, "value", file) or "?")
    return out


def _build_definitions():  # noqa: ANN202 - returns pipekit_dagster.definitions.build_definitions
    """``build_definitions``, imported without the noise of its module's own ``defs``.

    Importing :mod:`pipekit_dagster.definitions` builds the classic code location's ``defs`` from
    PIPEKIT_DEFS / ./module_defs; inside a dg project that folder usually does not exist, and its
    warning would be about a code location nobody loads here. It is silenced for that import only.
    """
    with _quiet(logging.getLogger("pipekit_dagster")):
        from pipekit_dagster.definitions import build_definitions
    return build_definitions


@contextlib.contextmanager
def _quiet(log: logging.Logger) -> Iterator[None]:
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _ident(text: str) -> str:
    """``text`` as a Dagster name prefix: lower-case letters, digits and underscores."""
    ident = re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_") or "pipekit"
    return ident if ident[0].isalpha() else "p_" + ident


def make_example_source(path: Path) -> None:
    """The example's source database: a ``greetings`` table with three rows (kept if it exists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    try:
        with con:
            con.execute("CREATE TABLE IF NOT EXISTS greetings (id INTEGER PRIMARY KEY, message TEXT NOT NULL, updated_at TEXT)")
            con.executemany(
                "INSERT OR IGNORE INTO greetings VALUES (?, ?, ?)",
                [(1, "hello", "2024-01-01 00:00:00"), (2, "bonjour", "2024-01-02 00:00:00"), (3, "hallo", "2024-01-03 00:00:00")],
            )
    finally:
        con.close()


DEFS_YAML_TEMPLATE = textwrap.dedent(
    """\
    type: {type}

    attributes:
      # pipekit's module definitions (connections, modules, groups), relative to this folder
      defs: module_defs
      # pipekit's repository: run log, locks (a SQLite file, or a postgresql:// URL)
      database: "{{{{ context.project_root }}}}/pipekit.db"
      # prefix of this instance's jobs, schedules, sensors, checks and resource key
      name: {name}
      # asset attributes per module; templates see module, data and spec
      translation:
        tags:
          pipekit/instance: {name}
      # schedule_status: stopped
      # sensor_status: stopped
    """
)

COMPONENT_PY_TEMPLATE = textwrap.dedent(
    """\
    \"\"\"A pipekit Component instance in Python (`dg scaffold defs ... --format python`): the modules of
    module_defs/ (beside this file) as Dagster assets, with their jobs, schedules, sensors and checks.\"\"\"

    import dagster as dg

    from {module} import {cls}


    @dg.component_instance
    def load(context: dg.ComponentLoadContext) -> {cls}:
        return {cls}(
            # pipekit's module definitions (connections, modules, groups), relative to this folder
            defs="module_defs",
            # pipekit's repository: run log, locks (a SQLite file, or a postgresql:// URL)
            database=str(context.project_root / "pipekit.db"),
            # prefix of this instance's jobs, schedules, sensors, checks, pools and resource key
            name="{name}",
            # asset attributes per module: subclass {cls} and override get_asset_spec(data)
            # (and get_source_asset_spec(table) for the source tables the queries read)
        )
    """
)

EXAMPLE_MODULE_TEMPLATE = textwrap.dedent(
    """\
    # An example pipekit module: the greetings table of a small SQLite "source" database
    # (data/example_source.db, created by `dg scaffold defs`) copied into a SQLite "warehouse"
    # (data/example_dw.db, created by the first run). Replace the connections with your own:
    #   url: jdbc:postgresql://host:5432/db   user: etl   password: $DW_PASSWORD
    connections:
      example_source:
        url: jdbc:sqlite:data/example_source.db
      example_dw:
        url: jdbc:sqlite:data/example_dw.db

    modules:
      - name: {module}
        description: Greetings copied from the example source (incremental by updated_at).
        source: example_source
        dest: example_dw
        dest_table: greetings
        query: |
          SELECT id, message, updated_at FROM greetings WHERE updated_at > '{{since}}'
        strategy: incremental
        merge_key: [id]
        watermarks:
          - name: since
            sql: SELECT max(updated_at) FROM greetings
            default: '1900-01-01 00:00:00'
    """
)
