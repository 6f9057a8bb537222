"""Each google.api.http mapping rule, over HTTP through the gateway."""

from __future__ import annotations

import pytest

ECHO_CASES = [
    pytest.param(
        "GET", "/v1/echo/abc", {"name": "n", "big": "9007199254740993", "small": "5", "flag": "true",
                                "ratio": "0.5", "color": "COLOR_RED", "at": "2024-05-01T12:00:00Z"},
        None,
        {"id": "abc", "name": "n", "big": "9007199254740993", "small": 5, "flag": True, "ratio": 0.5,
         "color": "COLOR_RED", "at": "2024-05-01T12:00:00Z"},
        id="query-scalars-64bit-enum-timestamp",
    ),
    pytest.param(
        "GET", "/v1/echo/abc", [("tags", "a"), ("tags", "b"), ("numbers", "1"), ("numbers", "2")], None,
        {"tags": ["a", "b"], "numbers": ["1", "2"]}, id="query-repeated",
    ),
    pytest.param(
        "GET", "/v1/echo/abc", {"nested.label": "L", "nested.count": "3"}, None,
        {"nested": {"label": "L", "count": 3}}, id="query-dotted-path",
    ),
    pytest.param(
        "GET", "/v1/echo/abc", {"labels[env]": "prod", "labels[team.name]": "ops", "tags[0]": "not-a-map"}, None,
        {"labels": {"env": "prod", "team.name": "ops"}}, id="query-map-entries",
    ),
    pytest.param("GET", "/v1/echo/abc", {"sortOrder": "2"}, None, {"sortOrder": 2}, id="query-json-name"),
    pytest.param("GET", "/v1/echo/abc", {"sort_order": "3"}, None, {"sortOrder": 3}, id="query-proto-name"),
    pytest.param("GET", "/v1/echo/abc", {"nope": "1", "nested.nope": "2"}, None, {"id": "abc"}, id="query-unknown-ignored"),
    pytest.param("GET", "/v1/echo/abc", {"id": "other"}, None, {"id": "abc"}, id="query-cannot-override-path"),
    pytest.param("GET", "/v1/echo/a%20b%2Fc", None, None, {"id": "a b/c"}, id="path-percent-decoded"),
    pytest.param(
        "POST", "/v1/echo/abc", None,
        {"id": "ignored", "name": "n", "sort_order": 4, "tags": ["x"], "extra": {"k": [1, "v"]}, "unknownField": 1},
        {"id": "abc", "name": "n", "sortOrder": 4, "tags": ["x"], "extra": {"k": [1, "v"]}},
        id="body-star-both-names-unknown-ignored-path-wins",
    ),
    pytest.param(
        "POST", "/v1/echo/abc", {"name": "from-query"}, {"small": 1}, {"small": 1, "name": ""},
        id="body-star-takes-no-query",
    ),
    pytest.param(
        "GET", "/v1/projects/p1/docs/d9:echo", None, None, {"name": "projects/p1/docs/d9"},
        id="multi-segment-variable-and-verb",
    ),
    pytest.param(
        "PUT", "/v1/echo/abc/nested", {"name": "q"}, {"label": "x", "count": 2},
        {"id": "abc", "name": "q", "nested": {"label": "x", "count": 2}}, id="body-field-plus-query",
    ),
    pytest.param(
        "PATCH", "/v1/labels/L1", None, {"nested": {"count": 7}, "name": "p"},
        {"nested": {"label": "L1", "count": 7}, "name": "p"}, id="nested-path-variable-merges-with-body",
    ),
    pytest.param("DELETE", "/v1/echo/abc", None, None, {"id": "abc"}, id="delete"),
    pytest.param("GET", "/v1/files/a/b/c.txt", None, None, {"path": "a/b/c.txt"}, id="double-star"),
]


@pytest.mark.parametrize(("method", "path", "params", "body", "expected"), ECHO_CASES)
async def test_request_mapping(gateway, method, path, params, body, expected):
    reply = await gateway.client.request(method, path, params=params, json=body)
    assert reply.status_code == 200, reply.text
    echoed = reply.json()["request"]
    for field, value in expected.items():
        assert echoed.get(field, _default(value)) == value, (field, echoed)


def _default(value):
    return type(value)() if not isinstance(value, dict) else {}


async def test_unpopulated_fields_are_emitted_in_lower_camel_case(gateway):
    echoed = (await gateway.client.get("/v1/echo/abc")).json()["request"]
    assert {"id": "abc", "name": "", "big": "0", "small": 0, "flag": False, "tags": [],
            "color": "COLOR_UNSPECIFIED", "sortOrder": 0} .items() <= echoed.items()


async def test_response_body_returns_just_that_field(gateway):
    reply = await gateway.client.get("/v1/bare/xyz", params={"name": "n"})
    assert reply.status_code == 200
    assert reply.json()["id"] == "xyz" and reply.json()["name"] == "n"
    assert "request" not in reply.json()


async def test_unannotated_rpcs_are_not_exposed(gateway):
    for path in ("/v1/hidden", "/sagemesh.testing.v1.EchoService/Hidden"):
        assert (await gateway.client.post(path, json={})).status_code == 404
