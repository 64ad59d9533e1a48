"""A tiny third-party plugin: two panel API routes, through the documented hook only."""

from clusterkit import hookimpl


@hookimpl
def clusterkit_panel_routes():
    from clusterkit_panel.routes import BODY, USER, PanelError, Route, answer

    async def host_note(panel, request):
        """What the definition says of one host, as seen by the host answering."""
        name = request.match_info["name"]
        host = panel.runtime.cluster.hosts.get(name)
        if host is None:
            raise PanelError(404, f"no host named {name!r}")
        return answer({"host": name, "role": host.role, "ip": host.ip, "answered_by": panel.name})

    async def note_add(panel, request):
        text = request[BODY].get("text")
        if not isinstance(text, str) or not text:
            raise PanelError(400, "field 'text' is required")
        return answer({"text": text, "by": request[USER]}, 201)

    return [
        Route("GET", "/api/v1/notes/hosts/{name}", host_note, "operator",
              "A host of the definition (a third-party route)."),
        Route("POST", "/api/v1/notes", note_add, "operator", "Add a note (a third-party route).",
              changes=True, body={"text": {"type": "string"}}),
    ]
