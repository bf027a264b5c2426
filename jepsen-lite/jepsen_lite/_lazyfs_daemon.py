"""The lazyfs daemon: mfusepy's FUSE callbacks onto a jepsen_lite.lazyfs `Volume`, one request at a
time. Run by `LazyMount` as ``python -m jepsen_lite._lazyfs_daemon BACKING MOUNTPOINT --name N``.

Imports mfusepy (which loads libfuse 3 when imported: this module is imported only by the daemon)
and jepsen_lite.lazyfs; no budgetd module.
"""

from __future__ import annotations

import argparse
import errno
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

import mfusepy

from jepsen_lite.lazyfs import SUBTYPE, Inode, Volume, fail

__all__ = ["main"]


class _Operations(mfusepy.Operations):  # type: ignore[misc]
    """The FUSE callbacks: path or handle (the inode number) to `Volume` calls."""

    use_ns = True

    def __init__(self, volume: Volume) -> None:
        self.volume = volume

    def _node(self, path: str | None, fh: int | None = None) -> Inode:
        if fh:
            return self.volume.node(fh)
        if path is None:
            raise fail(errno.ENOENT)
        return self.volume.lookup(path)

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        return self.volume.attributes(self._node(path, fh))

    def readdir(self, path: str, fh: int) -> list[str]:
        node = self._node(path, fh)
        return [".", "..", *node.entries]

    def opendir(self, path: str) -> int:
        node = self._node(path)
        if not node.is_dir:
            raise fail(errno.ENOTDIR)
        return self.volume.opened(node)

    def releasedir(self, path: str | None, fh: int) -> int:
        self.volume.released(self.volume.node(fh))
        return 0

    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        self.volume.fsync(self._node(path, fh))
        return 0

    def open(self, path: str, flags: int) -> int:
        node = self._node(path)
        if flags & os.O_TRUNC:
            self.volume.truncate(node, 0)
        return self.volume.opened(node)

    def create(self, path: str, mode: int, flags: int) -> int:
        return self.volume.opened(self.volume.create(path, mode))

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        return self.volume.read(self._node(path, fh), size, offset)

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        return self.volume.write(self._node(path, fh), data, offset)

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        self.volume.truncate(self._node(path, fh), length)
        return 0

    def flush(self, path: str | None, fh: int) -> int:
        return 0

    def release(self, path: str | None, fh: int) -> int:
        self.volume.released(self.volume.node(fh))
        return 0

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        self.volume.fsync(self._node(path, fh))
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        self.volume.create(path, mode, directory=True)
        return 0

    def unlink(self, path: str) -> int:
        self.volume.unlink(path)
        return 0

    def rmdir(self, path: str) -> int:
        self.volume.unlink(path, directory=True)
        return 0

    def rename(self, old: str, new: str) -> int:
        self.volume.rename(old, new)
        return 0

    def chmod(self, path: str | None, mode: int) -> int:
        node = self._node(path)
        node.mode = stat.S_IFMT(node.mode) | (mode & 0o7777)
        node.ctime_ns = time.time_ns()
        return 0

    def chown(self, path: str | None, uid: int, gid: int) -> int:
        node = self._node(path)
        node.uid = node.uid if uid < 0 else uid
        node.gid = node.gid if gid < 0 else gid
        return 0

    def utimens(self, path: str | None, times: tuple[int, int] | None = None) -> int:
        node = self._node(path)
        now = time.time_ns()
        node.atime_ns, node.mtime_ns = times if times is not None else (now, now)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        got = os.statvfs(self.volume.backing)
        return {
            key: getattr(got, key)
            for key in (
                "f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail",
                "f_files", "f_ffree", "f_favail", "f_namemax",
            )
        }  # fmt: skip


class _Fuse(mfusepy.FUSE):  # type: ignore[misc]
    def truncate_fuse_3(self, path: bytes | None, length: int, fip: Any) -> int:
        # mfusepy drops the handle; an ftruncate of an unlinked open file has no path.
        fh = fip.contents.fh if fip else None
        name = None if path is None else path.decode(self.encoding, self.errors)
        return int(self.operations.truncate(name, length, fh))

    def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
        # mfusepy drops the flags; RENAME_NOREPLACE/EXCHANGE must not pass for a plain rename.
        if flags:
            return -errno.EINVAL
        return int(super().rename_fuse_3(old, new, flags))


def main(argv: list[str] | None = None) -> int:
    """``python -m jepsen_lite.lazyfs BACKING MOUNTPOINT --name NAME``: serve the mount in the
    foreground until it is unmounted (or the process is killed: a power cut)."""
    parser = argparse.ArgumentParser(prog="python -m jepsen_lite.lazyfs")
    parser.add_argument("backing", type=Path)
    parser.add_argument("mountpoint", type=Path)
    parser.add_argument("--name", required=True, help="fsname shown in /proc/self/mountinfo")
    args = parser.parse_args(argv)
    backing = args.backing.resolve()
    volume = Volume(backing, backing.with_name(backing.name + ".stage"))
    _Fuse(
        _Operations(volume),
        str(args.mountpoint),
        foreground=True,
        nothreads=True,
        fsname=args.name,
        subtype=SUBTYPE,
        hard_remove=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
