"""The panel's built-in handlers, one module per resource, each with its part of the route table."""
