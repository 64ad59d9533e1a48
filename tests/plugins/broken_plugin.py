"""A plugin that fails to import: clusterkit must report it by name and carry on."""

raise RuntimeError("this plugin is broken on purpose")
