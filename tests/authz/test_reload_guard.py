"""A reload that would empty the serving policy is refused unless the operator says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from envoykit.authz.loader import EMPTY_MARKER, PolicyEmptied, load_policy
from envoykit.core.errors import ConfigError

RULE = "from envoykit.authz import allow_rule\n@allow_rule()\ndef {name}(req):\n    return True\n"
YAML = "kind: AuthorizationPolicy\nmetadata: {name: y}\nspec:\n  action: DENY\n  rules: [{}]\n"
AUTHN = "api_keys:\n  keys:\n    - {name: ci, sha256: " + "a" * 64 + "}\n"


@pytest.fixture
def pol(tmp_path: Path) -> Path:
    d = tmp_path / "p"
    d.mkdir()
    (d / "a.py").write_text(RULE.format(name="a"))
    (d / "b.py").write_text(RULE.format(name="b"))
    (d / "c.yaml").write_text(YAML)
    (d / "authn.yaml").write_text(AUTHN)
    return d


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (lambda d: (d / "a.py").write_text(""), "a.py"),  # one file truncated
        (lambda d: (d / "a.py").write_text("# nothing yet\n"), "a.py"),  # half-written: no rule
        (lambda d: (d / "c.yaml").write_text(""), "c.yaml"),
        (lambda d: (d / "c.yaml").write_text("---\n"), "c.yaml"),
        (lambda d: (d / "authn.yaml").write_text(""), "authn.yaml"),
        (lambda d: (d / "authn.yaml").unlink(), "authn.yaml"),
    ],
)
def test_emptying_a_file_is_refused_with_its_name(pol: Path, edit, where: str) -> None:
    good = load_policy(pol)
    edit(pol)
    with pytest.raises(PolicyEmptied) as e:
        load_policy(pol, good)
    assert e.value.file == str(pol / where)
    assert load_policy(pol, good, allow_empty=True)  # the operator's flag accepts it
    (pol / EMPTY_MARKER).write_text("")
    assert load_policy(pol, good)  # and so does the marker file


def test_every_rule_or_file_gone_is_refused(pol: Path) -> None:
    good = load_policy(pol)
    for f in ("a.py", "b.py", "c.yaml"):
        (pol / f).unlink()
    with pytest.raises(PolicyEmptied, match="every policy file is gone"):
        load_policy(pol, good)
    (pol / "helpers.py").write_text("X = 1\n")  # a file, but no rule
    with pytest.raises(PolicyEmptied, match="no rules"):
        load_policy(pol, good)


def test_deleting_one_file_or_shrinking_is_fine(pol: Path) -> None:
    good = load_policy(pol)
    (pol / "a.py").unlink()
    after = load_policy(pol, good)
    assert [r.name for r in after.rules] == ["b", "y"]
    # a first load (nothing serving yet) may be empty
    for f in ("b.py", "c.yaml", "authn.yaml"):
        (pol / f).unlink()
    assert load_policy(pol).rules == []


@pytest.mark.parametrize("name", ["r.py", "p.yaml", "authn.yaml"])
def test_non_utf8_names_file_and_line(tmp_path: Path, name: str) -> None:
    d = tmp_path / "p"
    d.mkdir()
    (d / name).write_bytes(b"# ok\n# caf\xe9\n")
    with pytest.raises(ConfigError) as e:
        load_policy(d)
    assert (e.value.file, e.value.line) == (str(d / name), 2)
    assert "not UTF-8: byte 0xe9" in str(e.value)
