"""Authoring: look at a source (``pipekit inspect``), write a module from a table or a query
(``pipekit new``) and bring the original pipekit's modules over (``pipekit import-original``).

Nothing here imports dagster; the CLI commands are in :mod:`pipekit_core.cli_authoring`.
"""
