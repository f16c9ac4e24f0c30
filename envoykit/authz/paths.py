"""The one normalised request path every matcher reads, and Istio's path patterns over it.

**Normalisation** (:func:`normalize_path`), chosen to equal what Envoy forwards with the HTTP connection
manager's ``normalize_path: true``, ``merge_slashes: true`` and
``path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD`` (checked against Envoy 1.40), plus one step
Envoy lacks:

1. the query (``?…``) and fragment (``#…``) are cut off;
2. percent-escapes of unreserved characters (``A-Z a-z 0-9 - . _ ~``) are decoded, once; ``%2F`` and
   ``%5C`` (any case) become ``/``, and so does ``\\``; every other escape stays as sent (``%20``, ``%C3%A9``);
3. ``;`` path parameters are cut off each segment (``/a;jsessionid=1/b`` → ``/a/b``) — Envoy forwards
   them, Tomcat and Jetty drop them;
4. empty segments merge (``//`` → ``/``) and dot segments resolve (RFC 3986 §5.2.4), a trailing ``/``
   is kept.

A path is *ambiguous* (:func:`path_ambiguity`) when upstreams disagree on what it names: an encoded
``;`` (``%3B``), or ``;`` parameters on a dot or empty segment (``/..;/``, ``/.;x/``, ``/;x/``), which
Tomcat resolves as ``..`` while others take it literally. Both the Python path and the compiled RBAC
filter deny such a request (403), whatever the policy says.

**Istio path patterns** (``paths``/``notPaths``, https://istio.io/latest/docs/reference/config/security/
authorization-policy/#Operation): exact, ``prefix*``, ``*suffix``, presence ``*``, and templates where
a whole segment is ``{*}`` (one segment) or ``{**}`` (zero or more segments; no ``{*}``/``{**}`` after
it), matched as Envoy's ``uri_template`` matcher does: ``{*}`` matches ``[A-Za-z0-9-._~%!$&'()+,;:@]+``
and ``{**}`` the same characters and ``/``, zero or more. :func:`path_regex` matches a normalised
path; :func:`envoy_path_regex` matches the same requests on the path Envoy's RBAC filter sees (which
still carries ``;`` parameters on ordinary segments), so the two decide alike.
"""

from __future__ import annotations

import re
import string
from functools import lru_cache

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_ENCODED_SEMICOLON = re.compile(r"%3[Bb]")

#: Envoy's uri_template literal characters (RFC 3986 pchar without ``*`` and ``=``).
_TEMPLATE_CHARS = r"a-zA-Z0-9\-._~%!$&'()+,;:@"
_TEMPLATE_CHARS_NO_PARAM = r"a-zA-Z0-9\-._~%!$&'()+,:@"
#: Optional ``;`` parameters after a segment, as Envoy leaves them in the path.
_PARAMS = r"(?:;[^/]*)?"

#: Substrings that make a path (as Envoy's RBAC filter sees it) ambiguous, matched case-insensitively:
#: a ``;`` starting an empty, ``.`` or ``..`` segment, or an encoded ``;`` (see the module docstring).
AMBIGUOUS_PATH_PARTS = ("/;", "/.;", "/..;", "%3b")


def _decode(m: re.Match[str]) -> str:
    c = chr(int(m.group(1), 16))
    if c in _UNRESERVED:
        return c
    if c in "/\\":
        return "/"
    return m.group(0)


def _segments(raw: str) -> tuple[list[str], str | None]:
    """Decoded segments with parameters cut off, and why the path is ambiguous (or None)."""
    path = raw.split("?", 1)[0].split("#", 1)[0]
    why = "encoded ';' (%3B) in the path" if _ENCODED_SEMICOLON.search(path) else None
    path = _ESCAPE.sub(_decode, path).replace("\\", "/")
    out = []
    for seg in path.lstrip("/").split("/"):
        if ";" in seg:
            base = seg.split(";", 1)[0]
            if base in ("", ".", "..") and why is None:
                why = f"';' parameters on the segment {seg!r}"
            seg = base
        out.append(seg)
    return out, why


@lru_cache(maxsize=4096)
def _normalize(raw: str) -> tuple[str, str | None]:
    segs, why = _segments(raw)
    stack: list[str] = []
    trailing = False
    for i, seg in enumerate(segs):
        last = i == len(segs) - 1
        if seg in ("", "."):
            trailing = last
        elif seg == "..":
            if stack:
                stack.pop()
            trailing = last
        else:
            stack.append(seg)
    path = "/" + "/".join(stack)
    if trailing and stack:
        path += "/"
    return path, why


def normalize(raw: str) -> tuple[str, str | None]:
    """``(normalize_path(raw), path_ambiguity(raw))`` in one call (cached for 4096 targets)."""
    return _normalize(raw)


def normalize_path(raw: str) -> str:
    """The normalised path of a request target ``raw`` (see the module docstring).

    ``/a/%2e%2e/admin`` → ``/admin``; ``/api;v=1//items/`` → ``/api/items/``; ``/x?q=1`` → ``/x``.
    """
    return _normalize(raw)[0]


def path_ambiguity(raw: str) -> str | None:
    """Why the request target ``raw`` is ambiguous (denied by every matcher), or None."""
    return _normalize(raw)[1]


# ---- Istio path patterns ----------------------------------------------------------------------


def is_template(pattern: str) -> bool:
    """True when ``pattern`` uses Istio's ``{*}``/``{**}`` path templates."""
    return "{" in pattern or "}" in pattern


def check_path_pattern(pattern: str) -> str:
    """Validate one ``paths``/``notPaths`` value; return it.

    Raises:
        ValueError: a ``;`` (parameters are cut off before matching, so it could never match), or a
            template that is not whole ``{*}``/``{**}`` segments and literal segments, or has an
            operator after ``{**}``.
    """
    if ";" in pattern:
        raise ValueError(f"path {pattern!r}: ';' never matches (path parameters are cut off first)")
    if not is_template(pattern):
        return pattern
    if not pattern.startswith("/"):
        raise ValueError(f"path template {pattern!r} must start with '/'")
    seen_rest = False
    for seg in pattern[1:].split("/"):
        if seg in ("{*}", "{**}"):
            if seen_rest:
                raise ValueError(f"path template {pattern!r}: {{**}} must be the last operator")
            seen_rest = seg == "{**}"
        elif "{" in seg or "}" in seg or "*" in seg:
            raise ValueError(
                f"path template {pattern!r}: a segment is either {{*}}, {{**}} or literal text, not {seg!r}"
            )
        elif seg and not re.fullmatch(f"[{_TEMPLATE_CHARS_NO_PARAM}]+", seg):
            raise ValueError(f"path template {pattern!r}: segment {seg!r} has characters a path cannot hold")
    return pattern


def _template(pattern: str, *, envoy: bool) -> str:
    parts = []
    for seg in pattern[1:].split("/"):
        if seg == "{*}":
            parts.append(f"[{_TEMPLATE_CHARS_NO_PARAM}]+{_PARAMS}" if envoy else f"[{_TEMPLATE_CHARS}]+")
        elif seg == "{**}":
            parts.append(f"(?:[{_TEMPLATE_CHARS_NO_PARAM}/]|;[^/]*)*" if envoy else f"[{_TEMPLATE_CHARS}/]*")
        else:
            parts.append(_lit(seg) if envoy else re.escape(seg))
    return "/" + "/".join(parts)


def _lit(seg: str) -> str:
    """A whole literal segment on Envoy's path: the text, then any ``;`` parameters."""
    return re.escape(seg) + _PARAMS if seg else ""


def path_regex(pattern: str) -> str:
    """A regex (full match) for the normalised paths ``pattern`` matches, per Istio."""
    if is_template(pattern):
        return _template(pattern, envoy=False)
    if pattern == "*":
        return ".+"
    if pattern.endswith("*"):
        return re.escape(pattern[:-1]) + ".*"
    if pattern.startswith("*"):
        return ".*" + re.escape(pattern[1:])
    return re.escape(pattern)


def envoy_path_regex(pattern: str) -> str:
    """A regex (RE2, full match) for the paths Envoy's RBAC filter sees whose normalised form
    ``pattern`` matches: each literal segment may carry ``;`` parameters there."""
    if is_template(pattern):
        return _template(pattern, envoy=True)
    if pattern == "*":
        return ".+"
    if pattern.endswith("*"):
        *full, partial = pattern[:-1].split("/")
        head = "/".join(_lit(s) for s in full)
        return head + ("/" if full else "") + re.escape(partial) + ".*"
    if pattern.startswith("*"):
        first, *rest = pattern[1:].split("/")
        if not rest:
            return f"(?:.*/)?[^/;]*{re.escape(first)}{_PARAMS}"
        head = ".*" if not first else f"(?:.*/)?[^/;]*{re.escape(first)}{_PARAMS}"
        return head + "/" + "/".join(_lit(s) for s in rest)
    return "/".join(_lit(s) for s in pattern.split("/"))


@lru_cache(maxsize=4096)
def compiled_path_regex(pattern: str) -> re.Pattern[str]:
    """:func:`path_regex` compiled (cached: policies share patterns)."""
    return re.compile(path_regex(pattern))
