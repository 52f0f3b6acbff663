"""Config plumbing shared by every section: strict pydantic models, YAML, overrides.

A config is plain data: YAML file → dict → dotted overrides applied → validated
into a typed pydantic model. Unknown keys and wrong types raise `ConfigError`
naming the dotted key, so `data.vocab_sise=8192` fails with a hint instead of
being silently ignored.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from clusterlm.errors import ConfigError

T = TypeVar("T", bound=BaseModel)


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, assignments validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


# A YAML alias re-uses an anchored node. Expanded, a few hundred bytes of aliases of
# aliases become a billion nodes ("billion laughs"), which every copy, override and
# validation of the config would then walk. Aliases are allowed while the whole document,
# expanded, stays within this many nodes (a run config has about a hundred, a cluster spec a
# few hundred; parsing this many takes PyYAML about a second); a recursive
# alias is refused. Counted on the parsed node graph, before anything is built from it.
MAX_YAML_NODES = 10_000
# PyYAML's scanner does work proportional to the flow nesting depth (`[[[…`) for every
# token, so depth is capped too; a config nests two or three levels.
MAX_YAML_DEPTH = 64
# A config or cluster spec is a few KB; anything far larger is not one.
MAX_CONFIG_BYTES = 1 << 20


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that stops at MAX_YAML_DEPTH flow levels and MAX_YAML_NODES parsed nodes."""

    def __init__(self, text: str, where: str):
        super().__init__(text)
        self.where = where
        self.nodes = 0

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:  # noqa: N803 - PyYAML's name
        if self.flow_level >= MAX_YAML_DEPTH:
            raise ConfigError(f"{self.where}: YAML nested deeper than {MAX_YAML_DEPTH} levels")
        super().fetch_flow_collection_start(TokenClass)

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.nodes += 1
        if self.nodes > MAX_YAML_NODES:
            raise ConfigError(f"{self.where}: more than {MAX_YAML_NODES:,} YAML values; a config has a few hundred")
        return super().compose_node(parent, index)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing, unreadable, non-UTF-8, oversized or bomb-like file, or a
    non-mapping document, is a ConfigError."""
    p = Path(path)
    if not p.is_file():
        what = "is not a regular file" if p.exists() else "not found"
        raise ConfigError(f"config file {what}: {p}")
    try:
        with p.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {p} is larger than {MAX_CONFIG_BYTES >> 20} MB; a config has a few KB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {p} is not valid UTF-8 (byte {raw[exc.start]:#04x} at offset "
                          f"{exc.start}); save it as UTF-8") from None
    try:
        data = safe_yaml(text, str(p))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"invalid YAML in {p}{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must contain a mapping of config keys, got {type(data).__name__}")
    return data


def safe_yaml(text: str, where: str) -> Any:
    """`yaml.safe_load` with aliases bounded (see MAX_YAML_NODES); ConfigError names `where`."""
    loader = _BoundedLoader(text, where)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:  # block nesting (by indentation) deep enough to exhaust the stack
            raise ConfigError(f"{where}: YAML nested too deeply") from None
        if node is None:
            return None
        _check_expansion(node, where)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node, where: str) -> None:
    """Count the nodes of the document with every alias expanded, without expanding it
    (each shared node is counted once and its size reused)."""
    size: dict[int, int] = {}  # id(node) -> expanded node count of its subtree
    open_nodes: set[int] = set()  # ancestors of the node being expanded
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        children = _children(node)
        if children_done:
            open_nodes.discard(id(node))
            size[id(node)] = 1 + sum(size[id(c)] for c in children)
            if size[id(node)] > MAX_YAML_NODES:
                raise ConfigError(f"{where}: YAML aliases expand to more than {MAX_YAML_NODES:,} values "
                                  "(an alias bomb?); write the values out instead of aliasing them")
            continue
        if id(node) in size:
            continue
        open_nodes.add(id(node))
        stack.append((node, True))
        for child in children:
            if id(child) in open_nodes:
                raise ConfigError(f"{where}: a YAML alias refers to a node that contains it (recursive alias)")
            if id(child) not in size:
                stack.append((child, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse `a.b.c=value`; the value is read as YAML (so `3`, `1e-3`, `true`, `[1,2]` work)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} must look like section.key=value")
    try:
        value = safe_yaml(raw, f"override {key}") if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of `data` with each dotted override set (creating sub-mappings)."""
    out = _deep_copy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: '{'.'.join(parts[: i + 1])}' is not a section")
            node = child
        node[parts[-1]] = value
    return out


def validate(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Validate `data` into `cls`, turning pydantic's report into one actionable line."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(cls, exc, prefix)) from None


def _describe(cls: type[BaseModel], exc: ValidationError, prefix: str) -> str:
    errors = exc.errors()
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ())]
    key = ".".join(([prefix] if prefix else []) + loc) or "(root)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if first["type"] == "extra_forbidden":
        hint = _suggest(cls, [str(p) for p in first["loc"]])
        return f"unknown config key '{key}'{hint}{more}"
    msg = first["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    value = first.get("input")
    shown = "" if isinstance(value, (dict, list)) or value is None else f" (got {value!r})"
    return f"config key '{key}': {msg}{shown}{more}"


def _suggest(cls: type[BaseModel], loc: list[str]) -> str:
    """Did-you-mean for an unknown key, walking the schema along `loc`."""
    model: Any = cls
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return ""
        model = field.annotation
    fields = list(getattr(model, "model_fields", {}))
    close = difflib.get_close_matches(loc[-1], fields, n=1)
    if close:
        return f"; did you mean '{close[0]}'?"
    return f"; valid keys: {', '.join(fields)}" if fields else ""


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def dump_yaml(model: BaseModel) -> str:
    """Serialise a validated config back to YAML (the run dir's resolved `config.yaml`)."""
    return yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False)
