"""The OpenAPI document tells the truth, and the documentation page works offline (issue 7.7)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any

import jsonschema_rs
import pytest

from pfcon.adapters.compute.fake import FakeCompute
from pfcon.entrypoints.http.app import STATUS_BY_ERROR

from ..conftest import API, Api, job_form, make_zip

HEALTH, READY, AUTH = f"{API}/health", f"{API}/ready", f"{API}/auth-token"
JOBS, JOB, FILE = f"{API}/jobs", f"{API}/jobs/{{jid}}", f"{API}/jobs/{{jid}}/file"

# Every operation with every status it answers (besides 405 for other methods, which
# the router answers for any path).
STATUSES = {
    (HEALTH, "get"): {200, 500},
    (READY, "get"): {200, 500, 503},
    (AUTH, "post"): {200, 400, 413, 415, 500},
    (JOBS, "get"): {200, 401, 500},
    (JOBS, "post"): {201, 400, 401, 409, 413, 500, 503, 507},
    (JOB, "get"): {200, 401, 404, 500, 503},
    (JOB, "delete"): {204, 401, 404, 500, 503},
    (FILE, "get"): {200, 400, 401, 404, 500, 503},
}
# pfcon 6: /pluginjobs/, /copyjobs/, /uploadjobs/, /deletejobs/ and their items; the plugin's file route.
V6_LISTS = {kind: f"{API}/{kind}jobs" for kind in ("plugin", "copy", "upload", "delete")}
PFILE = f"{API}/pluginjobs/{{jid}}/file"
for _kind, _path in V6_LISTS.items():
    STATUSES[(_path, "get")] = {200, 401, 500}
    STATUSES[(_path, "post")] = {201, 400, 401, 409, 413, 500, 503, 507} | ({404} if _kind == "upload" else set())
    STATUSES[(_path + "/{jid}", "get")] = {200, 401, 404, 500, 503}
    STATUSES[(_path + "/{jid}", "delete")] = {204, 401, 500, 503}
STATUSES[(PFILE, "get")] = {200, 400, 401, 404, 500, 503}
# The operator's routes (issue 12: not pfcon's), behind the same token.
ADMIN_JOBS, CANCEL = f"{API}/admin/jobs", f"{API}/admin/jobs/{{jid}}/cancel"
STATUSES[(ADMIN_JOBS, "get")] = {200, 401, 500, 503}
STATUSES[(CANCEL, "post")] = {200, 401, 404, 500, 503}
JOB_ROUTES = (JOBS, *V6_LISTS.values(), f"{API}/admin/")
SUCCESS_SCHEMAS = {
    (HEALTH, "get"): "HealthBody",
    (READY, "get"): "ReadinessBody",
    (AUTH, "post"): "TokenBody",
    (JOBS, "get"): "ServerInfoBody",
    (JOBS, "post"): "SubmitBody",
    (JOB, "get"): "StatusBody",
    (FILE, "get"): "OutputListingBody",
    (PFILE, "get"): "OutputListingBody",
    **{(path, "get"): "ServerInfoV6Body" for path in V6_LISTS.values()},
    **{(path + "/{jid}", "get"): "OpJobBody" for path in V6_LISTS.values()},
    **{(path, "post"): "OpJobBody" for kind, path in V6_LISTS.items() if kind != "plugin"},
    (V6_LISTS["plugin"], "post"): "PluginJobBody",
    (ADMIN_JOBS, "get"): "JobListBody",
    (CANCEL, "post"): "StatusBody",
}
JOB_FIELDS = {
    "jid", "entrypoint", "args", "args_path_flags", "auid", "number_of_workers", "cpu_limit",
    "memory_limit", "gpu_limit", "image", "type", "env",
}


def document(api: Api) -> dict[str, Any]:
    r = api.client.get(f"{API}/schema/openapi.json")
    assert r.status_code == 200
    return dict(r.json())


@pytest.fixture
def doc(api: Api) -> dict[str, Any]:
    return document(api)


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


# -- the document ----------------------------------------------------------------------------


def test_every_operation_is_documented_and_nothing_else(doc: dict[str, Any]) -> None:
    operations = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert operations == set(STATUSES)
    assert doc["openapi"].startswith("3.1")


def test_bearer_security_scheme_is_applied_to_the_jobs_routes_only(doc: dict[str, Any]) -> None:
    assert doc["components"]["securitySchemes"] == {
        "BearerToken": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "A token from POST /api/v1/auth-token/.",
        }
    }
    assert "security" not in doc  # no global requirement
    for (path, method) in STATUSES:
        security = doc["paths"][path][method].get("security")
        if path.startswith(JOB_ROUTES):
            assert security == [{"BearerToken": []}], (path, method)
        else:
            assert security is None, (path, method)


@pytest.mark.parametrize(("path", "method"), list(STATUSES))
def test_each_operation_lists_its_statuses_with_the_error_body(doc: dict[str, Any], path: str, method: str) -> None:
    responses = doc["paths"][path][method]["responses"]
    assert {int(code) for code in responses} == STATUSES[(path, method)]
    for code, response in responses.items():
        assert response["description"]
        if int(code) >= 400 and (path, code) != (READY, "503"):
            assert response["content"] == {"application/json": {"schema": ref("ErrorBody")}}, (path, method, code)


def test_error_body_is_a_message_string_or_field_object(doc: dict[str, Any]) -> None:
    schema = doc["components"]["schemas"]["ErrorBody"]
    assert schema["required"] == ["message"]
    assert schema["properties"]["message"] == {
        "oneOf": [{"type": "string"}, {"type": "object", "additionalProperties": {"type": "string"}}]
    }


def test_every_status_the_app_maps_errors_to_is_documented(doc: dict[str, Any]) -> None:
    documented = {int(c) for item in doc["paths"].values() for op in item.values() for c in op["responses"]}
    assert {code for _, code in STATUS_BY_ERROR} <= documented
    assert "status_code" not in str(doc)  # Litestar's own error body is never sent, never documented


@pytest.mark.parametrize(("path", "method"), list(SUCCESS_SCHEMAS))
def test_success_responses_are_typed(doc: dict[str, Any], path: str, method: str) -> None:
    responses = doc["paths"][path][method]["responses"]
    created = method == "post" and path.startswith(JOB_ROUTES) and path != CANCEL
    ok = responses["201" if created else "200"]
    assert ok["content"]["application/json"]["schema"] == ref(SUCCESS_SCHEMAS[(path, method)])
    assert doc["paths"][JOB]["delete"]["responses"]["204"].get("content") is None


def test_job_output_may_be_a_zip_or_a_listing(doc: dict[str, Any]) -> None:
    op = doc["paths"][FILE]["get"]
    ok = op["responses"]["200"]
    assert set(ok["content"]) == {"application/json", "application/zip"}
    assert ok["content"]["application/zip"]["schema"]["format"] == "binary"
    assert set(ok["headers"]) == {"content-disposition", "cache-control"}
    params = {p["name"]: p for p in op["parameters"]}
    assert params["jid"]["in"] == "path"
    assert params["job_output_path"]["in"] == "query" and params["job_output_path"]["required"] is False


def test_component_schemas_list_every_field(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    assert set(schemas["JobCompute"]["properties"]) == {"jid", "image", "cmd", "status", "message", "timestamp", "logs"}
    assert schemas["JobCompute"]["properties"]["status"]["enum"] == [
        "notstarted", "started", "finishedSuccessfully", "finishedWithError", "undefined"
    ]
    assert set(schemas["JobData"]["properties"]) == {"jid", "nfiles", "timestamp", "path"}
    assert set(schemas["SubmitBody"]["required"]) == {"data", "compute"}
    assert set(schemas["ReadinessBody"]["required"]) == {"ready", "backends"}  # message only when not ready
    assert set(schemas["ServerInfoBody"]["required"]) == {
        "server_version", "pfcon_innetwork", "storage_env", "container_env", "compute_volume_type"
    }


def test_auth_token_takes_json_credentials(doc: dict[str, Any]) -> None:
    body = doc["paths"][AUTH]["post"]["requestBody"]
    assert body["required"] is True
    schema = body["content"]["application/json"]["schema"]
    assert set(schema["required"]) == {"pfcon_user", "pfcon_password"}


def test_submit_takes_multipart_with_a_zip_or_urlencoded_forms_in_zipfile_mode(doc: dict[str, Any]) -> None:
    body = doc["paths"][JOBS]["post"]["requestBody"]
    assert body["required"] is True
    assert set(body["content"]) == {"multipart/form-data", "application/x-www-form-urlencoded"}
    multipart = body["content"]["multipart/form-data"]["schema"]
    urlencoded = body["content"]["application/x-www-form-urlencoded"]["schema"]
    assert set(multipart["properties"]) == JOB_FIELDS | {"data_file"}
    assert set(urlencoded["properties"]) == JOB_FIELDS
    data_file = multipart["properties"]["data_file"]
    assert data_file["type"] == "string" and data_file["format"] == "binary"
    assert data_file["contentMediaType"] == "application/zip"
    assert "data_file" in multipart["required"]
    for schema in (multipart, urlencoded):
        props = schema["properties"]
        assert props["entrypoint"]["type"] == "array" and props["entrypoint"]["items"] == {"type": "string"}
        assert props["type"]["enum"] == ["ds", "fs", "ts"]
        assert all(props[f]["type"] == "integer" for f in ("number_of_workers", "cpu_limit", "memory_limit", "gpu_limit"))
        assert {"jid", "entrypoint", "auid", "image", "type", "cpu_limit"} <= set(schema["required"])
        assert not {"args", "args_path_flags", "env"} & set(schema["required"])


@pytest.mark.parametrize("storage", ["filesystem", "fslink"])
def test_submit_names_the_input_and_output_dirs_in_network(app_factory: Callable[..., Api], storage: str) -> None:
    doc = document(app_factory(PFCON_INNETWORK="true", STORAGE_ENV=storage))
    for schema in (c["schema"] for c in doc["paths"][JOBS]["post"]["requestBody"]["content"].values()):
        assert set(schema["properties"]) == JOB_FIELDS | {"input_dirs", "output_dir"}
        assert {"input_dirs", "output_dir"} <= set(schema["required"])
        assert schema["properties"]["input_dirs"]["type"] == "array"


def test_documented_field_bounds_are_the_enforced_ones(api: Api, doc: dict[str, Any]) -> None:
    props = doc["paths"][JOBS]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    for field in ("cpu_limit", "memory_limit", "gpu_limit"):
        low, high = props[field]["minimum"], props[field]["maximum"]
        assert api.submit(f"chris-low-{field[:3]}", **{field: str(low - 1)}).status_code == 400
        assert api.submit(f"chris-high-{field[:3]}", **{field: str(high + 1)}).status_code == 400
    assert re.search(props["env"]["items"]["pattern"], "A=b")
    assert not re.search(props["env"]["items"]["pattern"], "=b")


# -- real responses match the document -------------------------------------------------------


def conforms(doc: dict[str, Any], path: str, method: str, response: Any) -> None:
    """The status is documented for the operation and the body validates against its schema."""
    responses = doc["paths"][path][method]["responses"]
    assert str(response.status_code) in responses, (path, method, response.status_code, response.text)
    content = responses[str(response.status_code)].get("content")
    if content is None:
        assert response.content == b""
        return
    media_type = response.headers["content-type"].split(";")[0]
    assert media_type in content, (path, method, media_type)
    if media_type != "application/json":
        return
    schema = {**content[media_type]["schema"], "components": doc["components"]}
    jsonschema_rs.validator_for(schema).validate(response.json())


def test_real_responses_conform(app_factory: Callable[..., Api]) -> None:
    compute = FakeCompute()
    api = app_factory(compute)
    doc = document(api)
    no_auth = {"Authorization": ""}

    conforms(doc, HEALTH, "get", api.client.get(f"{API}/health/"))
    conforms(doc, READY, "get", api.client.get(f"{API}/ready/"))
    creds = {"pfcon_user": "pfcon", "pfcon_password": "pfcon1234"}
    conforms(doc, AUTH, "post", api.client.post(f"{API}/auth-token/", json=creds))
    conforms(doc, AUTH, "post", api.client.post(f"{API}/auth-token/", json={**creds, "pfcon_password": "x"}))
    conforms(doc, AUTH, "post", api.client.post(f"{API}/auth-token/", json={"pfcon_user": "pfcon"}))
    conforms(doc, AUTH, "post", api.client.post(f"{API}/auth-token/", data=creds))
    r = api.client.post(f"{API}/auth-token/", content=b"{" + b" " * (2 * 1024 * 1024) + b"}",
                        headers={"content-type": "application/json"})
    assert r.status_code == 413
    conforms(doc, AUTH, "post", r)

    conforms(doc, JOBS, "get", api.get("/jobs/"))
    conforms(doc, JOBS, "get", api.get("/jobs/", headers=no_auth))
    r = api.submit("chris-jid-1")
    assert r.status_code == 201
    conforms(doc, JOBS, "post", r)
    conforms(doc, JOBS, "post", api.submit("chris-jid-1"))  # 409
    r = api.post("/jobs/", data={})
    assert r.status_code == 400 and isinstance(r.json()["message"], dict)
    conforms(doc, JOBS, "post", r)
    conforms(doc, JOBS, "post", api.submit("chris-jid-2", zip_bytes=b"not a zip"))
    conforms(doc, JOBS, "post", api.post("/jobs/", headers=no_auth, data=job_form("chris-jid-2")))

    conforms(doc, JOB, "get", api.get("/jobs/chris-jid-1/"))
    conforms(doc, JOB, "get", api.get("/jobs/chris-jid-9/"))
    conforms(doc, FILE, "get", api.get("/jobs/chris-jid-1/file/"))
    conforms(doc, FILE, "get", api.get("/jobs/chris-jid-9/file/"))

    compute.down = "Docker engine unavailable: cannot connect to the engine"
    r = api.client.get(f"{API}/ready/")
    assert r.status_code == 503 and r.json()["message"].startswith("not ready")
    conforms(doc, READY, "get", r)
    conforms(doc, JOB, "get", api.get("/jobs/chris-jid-1/"))
    conforms(doc, JOBS, "post", api.submit("chris-jid-3"))
    conforms(doc, JOB, "delete", api.delete("/jobs/chris-jid-1/"))
    compute.down = None

    conforms(doc, ADMIN_JOBS, "get", api.get("/admin/jobs/"))
    conforms(doc, ADMIN_JOBS, "get", api.get("/admin/jobs/", headers=no_auth))
    conforms(doc, CANCEL, "post", api.post("/admin/jobs/chris-jid-1/cancel/"))
    conforms(doc, CANCEL, "post", api.post("/admin/jobs/chris-jid-9/cancel/"))  # 404
    compute.down = "Docker engine unavailable: cannot connect to the engine"
    conforms(doc, ADMIN_JOBS, "get", api.get("/admin/jobs/"))
    conforms(doc, CANCEL, "post", api.post("/admin/jobs/chris-jid-1/cancel/"))
    compute.down = None
    conforms(doc, JOB, "delete", api.delete("/jobs/chris-jid-1/"))
    conforms(doc, JOB, "delete", api.delete("/jobs/chris-jid-1/"))  # 404


def test_limits_answer_as_documented(app_factory: Callable[..., Api]) -> None:
    api = app_factory(ZIP_MAX_UPLOAD_BYTES="100")
    doc = document(api)
    r = api.submit("chris-jid-1", zip_bytes=make_zip({"a.txt": "x" * 1000}))
    assert r.status_code == 413
    conforms(doc, JOBS, "post", r)
    full = app_factory(STOREBASE_RESERVE_BYTES=str(2**62))
    r = full.submit("chris-jid-1")
    assert r.status_code == 507
    conforms(doc, JOBS, "post", r)


def test_in_network_listing_conforms(app_factory: Callable[..., Api]) -> None:
    api = app_factory(PFCON_INNETWORK="true", STORAGE_ENV="filesystem")
    doc = document(api)
    os.makedirs(os.path.join(api.storebase, "home/in"))
    os.makedirs(os.path.join(api.storebase, "home/out"))
    form = job_form("chris-jid-1", input_dirs=["home/in"], output_dir="home/out")
    r = api.post("/jobs/", data=form)
    assert r.status_code == 201, r.text
    conforms(doc, JOBS, "post", r)
    r = api.get("/jobs/chris-jid-1/file/", params={"job_output_path": "home/out"})
    assert r.headers["content-type"].startswith("application/json")
    conforms(doc, FILE, "get", r)
    conforms(doc, FILE, "get", api.get("/jobs/chris-jid-1/file/"))  # 400: job_output_path is required


# -- methods ------------------------------------------------------------------------------------


def test_other_methods_are_405_with_allow(api: Api) -> None:
    for method, path, allowed in [
        ("PUT", "/jobs/", {"GET", "POST", "OPTIONS"}),
        ("PATCH", "/jobs/chris-jid-1/", {"GET", "DELETE", "OPTIONS"}),
        ("POST", "/jobs/chris-jid-1/file/", {"GET", "OPTIONS"}),
        ("POST", "/health/", {"GET", "OPTIONS"}),
        ("GET", "/auth-token/", {"POST", "OPTIONS"}),
        ("DELETE", "/schema/openapi.json", {"GET", "OPTIONS"}),
    ]:
        r = api.client.request(method, API + path, headers=api.headers)
        assert r.status_code == 405, (method, path)
        assert r.json() == {"message": "The method is not allowed for the requested URL."}
        assert {m.strip() for m in r.headers["allow"].split(",")} == allowed, (method, path)


def test_options_lists_exactly_the_documented_methods(api: Api, doc: dict[str, Any]) -> None:
    for path, item in doc["paths"].items():
        url = path.replace("{jid}", "chris-jid-1")
        r = api.client.options(url, headers=api.headers)
        assert r.status_code == 204, path
        assert {m.strip().lower() for m in r.headers["allow"].split(",")} == set(item) | {"options"}, path


# -- the documentation page, offline ----------------------------------------------------------


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script" and attributes.get("src"):
            self.urls.append(str(attributes["src"]))
        if tag == "link" and attributes.get("href"):
            self.urls.append(str(attributes["href"]))


@pytest.mark.parametrize("page", ["/schema", "/schema/", "/schema/swagger"])
def test_docs_page_loads_its_assets_from_this_server(api: Api, page: str) -> None:
    r = api.client.get(API + page)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "SwaggerUIBundle" in r.text
    parser = _Assets()
    parser.feed(r.text)
    assert len(parser.urls) >= 4  # icon, stylesheet, bundle, preset
    for url in parser.urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = api.client.get(url)
        assert asset.status_code == 200, url
        assert asset.content
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", r.text)


def test_schema_documents_stay_reachable(api: Api) -> None:
    assert api.client.get(f"{API}/schema/openapi.json").json()["info"]["title"] == "pfcon"
    r = api.client.get(f"{API}/schema/openapi.yaml")
    assert r.status_code == 200 and "openapi: 3.1" in r.text
