"""google.api.http path templates (the grammar in google/api/http.proto):

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    Verb     = ":" LITERAL ;

A template compiles to one regular expression over the raw (still
percent-encoded) path; captured variables are decoded afterwards, so an
encoded "/" inside a single-segment variable stays part of its value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class PathTemplate:
    template: str
    pattern: re.Pattern[str]
    # Field path of each variable, in order of the regex groups v0, v1, ...
    variables: tuple[str, ...]
    # Literal segments count, used to prefer the more specific of two matches.
    literal_count: int

    def match(self, raw_path: str) -> dict[str, str] | None:
        found = self.pattern.fullmatch(raw_path)
        if found is None:
            return None
        return {field: unquote(found.group(f"v{i}")) for i, field in enumerate(self.variables)}


def _split_outside_braces(text: str, separator: str) -> list[str]:
    parts, depth, current = [], 0, []
    for char in text:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth < 0:
                raise TemplateError("unbalanced '}'")
        if char == separator and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth:
        raise TemplateError("unbalanced '{'")
    parts.append("".join(current))
    return parts


def _segment_regex(segment: str) -> str:
    if segment == "*":
        return "[^/]+"
    if segment == "**":
        return ".*"
    if not segment or any(c in segment for c in "{}*"):
        raise TemplateError(f"bad segment {segment!r}")
    return re.escape(segment)


def parse(template: str) -> PathTemplate:
    if not template.startswith("/"):
        raise TemplateError(f"{template!r} must start with '/'")
    body, verb = template[1:], ""
    last = _split_outside_braces(body, "/")[-1]
    if ":" in last.split("}")[-1]:
        body, _, verb = body.rpartition(":")
    regex, variables, literals = [], [], 0
    for segment in _split_outside_braces(body, "/"):
        if segment.startswith("{") and segment.endswith("}"):
            field, _, sub_template = segment[1:-1].partition("=")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", field):
                raise TemplateError(f"bad field path {field!r}")
            inner = "/".join(_segment_regex(s) for s in (sub_template or "*").split("/"))
            regex.append(f"(?P<v{len(variables)}>{inner})")
            variables.append(field)
        else:
            regex.append(_segment_regex(segment))
            literals += segment not in ("*", "**")
    pattern = "/" + "/".join(regex) + (re.escape(":" + verb) if verb else "")
    return PathTemplate(template, re.compile(pattern), tuple(variables), literals + bool(verb))
