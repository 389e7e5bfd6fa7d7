"""The NerdGraph schema the tests validate against, built once per test session."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from graphql import GraphQLSchema, build_schema, parse, validate

SDL = Path(__file__).with_name("schema.graphql")


@lru_cache(maxsize=1)
def nerdgraph_schema() -> GraphQLSchema:
    # assume_valid skips re-checking the whole dump (about a second); documents are still
    # validated against it in full.
    return build_schema(SDL.read_text(encoding="utf-8"), assume_valid=True)


def validation_errors(document: str) -> list[str]:
    return [error.message for error in validate(nerdgraph_schema(), parse(document))]
