"""pipekit as a Dagster code location: one asset per module, one op per phase.

``pipekit_dagster.definitions.defs`` is the code location; :func:`build_definitions` builds it
with your own translator or alert hook. Nothing here runs SQL at load time: the work happens in
ops that call :mod:`pipekit_core.engine`.
"""

from pipekit_dagster.assets import build_pipekit_assets
from pipekit_dagster.checks import build_module_checks
from pipekit_dagster.definitions import build_definitions
from pipekit_dagster.execution import PipekitFailure
from pipekit_dagster.resources import PipekitResource, PipekitRunOptions
from pipekit_dagster.sensors import ModuleFailure, build_run_failure_sensor
from pipekit_dagster.translator import PipekitModuleData, PipekitTranslator, build_asset_specs

__all__ = [
    "ModuleFailure",
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
