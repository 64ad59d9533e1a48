"""``clusterkit demo``: a whole cluster on loopback, no set-up, exits by itself."""

from clusterkit import hookimpl


@hookimpl
def clusterkit_register_commands(app):
    from clusterkit_demo.command import demo

    app.command("demo")(demo)
