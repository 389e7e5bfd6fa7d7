"""Test helpers: the NerdGraph schema (SDL) and an in-memory fake NerdGraph server."""
