"""Label and field selectors: parsing and matching with the apiserver's grammar.

Label selector terms (comma separated, ANDed): ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a)``,
``k``, ``!k``, ``k>3``, ``k<3``. ``!=`` and ``notin`` also match objects without the label.
Field selector terms: ``f=v``, ``f==v``, ``f!=v``; an empty value is allowed (``spec.nodeName=``) and
``\\,`` / ``\\=`` / ``\\\\`` escape separators, as in k8s.io/apimachinery/pkg/fields.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass


class SelectorError(ValueError):
    """A selector string that the apiserver would reject with 400 BadRequest."""


_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_KEY_RE = re.compile(rf"^({_PREFIX}/)?{_NAME}$")
_VALUE_RE = re.compile(rf"^({_NAME})?$")
_SET_RE = re.compile(r"^(?P<key>[^\s!=<>(),]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_CMP_RE = re.compile(r"^(?P<key>[^\s!=<>(),]+)\s*(?P<op>==|=|!=|>|<)\s*(?P<value>[^\s!=<>(),]*)$")
_EXISTS_RE = re.compile(r"^(?P<neg>!)?\s*(?P<key>[^\s!=<>(),]+)$")


@dataclass(frozen=True)
class Requirement:
    """One label requirement; ``op`` is one of = != in notin exists !exists gt lt."""

    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        has = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return has
        if self.op == "!exists":
            return not has
        if self.op in ("=", "in"):
            return has and value in self.values
        if self.op in ("!=", "notin"):
            return not has or value not in self.values
        if not has:
            return False
        try:
            number = int(value or "")
        except ValueError:
            return False
        bound = int(self.values[0])
        return number > bound if self.op == "gt" else number < bound


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _check_key(key: str, term: str) -> None:
    name = key.rsplit("/", 1)[-1]
    if not _KEY_RE.match(key) or len(name) > 63:
        raise SelectorError(f"unable to parse requirement: invalid label key {key!r} in {term!r}")


def _check_value(value: str, term: str) -> None:
    if len(value) > 63 or not _VALUE_RE.match(value):
        raise SelectorError(f"unable to parse requirement: invalid label value {value!r} in {term!r}")


def parse_label_selector(text: str | None) -> tuple[Requirement, ...]:
    """Parse a ``labelSelector`` query value; an empty string selects everything."""
    if not text or not text.strip():
        return ()
    requirements = []
    for raw in _split_top_level(text):
        term = raw.strip()
        if not term:
            raise SelectorError(f"unable to parse requirement: empty term in {text!r}")
        if m := _SET_RE.match(term):
            values = tuple(v.strip() for v in m["values"].split(","))
            if values == ("",):
                raise SelectorError(f"for 'in', 'notin' operators, values set can't be empty: {term!r}")
            _check_key(m["key"], term)
            for v in values:
                _check_value(v, term)
            requirements.append(Requirement(m["key"], m["op"], values))
        elif m := _CMP_RE.match(term):
            op = {"==": "=", ">": "gt", "<": "lt"}.get(m["op"], m["op"])
            _check_key(m["key"], term)
            if op in ("gt", "lt"):
                if not re.fullmatch(r"-?\d+", m["value"]):
                    raise SelectorError(f"unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: {term!r}")
            else:
                _check_value(m["value"], term)
            requirements.append(Requirement(m["key"], op, (m["value"],)))
        elif m := _EXISTS_RE.match(term):
            _check_key(m["key"], term)
            requirements.append(Requirement(m["key"], "!exists" if m["neg"] else "exists"))
        else:
            raise SelectorError(f"unable to parse requirement: {term!r}")
    return tuple(requirements)


def labels_match(requirements: tuple[Requirement, ...], labels: Mapping[str, str] | None) -> bool:
    """True when every requirement holds for ``labels``."""
    labels = labels or {}
    return all(r.matches(labels) for r in requirements)


@dataclass(frozen=True)
class FieldTerm:
    """One field selector term; ``op`` is ``=`` or ``!=``."""

    field: str
    op: str
    value: str


def _split_escaped(text: str, sep: str) -> list[str]:
    """Split on ``sep`` not preceded by a backslash; keeps escapes for the next stage."""
    parts, current, escaped = [], [], False
    for ch in text:
        if escaped:
            current.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if escaped:
        raise SelectorError(f"invalid field selector: trailing backslash in {text!r}")
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def parse_field_selector(text: str | None) -> tuple[FieldTerm, ...]:
    """Parse a ``fieldSelector`` query value; an empty string selects everything."""
    if not text:
        return ()
    terms = []
    for raw in _split_escaped(text, ","):
        if not raw:
            continue
        for op_text, op in (("!=", "!="), ("==", "="), ("=", "=")):
            index = _find_unescaped(raw, op_text)
            if index >= 0:
                field = _unescape(raw[:index]).strip()
                value = _unescape(raw[index + len(op_text):])
                if not field:
                    raise SelectorError(f"invalid field selector term {raw!r}: empty field")
                terms.append(FieldTerm(field, op, value))
                break
        else:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{raw}'")
    return tuple(terms)


def _find_unescaped(text: str, token: str) -> int:
    i = 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text.startswith(token, i):
            return i
        i += 1
    return -1


def fields_match(terms: tuple[FieldTerm, ...], values: Mapping[str, str]) -> bool:
    """True when every term holds; ``values`` maps each selectable field to its string form."""
    for term in terms:
        actual = values.get(term.field, "")
        if (actual == term.value) != (term.op == "="):
            return False
    return True
