"""pipekit as a Dagster code location: one asset per module, one op per phase.

Two ways in, built on the same code:

- ``pipekit_dagster.definitions.defs``, the classic code location (``dagster dev``,
  ``dagster job execute -m pipekit_dagster.definitions``); :func:`build_definitions` builds it with
  your own translator or alert hook.
- :class:`PipekitComponent`, the Dagster Component for ``dg`` projects (``type:
  pipekit_dagster.PipekitComponent`` in a ``defs.yaml``).

Nothing here runs SQL at load time: the work happens in ops that call :mod:`pipekit_core.engine`.
``build_definitions`` is imported on first use: importing :mod:`pipekit_dagster.definitions` builds
its module-level ``defs`` from the environment, which ``dg`` (listing this package's components)
does not need.
"""

from typing import TYPE_CHECKING, Any

from pipekit_dagster.assets import build_pipekit_assets
from pipekit_dagster.checks import build_module_checks
from pipekit_dagster.component import PipekitComponent, PipekitComponentScaffolder
from pipekit_dagster.execution import PipekitFailure
from pipekit_dagster.resources import PipekitResource, PipekitRunOptions
from pipekit_dagster.sensors import ModuleFailure, build_run_failure_sensor
from pipekit_dagster.translator import PipekitModuleData, PipekitTranslator, build_asset_specs

if TYPE_CHECKING:
    from pipekit_dagster.definitions import build_definitions


def __getattr__(name: str) -> Any:
    if name == "build_definitions":
        from pipekit_dagster.component import _build_definitions

        return _build_definitions()
    raise AttributeError(f"module 'pipekit_dagster' has no attribute {name!r}")


__all__ = [
    "ModuleFailure",
    "PipekitComponent",
    "PipekitComponentScaffolder",
    "PipekitFailure",
    "PipekitModuleData",
    "PipekitResource",
    "PipekitRunOptions",
    "PipekitTranslator",
    "build_asset_specs",
    "build_definitions",
    "build_module_checks",
    "build_pipekit_assets",
    "build_run_failure_sensor",
]
