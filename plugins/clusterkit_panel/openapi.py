"""The OpenAPI 3.1 description, generated from the route table (never out of step with it)."""

from __future__ import annotations

import re

from clusterkit import __version__

SECURITY = {
    "public": [],
    "operator": [{"session": [], "csrf": []}, {"apiToken": []}],
    "metrics": [{"apiToken": []}, {"session": []}],
    "host": [{"clusterCertificate": []}],
}
ERRORS = {"400": "bad request (the body names the problem)",
          "401": "not logged in", "403": "refused (the body says why)", "404": "no such object",
          "409": "conflict with the definition", "429": "too many failed attempts"}


def spec(routes, panel) -> dict:
    paths: dict = {}
    for route in routes:
        params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                  for name in re.findall(r"{(\w+)}", route.path)]
        op = {"operationId": route.operation,
              "summary": route.summary, "security": SECURITY[route.auth],
              "responses": {"200": {"description": "success"},
                            **{code: {"description": text,
                                      "content": {"application/json": {"schema": {
                                          "$ref": "#/components/schemas/Error"}}}}
                               for code, text in ERRORS.items()}}}
        if params:
            op["parameters"] = params
        if route.body:
            op["requestBody"] = {"content": {"application/json": {"schema": {
                "type": "object", "properties": route.body}}}}
        notes = []
        if route.changes:
            notes.append("Changes the cluster definition: manager only (403 on a node).")
        if route.where != "any":
            notes.append(f"Served by the {route.where} only.")
        if route.auth == "operator":
            notes.append("With a session, state-changing calls need the X-CSRF-Token header.")
        if notes:
            op["description"] = " ".join(notes)
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "clusterkit panel", "version": __version__,
                 "description": f"The panel and control API of host {panel.name} "
                                f"({panel.runtime.host.role}) of cluster {panel.runtime.cluster.name}."},
        "servers": [{"url": panel.url_of(panel.runtime.host)}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "ck_session"},
                "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token"},
                "apiToken": {"type": "http", "scheme": "bearer",
                             "description": "clusterkit panel token create NAME"},
                "clusterCertificate": {"type": "mutualTLS",
                                       "description": "a current certificate of the cluster CA"},
            },
            "schemas": {"Error": {"type": "object", "properties": {
                "error": {"type": "string"}, "problems": {"type": "array",
                                                          "items": {"type": "string"}}}}},
        },
    }
