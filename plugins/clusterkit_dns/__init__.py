"""Authoritative DNS on every host."""
