"""SQL text for pipekit: dialects (quoting, staging DDL), the merge builder and type mapping.

Nothing in this package executes SQL; transports run what it builds.
"""

from .builders import STRATEGIES, MergeBuilder, MergePlan
from .dialects import ColumnDef, Dialect, TableName, get_dialect, parse_table_name
from .types import TYPE_MAP_DOC, map_type

__all__ = [
    "STRATEGIES",
    "TYPE_MAP_DOC",
    "ColumnDef",
    "Dialect",
    "MergeBuilder",
    "MergePlan",
    "TableName",
    "get_dialect",
    "map_type",
    "parse_table_name",
]
