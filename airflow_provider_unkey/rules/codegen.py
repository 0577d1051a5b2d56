"""The fast checks behind :mod:`.check`, generated from the field table (:mod:`.fields`).

At import, straight-line Python is generated and compiled for the key object (both layers, and the
server's rules alone) and for each field under it (:func:`.check.value_ok`). A compiled check returns
``True`` only when the full walks of :mod:`.check` would find nothing, and ``False`` for anything
unusual, which those walks then explain. This module never imports :mod:`.check` (which imports the
compiled checks from here), so the two form no import circle.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from airflow_provider_unkey.rules.fields import INT64_MAX, KEY, Node


def _python_pattern(pattern: str) -> re.Pattern[str]:
    # ECMA-262's ``$`` (no multiline flag) is the very end; Python's also matches before a final
    # newline, so anchor with ``\Z``. ``match`` anchors the start.
    return re.compile(pattern.removeprefix("^").removesuffix("$") + r"\Z")


# --- fast paths ------------------------------------------------------------------------------------
# Exact types from a JSON decoder (dict, list, str, int, bool): anything else falls through to the
# full walks. A fast check is generated from the table as straight-line Python (as the fastest JSON
# Schema validators do): one function per node, no call per member, so the emulator can check every
# key it receives. The differential test against the spec runs through these.
Check = Callable[[Any], bool]


class _Source:
    """The lines of a generated check, and the constants they refer to."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {}

    def const(self, value: Any) -> str:
        name = f"C{len(self.constants)}"
        self.constants[name] = value
        return name

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)


def _server_rules(node: Node) -> bool:
    """Whether the server has a rule of its own anywhere at or under ``node``."""
    f = node.field
    own = f.type == "integer" or f.max_stored_length or f.unique_items or f.required_when or f.null_status
    below = [*node.members.values(), *([node.items] if node.items is not None else [])]
    return bool(own) or any(_server_rules(n) for n in below)


def _gen_members(
    src: _Source,
    node: Node,
    var: str,
    indent: int,
    depth: int,
    gen: Callable[[_Source, Node, str, int, int], None],
    only: Callable[[Node], bool] = lambda member: True,
) -> None:
    """Lines checking each member of the object in ``var`` with ``gen``: a null the server refuses,
    and a member another one's value requires (a monthly refill's day)."""
    for name, member in node.members.items():
        if not only(member):
            continue
        value = f"v{depth + 1}"
        src.emit(indent, f"{value} = {var}.get({name!r}, MISSING)")
        src.emit(indent, f"if {value} is not MISSING:")
        if member.field.null_status is not None:
            src.emit(indent + 1, f"if {value} is None: return False")
        gen(src, member, value, indent + 1, depth + 1)
        if member.field.required_when is not None:
            other, said = member.field.required_when
            src.emit(indent, f"elif {var}.get({other!r}) == {said!r}: return False")


def _gen_server(src: _Source, node: Node, var: str, indent: int, depth: int) -> None:
    """Lines that ``return False`` unless the server accepts the schema-valid value in ``var``."""
    f = node.field
    fail = "return False"
    if f.type == "integer":
        # Go's int64: no fraction (1.0 is a float), nothing above 2**63 - 1.
        src.emit(indent, f"if {var} is not None and (type({var}) is not int or {var} > {INT64_MAX}): {fail}")
    elif f.type == "string" and f.max_stored_length is not None:
        src.emit(indent, f"if len({var}) > {f.max_stored_length}: {fail}")
    elif f.type == "array":
        if node.items is not None and _server_rules(node.items):
            item = f"v{depth + 1}"
            src.emit(indent, f"for {item} in {var}:")
            _gen_server(src, node.items, item, indent + 1, depth + 1)
        if f.unique_items is not None:
            src.emit(indent, f"if len(set({var})) != len({var}): {fail}")
    elif f.type == "object":
        _gen_members(src, node, var, indent, depth, _gen_server, only=_server_rules)


def _gen(src: _Source, node: Node, var: str, indent: int, depth: int) -> None:
    """Lines that ``return False`` unless the value in ``var`` passes both layers at ``node``."""
    f = node.field
    fail = "return False"
    if f.nullable and f.null_status is None:
        src.emit(indent, f"if {var} is not None:")
        indent += 1
    if f.type == "string":
        if f.enum:
            src.emit(
                indent, f"if type({var}) is not str or {var} not in {src.const(frozenset(f.enum))}: {fail}"
            )
            return
        low = f.min_length or 0
        highs = [x for x in (f.max_length, f.max_stored_length) if x is not None]
        bound = f"not {low} <= len({var}) <= {min(highs)}" if highs else f"len({var}) < {low}"
        src.emit(indent, f"if type({var}) is not str or {bound}: {fail}")
        if f.pattern is not None:
            match = src.const(_python_pattern(f.pattern).match)
            src.emit(indent, f"if {match}({var}) is None: {fail}")
    elif f.type == "integer":
        low = f.minimum if f.minimum is not None else -(2**63)
        high = min(f.maximum if f.maximum is not None else INT64_MAX, INT64_MAX)
        src.emit(indent, f"if type({var}) is not int or not {low} <= {var} <= {high}: {fail}")
    elif f.type == "boolean":
        src.emit(indent, f"if type({var}) is not bool: {fail}")
    elif f.type == "array":
        low = f.min_items or 0
        high = f.max_items if f.max_items is not None else 2**63
        src.emit(indent, f"if type({var}) is not list or not {low} <= len({var}) <= {high}: {fail}")
        if node.items is not None:
            item = f"v{depth + 1}"
            src.emit(indent, f"for {item} in {var}:")
            _gen(src, node.items, item, indent + 1, depth + 1)
        if f.unique_items is not None:
            src.emit(indent, f"if len(set({var})) != len({var}): {fail}")
    else:  # an object
        src.emit(indent, f"if type({var}) is not dict: {fail}")
        if f.max_properties is not None:
            src.emit(indent, f"if len({var}) > {f.max_properties}: {fail}")
        if f.closed:
            src.emit(indent, f"if not {var}.keys() <= {src.const(frozenset(node.members))}: {fail}")
        if node.required:
            src.emit(indent, f"if not {src.const(frozenset(node.required))} <= {var}.keys(): {fail}")
        _gen_members(src, node, var, indent, depth, _gen)


def _compile(node: Node, name: str = "check", *, server_only: bool = False) -> Check:
    src = _Source()
    src.emit(0, f"def {name}(v0):")
    if node.field.null_status is not None:
        src.emit(1, "if v0 is None: return False")
    (_gen_server if server_only else _gen)(src, node, "v0", 1, 0)
    src.emit(1, "return True")
    namespace: dict[str, Any] = {"MISSING": _MISSING, **src.constants}
    exec("\n".join(src.lines), namespace)
    check: Check = namespace[name]
    return check


_MISSING = object()
_KEY_OK = _compile(KEY, "key_ok")
_KEY_SERVER_OK = _compile(KEY, "key_server_ok", server_only=True)


_NODES: dict[str, Node] = {}


def _index(node: Node, path: str) -> None:
    _NODES[path] = node
    for name, member in node.members.items():
        _index(member, f"{path}.{name}" if path else name)
    if node.items is not None:
        _index(node.items, f"{path}[]")


_index(KEY, "")
_VALUE_OK: dict[str, Check] = {path: _compile(node) for path, node in _NODES.items() if path}
