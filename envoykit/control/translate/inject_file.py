"""Read, check, patch and write the file of ``envoykit envoy inject``.

Order, so a refusal always names the right culprit and never leaves a bad file behind:
1. parse the input (YAML round trip: comments, key order, quotes and indentation kept; JSON stays
   JSON with its key order);
2. ``envoy --mode validate`` on the input: if Envoy already refuses it, say so before changing it;
3. patch (:func:`envoykit.control.translate.inject.inject_config`);
4. write the result to a temporary file beside the output, validate that, and only then rename it
   over the output. A refused result is deleted, never written.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from envoykit.control.translate.inject import InjectOptions, inject_config
from envoykit.core.envoy import EnvoyError, validate_envoy_config
from envoykit.core.errors import ConfigError


@dataclass
class Injected:
    """What :func:`inject_file` did: the file written, whether Envoy validated it, notes for the user."""

    output: Path
    validated: bool
    notes: list[str]


def _last_line(exc: EnvoyError) -> str:
    lines = [ln for ln in exc.log.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else str(exc)


def guess_indent(text: str) -> tuple[int, int, int]:
    """The block indentation of a YAML text as ruamel's ``indent(mapping, sequence, offset)`` wants it.

    The most common step from a ``key:`` line to a nested key (mapping) and to a nested ``- `` item
    (offset of the dash); 2, 2, 0 when the text does not say.
    """
    maps: Counter[int] = Counter()
    dashes: Counter[int] = Counter()
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    for a, b in itertools.pairwise(lines):
        if not a.rstrip().endswith(":"):
            continue
        ia = len(a) - len(a.lstrip())
        if a.lstrip().startswith("- "):
            ia += 2  # the key sits after the dash
        ib = len(b) - len(b.lstrip())
        if ib > ia:
            (dashes if b.lstrip().startswith("- ") else maps)[ib - ia] += 1
    mapping = maps.most_common(1)[0][0] if maps else 2
    offset = dashes.most_common(1)[0][0] if dashes else 0
    return mapping, offset + 2, offset


def _load(path: Path) -> tuple[Any, YAML]:
    text = path.read_text()
    try:
        mapping, sequence, offset = guess_indent(text)
        rt = YAML(typ="rt")
        rt.preserve_quotes = True
        rt.width = 4096  # never re-wrap the user's long lines
        rt.indent(mapping=mapping, sequence=sequence, offset=offset)
        return rt.load(text), rt
    except MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
        raise ConfigError(f"not valid YAML: {exc.problem}", file=str(path), line=line) from exc
    except YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", file=str(path)) from exc


def inject_file(
    path: Path, opts: InjectOptions, output: Path | None = None, *, validate: bool = True
) -> Injected:
    """Patch the config at ``path`` and write it to ``output`` (default ``<name>.envoykit.yaml``).

    Raises:
        ConfigError: unreadable or invalid input (Envoy refuses it as it is), an unpatchable
            config, or Envoy refused the result (then nothing is written).
    """
    as_json = path.suffix == ".json"
    rt: YAML | None = None
    if as_json:  # JSON stays JSON (key order kept; JSON has no comments)
        try:
            doc = json.loads(path.read_text())
        except ValueError as exc:
            raise ConfigError(f"not valid JSON: {exc}", file=str(path)) from exc
    else:
        doc, rt = _load(path)
    if validate:
        try:
            validate_envoy_config(path)
        except EnvoyError as exc:
            raise ConfigError(
                f"the input is already invalid for Envoy, before any change by inject: {_last_line(exc)}",
                file=str(path),
            ) from exc
    try:
        notes = inject_config(doc, opts, path.resolve().parent)
    except ValueError as exc:
        raise ConfigError(f"cannot inject: {exc}", file=str(path)) from exc
    out = output or path.with_name(f"{path.stem}.envoykit{'.json' if as_json else '.yaml'}")
    buf = io.StringIO()
    if rt is None:
        json.dump(doc, buf, indent=2)
        buf.write("\n")
    else:
        rt.dump(doc, buf)
    # Envoy reads the format from the extension: the temporary file is checked in the format written
    suffix = ".json" if rt is None else ".yaml"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=suffix, dir=out.parent.resolve())
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(buf.getvalue())
        if validate:
            try:
                validate_envoy_config(tmp)
            except EnvoyError as exc:
                raise ConfigError(
                    f"envoy --mode validate refused the result, so nothing was written: {_last_line(exc)}",
                    file=str(out),
                ) from exc
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return Injected(out, validate, notes)
