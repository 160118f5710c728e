"""The Dagster webserver's GraphQL calls the tests make: what the UI's Materialize and Terminate buttons send."""

from __future__ import annotations

from typing import Any

import requests

LAUNCH = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}
"""
STATUS = "query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"
TERMINATE = """
mutation($id: String!) {
  terminateRun(runId: $id) { __typename ... on TerminateRunFailure { message } ... on PythonError { message } }
}
"""


def gql(url: str, query: str, **variables: object) -> dict:
    """POST one query to ``url``/graphql; its ``data`` (asserting no GraphQL errors)."""
    r = requests.post(f"{url}/graphql", json={"query": query, "variables": variables}, timeout=30)
    r.raise_for_status()
    body = r.json()
    assert "errors" not in body, body
    return body["data"]


def launch_run(url: str, selector: dict[str, Any]) -> str:
    """Launch a run of ``selector`` (location, repository, job, optional asset selection); its run id."""
    params = {"selector": selector, "runConfigData": {}, "mode": "default", "executionMetadata": {"tags": []}}
    res = gql(url, LAUNCH, params=params)["launchRun"]
    assert res["__typename"] == "LaunchRunSuccess", res
    return res["run"]["runId"]


def run_status(url: str, run_id: str) -> str:
    return gql(url, STATUS, id=run_id)["runOrError"]["status"]
