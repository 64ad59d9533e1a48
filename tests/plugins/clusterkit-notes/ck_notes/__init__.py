"""A tiny third-party plugin, through the documented contracts only: a service kind (``finger``),
a config section (``[notes]``, declared keys) and two panel API routes."""

from clusterkit import hookimpl
from clusterkit.definition.tables import Key, Table
from clusterkit.registry import ServiceKind

NOTES = Table({"greeting": Key(str, default="hello"),
               "max_length": Key(int, default=100, low=1, high=10_000)})


@hookimpl
def clusterkit_register_services(register):
    register(ServiceKind("finger", (79,), check="tcp", description="finger, relayed at L4"))


@hookimpl
def clusterkit_config_sections(register):
    register("notes", lambda values, report: dict(values), shape=NOTES)


@hookimpl
def clusterkit_panel_routes():
    from clusterkit_panel.routes import BODY, USER, PanelError, Route, answer

    def settings(panel) -> dict:
        return panel.runtime.cluster.sections["notes"]

    async def host_note(panel, request):
        """What the definition says of one host, as seen by the host answering."""
        name = request.match_info["name"]
        host = panel.runtime.cluster.hosts.get(name)
        if host is None:
            raise PanelError(404, f"no host named {name!r}")
        return answer({"host": name, "role": host.role, "ip": host.ip, "answered_by": panel.name,
                       "greeting": settings(panel)["greeting"]})

    async def note_add(panel, request):
        text = request[BODY].get("text")
        if not isinstance(text, str) or not text:
            raise PanelError(400, "field 'text' is required")
        if len(text) > settings(panel)["max_length"]:
            raise PanelError(400, f"field 'text' is longer than {settings(panel)['max_length']}")
        return answer({"text": text, "by": request[USER]}, 201)

    return [
        Route("GET", "/api/v1/notes/hosts/{name}", host_note, "operator",
              "A host of the definition (a third-party route)."),
        Route("POST", "/api/v1/notes", note_add, "operator", "Add a note (a third-party route).",
              changes=True, body={"text": {"type": "string"}}),
    ]
