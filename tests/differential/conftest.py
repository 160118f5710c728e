"""Hypothesis profiles and the databases of the differential suite (tests/differential/).

Profiles: ``ci`` (default; bounded, derandomized so CI is stable) and ``long`` (on demand:
``PIPEKIT_DIFF_PROFILE=long`` or ``--hypothesis-profile=long``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, settings

from tests.conftest import PG_ADMIN_URL, _url_for

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                      HealthCheck.function_scoped_fixture])
# ci: no shrink phase, so a failing pair costs seconds, not minutes; its example is printed whole.
settings.register_profile("ci", max_examples=10, derandomize=True, print_blob=True,
                          phases=[Phase.explicit, Phase.reuse, Phase.generate], **_COMMON)
# long: many random examples, shrunk to a minimal reproduction when one fails.
settings.register_profile("long", max_examples=300, print_blob=True, **_COMMON)
settings.load_profile(os.environ.get("PIPEKIT_DIFF_PROFILE", "ci"))

# Session settings that break every assumption a text path can make (issue 10 §2 plus TimeZone).
HOSTILE = {"datestyle": "SQL, DMY", "extra_float_digits": "0", "intervalstyle": "sql_standard",
           "TimeZone": "America/New_York", "bytea_output": "escape"}


@dataclass
class DiffDBs:
    src: str  # PostgreSQL source (hostile defaults)
    dst: str  # PostgreSQL destination (hostile defaults too)
    tmp: Path


def _create(tag: str) -> str:
    name = f"diff_{tag}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
        for k, v in HOSTILE.items():
            c.execute(f"ALTER DATABASE \"{name}\" SET {k} = '{v}'")
    return name


@pytest.fixture(scope="session")
def diff_dbs() -> Iterator[DiffDBs]:
    names = [_create("src"), _create("dst")]
    tmp = Path(tempfile.mkdtemp(prefix="pk_diff_"))
    try:
        yield DiffDBs(_url_for(names[0]), _url_for(names[1]), tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as c:
            for n in names:
                c.execute(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)')
