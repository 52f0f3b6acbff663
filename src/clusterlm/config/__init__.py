"""Typed configuration: pydantic schemas per section, YAML loading, dotted CLI overrides."""

from clusterlm.config.base import (
    Section,
    apply_overrides,
    dump_yaml,
    load_yaml,
    parse_override,
    validate,
)

__all__ = ["Section", "apply_overrides", "dump_yaml", "load_yaml", "parse_override", "validate"]
