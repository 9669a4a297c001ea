"""The served OpenAPI 3.1 document matches the route table exactly."""

import re
import uuid

import pytest
import requests

from conftest import run_corrald

METHODS = {"get", "put", "post", "delete", "patch", "options", "head",
           "trace"}


@pytest.fixture(scope="module")
def printed_routes():
    p = run_corrald(["--print-routes"])
    assert p.returncode == 0, p.stderr
    lines = [line for line in p.stdout.splitlines() if line.strip()]
    assert lines, "--print-routes printed nothing"
    for line in lines:
        assert re.fullmatch(r"(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) "
                            r"/[A-Za-z0-9_./{}-]*", line), line
    assert len(lines) == len(set(lines)), "duplicate routes"
    return {tuple(line.split(" ", 1)) for line in lines}


@pytest.fixture(scope="module")
def document(_session_server):
    r = requests.get(_session_server.api_url("/openapi.json"), timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    return r.json()


def doc_routes(doc):
    prefix = ""
    servers = doc.get("servers") or []
    if servers:
        url = servers[0].get("url", "")
        m = re.match(r"^(?:https?://[^/]+)?(/.*)?$", url)
        prefix = (m.group(1) or "").rstrip("/") if m else ""
    pairs = set()
    for path, item in doc["paths"].items():
        for method in item:
            if method in METHODS:
                pairs.add((method.upper(), prefix + path))
    return pairs


def test_document_is_openapi_31(document):
    assert document["openapi"].startswith("3.1"), document.get("openapi")
    assert document["info"]["title"] and document["info"]["version"]
    assert isinstance(document["paths"], dict) and document["paths"]
    for path, item in document["paths"].items():
        assert path.startswith("/"), path
        for method, op in item.items():
            if method in METHODS:
                assert op.get("responses"), f"{method} {path}: no responses"


def test_document_matches_print_routes(document, printed_routes):
    served = doc_routes(document)
    missing = printed_routes - served
    extra = served - printed_routes
    assert not missing and not extra, \
        f"in the route table only: {sorted(missing)}; " \
        f"in openapi.json only: {sorted(extra)}"


def test_auth_routes_are_listed(printed_routes):
    expected = {("POST", "/api/v1/auth/register"),
                ("POST", "/api/v1/auth/login"),
                ("POST", "/api/v1/auth/refresh"),
                ("POST", "/api/v1/auth/logout"),
                ("POST", "/api/v1/auth/password"),
                ("GET", "/api/v1/auth/me"),
                ("POST", "/api/v1/auth/api-keys"),
                ("GET", "/api/v1/auth/api-keys"),
                ("DELETE", "/api/v1/auth/api-keys/{id}"),
                ("GET", "/api/v1/openapi.json")}
    assert expected <= printed_routes, expected - printed_routes


def test_refs_resolve(document):
    def resolve(ref):
        assert ref.startswith("#/"), f"external $ref {ref}"
        node = document
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            assert isinstance(node, dict) and part in node, \
                f"unresolved $ref {ref}"
            node = node[part]

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "$ref" and isinstance(v, str):
                    resolve(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(document)


def test_every_printed_route_is_served(server, printed_routes):
    """Each route answers something other than the router's 404/405 when
    called without credentials or body."""
    for method, path in sorted(printed_routes):
        concrete = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)
        r = requests.request(method, server.url(concrete), timeout=10)
        assert r.status_code != 405, f"{method} {path}: 405"
        if "{" not in path:
            assert r.status_code != 404, f"{method} {path}: 404"
