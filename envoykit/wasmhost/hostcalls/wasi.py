"""The WASI preview 1 subset cpp-host provides (``src/exports.cc``), under both
``wasi_snapshot_preview1`` and ``wasi_unstable``.

``fd_write`` to stdout is logged at INFO, to stderr at ERROR, with the trailing newline stripped;
other descriptors are EBADF. No files, no sockets: ``path_open`` ENOENT, ``fd_read`` ENOSYS.
Clocks read the host's controllable clock. ``proc_exit`` traps the running callback (the module
asked to stop; Envoy logs and the VM fails).
"""

from __future__ import annotations

import struct
from typing import Any

from envoykit.wasmhost.abi import LogLevel
from envoykit.wasmhost.errors import HostTrap
from envoykit.wasmhost.hostcalls.table import Table

SUCCESS, EBADF, EFAULT, EINVAL, ENOENT, ENOSYS, ENOTSUP = 0, 8, 21, 28, 44, 52, 58


def fd_write(vm: Any, fd: int, iovs: int, iovs_len: int, nwritten_ptr: int) -> int:
    """WASI ``fd_write(fd, iovs, iovs_len, return_nwritten *) -> errno``."""
    if fd not in (1, 2):
        return EBADF
    chunks = []
    for i in range(iovs_len):
        base = iovs + 8 * i
        ptr, size = struct.unpack("<II", vm.read(base, 8))
        chunks.append(vm.read(ptr, size))
    data = b"".join(chunks)
    vm.write_u32(nwritten_ptr, len(data))
    text = data[:-1] if data.endswith(b"\n") else data
    vm.plugin.record_log(LogLevel.INFO if fd == 1 else LogLevel.ERROR, text)
    return SUCCESS


def fd_read(vm: Any, fd: int, iovs: int, iovs_len: int, nread_ptr: int) -> int:
    """WASI ``fd_read(fd, iovs, iovs_len, return_nread *) -> errno (ENOSYS)``."""
    return ENOSYS


def fd_seek(vm: Any, fd: int, offset: int, whence: int, ret_ptr: int) -> int:
    """WASI ``fd_seek(fd, offset i64, whence, return_offset *) -> errno``."""
    vm.plugin.record_log(LogLevel.ERROR, b"fd_seek not supported")
    return SUCCESS


def fd_close(vm: Any, fd: int) -> int:
    """WASI ``fd_close(fd) -> errno``."""
    vm.plugin.record_log(LogLevel.ERROR, b"fd_close not supported")
    return SUCCESS


def fd_fdstat_get(vm: Any, fd: int, ret_ptr: int) -> int:
    """WASI ``fd_fdstat_get(fd, return_fdstat *) -> errno``."""
    if fd not in (1, 2):
        return EBADF
    # struct fdstat { u8 filetype; u16 flags; u64 rights_base; u64 rights_inheriting } = 24 bytes
    vm.write(ret_ptr, struct.pack("<BxHxxxxQQ", 0, 0, 64, 0))
    return SUCCESS


def fd_fdstat_set_flags(vm: Any, fd: int, flags: int) -> int:
    """WASI ``fd_fdstat_set_flags(fd, flags) -> errno``."""
    return SUCCESS if fd in (1, 2) else EBADF


def fd_prestat_get(vm: Any, fd: int, ret_ptr: int) -> int:
    """WASI ``fd_prestat_get(fd, return_prestat *) -> errno (EBADF: no preopens)``."""
    return EBADF


def fd_prestat_dir_name(vm: Any, fd: int, ptr: int, size: int) -> int:
    """WASI ``fd_prestat_dir_name(fd, path, path_len) -> errno (ENOSYS)``."""
    return ENOSYS


def path_open(vm: Any, *args: int) -> int:
    """WASI ``path_open(...) -> errno (ENOENT: no file system)``."""
    return ENOENT


def _env_items(vm: Any) -> list[bytes]:
    return [f"{k}={v}".encode() + b"\0" for k, v in vm.plugin.environment.items()]


def environ_sizes_get(vm: Any, count_ptr: int, size_ptr: int) -> int:
    """WASI ``environ_sizes_get(return_count *, return_buf_size *) -> errno``."""
    items = _env_items(vm)
    vm.write_u32(count_ptr, len(items))
    vm.write_u32(size_ptr, sum(map(len, items)))
    return SUCCESS


def environ_get(vm: Any, ptrs_ptr: int, buf_ptr: int) -> int:
    """WASI ``environ_get(environ **, environ_buf *) -> errno``."""
    for i, item in enumerate(_env_items(vm)):
        vm.write_u32(ptrs_ptr + 4 * i, buf_ptr)
        vm.write(buf_ptr, item)
        buf_ptr += len(item)
    return SUCCESS


def args_sizes_get(vm: Any, argc_ptr: int, size_ptr: int) -> int:
    """WASI ``args_sizes_get(return_argc *, return_buf_size *) -> errno (always 0, 0)``."""
    vm.write_u32(argc_ptr, 0)
    vm.write_u32(size_ptr, 0)
    return SUCCESS


def args_get(vm: Any, argv_ptr: int, buf_ptr: int) -> int:
    """WASI ``args_get(argv **, argv_buf *) -> errno``."""
    return SUCCESS


def clock_time_get(vm: Any, clock_id: int, precision: int, ret_ptr: int) -> int:
    """WASI ``clock_time_get(clock_id, precision i64, return_time u64 *) -> errno``."""
    clock = vm.plugin.host.clock
    if clock_id == 0:
        vm.write_u64(ret_ptr, clock.wall_ns)
    elif clock_id == 1:
        vm.write_u64(ret_ptr, clock.monotonic_ns)
    else:
        return ENOTSUP
    return SUCCESS


def clock_res_get(vm: Any, clock_id: int, ret_ptr: int) -> int:
    """WASI ``clock_res_get(clock_id, return_resolution u64 *) -> errno (1 ns)``."""
    vm.write_u64(ret_ptr, 1)
    return SUCCESS


def random_get(vm: Any, ptr: int, size: int) -> int:
    """WASI ``random_get(buf, buf_len) -> errno (at most 64 KiB)``."""
    if size > 64 * 1024:
        return EINVAL
    vm.write(ptr, vm.plugin.host.random_bytes(size))  # seeded: tests are reproducible
    return SUCCESS


def sched_yield(vm: Any) -> int:
    """WASI ``sched_yield() -> errno``."""
    return SUCCESS


def poll_oneoff(vm: Any, in_ptr: int, out_ptr: int, nsub: int, nevents_ptr: int) -> int:
    """WASI ``poll_oneoff(in, out, nsubscriptions, return_nevents *) -> errno (no events)``."""
    vm.write_u32(nevents_ptr, 0)
    return SUCCESS


def proc_exit(vm: Any, code: int) -> None:
    """WASI ``proc_exit(code) -> never returns: fails the running callback``."""
    raise HostTrap(f"proc_exit({code}) called by the module")


def _fd_ok(vm: Any, fd: int, *args: int) -> int:
    return SUCCESS if fd in (1, 2) else EBADF


FUNCTIONS: Table = {
    "fd_write": ("iiii>i", fd_write),
    "fd_read": ("iiii>i", fd_read),
    "fd_seek": ("iIii>i", fd_seek),
    "fd_close": ("i>i", fd_close),
    "fd_fdstat_get": ("ii>i", fd_fdstat_get),
    "fd_fdstat_set_flags": ("ii>i", fd_fdstat_set_flags),
    "fd_prestat_get": ("ii>i", fd_prestat_get),
    "fd_prestat_dir_name": ("iii>i", fd_prestat_dir_name),
    "path_open": ("iiiiiIIii>i", path_open),
    "environ_sizes_get": ("ii>i", environ_sizes_get),
    "environ_get": ("ii>i", environ_get),
    "args_sizes_get": ("ii>i", args_sizes_get),
    "args_get": ("ii>i", args_get),
    "clock_time_get": ("iIi>i", clock_time_get),
    "clock_res_get": ("ii>i", clock_res_get),
    "random_get": ("ii>i", random_get),
    "sched_yield": (">i", sched_yield),
    "poll_oneoff": ("iiii>i", poll_oneoff),
    "proc_exit": ("i>", proc_exit),
    "fd_advise": ("iIIi>i", _fd_ok),
    "fd_allocate": ("iII>i", _fd_ok),
    "fd_datasync": ("i>i", _fd_ok),
    "fd_sync": ("i>i", _fd_ok),
    "fd_tell": ("ii>i", _fd_ok),
}
