"""core: keep-last-good reload and YAML errors that name file, line and field."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from envoykit.core import ConfigError, WatchedConfig, load_yaml_file, validation_error_to_config_error


class Limits(BaseModel):
    name: str
    rate: int


def load(path: Path) -> Limits:
    doc = load_yaml_file(path)
    try:
        return Limits.model_validate(doc.data)
    except ValidationError as exc:
        raise validation_error_to_config_error(exc, doc) from exc


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("name: x\nrate: [1,\n")
    with pytest.raises(ConfigError) as e:
        load(f)
    assert e.value.file == str(f) and e.value.line == 3 and "invalid YAML" in str(e.value)


def test_validation_error_has_line_and_field(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("name: x\n\nrate: lots\n")
    with pytest.raises(ConfigError) as e:
        load(f)
    assert (e.value.line, e.value.field) == (3, "rate")
    assert str(e.value).startswith(f"{f}:3: rate: ")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "nope.yaml")


def test_reload_keeps_last_good(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("name: x\nrate: 1\n")
    seen: list[Limits] = []
    w = WatchedConfig("test", f, load, on_change=seen.append)
    assert w.current.rate == 1
    f.write_text("name: x\nrate: 2\n")
    assert w.reload() and w.current.rate == 2 and seen[-1].rate == 2
    f.write_text("name: x\nrate: nope\n")
    assert not w.reload()
    assert w.current.rate == 2 and w.last_error is not None and "a.yaml:2: rate" in w.last_error


def test_first_load_must_succeed(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("rate: 1\n")
    with pytest.raises(ConfigError, match="name"):
        WatchedConfig("test", f, load)


def _wait(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def _given(tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file as a user names it: absolute, or relative to the working directory (event paths from the
    watcher are absolute either way)."""
    (tmp_path / "a.yaml").write_text("name: x\nrate: 1\n")
    if how == "absolute":
        return tmp_path / "a.yaml"
    monkeypatch.chdir(tmp_path)
    return Path("a.yaml")


@pytest.mark.parametrize("how", ["absolute", "relative"])
def test_watch_in_thread_reloads_on_change(tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    f = _given(tmp_path, how, monkeypatch)
    w = WatchedConfig("test", f, load)
    stop = threading.Event()
    t = w.watch_in_thread(stop)
    try:
        time.sleep(0.3)
        f.write_text("name: x\nrate: 5\n")
        assert _wait(lambda: w.current.rate == 5)
        f.write_text("name: x\nrate: bad\n")
        assert _wait(lambda: w.last_error is not None)
        assert w.current.rate == 5
    finally:
        stop.set()
        t.join(5)


@pytest.mark.parametrize("how", ["absolute", "relative"])
async def test_async_watch_reloads_on_change(
    tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = _given(tmp_path, how, monkeypatch)
    w = WatchedConfig("test", f, load)
    stop = asyncio.Event()
    task = asyncio.create_task(w.watch(stop))
    await asyncio.sleep(0.3)
    f.write_text("name: x\nrate: 7\n")
    for _ in range(100):
        if w.current.rate == 7:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert w.current.rate == 7


def test_reload_waits_for_the_file_to_settle(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("name: x\nrate: 1\n")
    w = WatchedConfig("test", f, load, settle_ms=300)
    f.write_text("name: half\nrate: 2\n")  # the first part of a two-part write: valid, but not the file meant

    def finish() -> None:
        time.sleep(0.1)
        f.write_text("name: x\nrate: 9\n")

    t = threading.Thread(target=finish)
    t.start()
    assert w.reload()
    t.join()
    assert w.current.rate == 9  # the half-written version was never loaded


def test_reload_refuses_files_that_never_settle(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("name: x\nrate: 1\n")
    w = WatchedConfig("test", f, load, settle_ms=100, settle_max_s=0.5)
    stop = threading.Event()

    def churn() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            f.write_text(f"name: x\nrate: {i}\n")
            time.sleep(0.03)

    t = threading.Thread(target=churn)
    t.start()
    try:
        assert not w.reload()
    finally:
        stop.set()
        t.join()
    assert w.current.rate == 1 and "kept changing" in (w.last_error or "")
