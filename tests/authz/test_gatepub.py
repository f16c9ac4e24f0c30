"""``envoykit authz serve``'s gate publisher: the document follows every accepted reload, a refused
reload changes nothing, a compile failure or --dry-run publishes ``no_gate``, and a gate file that can
no longer be written is removed rather than left describing an older policy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from envoykit.authz import load_policy
from envoykit.authz.gate import gate_document
from envoykit.authz.gatepub import GatePublisher
from envoykit.authz.loader import Policy
from envoykit.core.authzgate import read_document
from envoykit.core.reload import WatchedConfig

DENY = 'kind: AuthorizationPolicy\nmetadata: {name: %s}\nspec:\n  action: DENY\n  rules: [{to: [{operation: {paths: ["/%s"]}}]}]\n'


def _setup(tmp_path: Path, dry_run: bool = False) -> tuple[Path, WatchedConfig[Policy], GatePublisher, Path]:
    d = tmp_path / "policy"
    d.mkdir()
    (d / "a.yaml").write_text(DENY % ("a", "a"))
    out = tmp_path / "gate.json"
    holder: list[GatePublisher] = []
    watched: WatchedConfig[Policy] = WatchedConfig(
        "authz", d, load_policy, on_change=lambda _p: holder[0].publish(), settle_ms=0
    )
    holder.append(GatePublisher(watched, out, dry_run=dry_run))
    holder[0].publish()
    return d, watched, holder[0], out


def test_follows_accepted_reloads_only(tmp_path: Path) -> None:
    d, watched, pub, out = _setup(tmp_path)
    first = read_document(str(out))
    assert [p.id for p in first.policies] == ["a"] and pub.route("") == (200, first.model_dump(mode="json"))
    (d / "b.yaml").write_text(DENY % ("b", "b"))
    assert watched.reload()
    second = read_document(str(out))
    assert [p.id for p in second.policies] == ["a", "b"] and second.digest != first.digest
    (d / "c.yaml").write_text("kind: AuthorizationPolicy\nmetadata: [\n")
    assert not watched.reload()  # refused: the server keeps its policy, the document stays
    assert read_document(str(out)) == second


def test_dry_run_and_compile_failures_publish_no_gate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "dry").mkdir()
    _, _, _, out = _setup(tmp_path / "dry", dry_run=True)
    doc = read_document(str(out))
    assert doc.no_gate is not None and "--dry-run" in doc.no_gate.message
    d, watched, _, out = _setup(tmp_path)

    def broken(_policy: Policy) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("envoykit.authz.gatepub.gate_document", broken)
    (d / "b.yaml").write_text(DENY % ("b", "b"))
    assert watched.reload()
    doc = read_document(str(out))
    assert doc.no_gate is not None and "RuntimeError: boom" in doc.no_gate.message


def test_an_unwritable_gate_file_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d, watched, pub, out = _setup(tmp_path)
    assert out.exists()

    def full(*_a: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("envoykit.authz.gatepub.write_document", full)
    (d / "b.yaml").write_text(DENY % ("b", "b"))
    assert watched.reload()
    assert not out.exists()  # the control plane reads no gate rather than the old policy's
    assert pub.document is not None and [p.id for p in pub.document.policies] == ["a", "b"]  # /gate follows


def test_the_digest_does_not_depend_on_where_the_files_are(tmp_path: Path) -> None:
    d, _, _, _ = _setup(tmp_path)
    shutil.copytree(d, tmp_path / "elsewhere")
    here, there = gate_document(load_policy(d)), gate_document(load_policy(tmp_path / "elsewhere"))
    assert here.policy_files != there.policy_files and here.digest == there.digest
    (tmp_path / "elsewhere" / "a.yaml").write_text(DENY % ("a", "b"))
    assert gate_document(load_policy(tmp_path / "elsewhere")).digest != here.digest
