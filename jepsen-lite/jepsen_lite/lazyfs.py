"""lazyfs: a FUSE file system that forgets, at power off, every change not yet made durable.

Owns one mount of a node's data dir over a backing directory, the in-memory image of what was
written but not synced (`Volume`), and the daemon process serving it (`LazyMount`; the FUSE
callbacks are in jepsen_lite._lazyfs_daemon). Stdlib only; never a budgetd module: it must catch
a store that simply never syncs, without the store's help.

The model (the backing directory always holds exactly the durable state):

1. Reads see every change at once: one in-memory image of the whole tree serves them.
2. A file's contents (write, truncate, and mmap pages, which the kernel writes back as writes)
   become durable at fsync or fdatasync of that file. msync(MS_SYNC) of a shared mapping is
   one: the kernel writes the dirty pages back, then sends the fsync.
3. Names (create, mkdir, rename, unlink, rmdir) become durable at fsync of the directory that
   holds them: it makes that directory's current entries durable at once. A file whose name
   becomes durable brings the contents of its last fsync (empty if it never had one); a rename
   between two directories needs both synced. A file that loses its last durable name keeps the
   contents of its last fsync for a later directory fsync to bring back.
4. Power off (`LazyMount.power_off`): the daemon is SIGKILLed, which aborts the FUSE connection
   (the kernel's dirty pages for the mount are thrown away with it) and the mount is detached;
   everything not durable is gone. The next mount loads the backing directory.

Not supported (ENOSYS): hard links, symbolic links, device nodes, extended attributes. Mode
bits become durable with the contents; owners and times are kept in memory only. An unlinked
file stays readable, writable and syncable through its open descriptors, but fstat on one may
fail with ESTALE once the kernel's cached attributes expire (libfuse's path-based API has no
path for it; lazyfs runs with hard_remove, since libfuse's alternative, renaming it to a
.fuse_hidden name, would be a rename the model must not make durable). A power cut
*during* an fsync may leave it half applied, as on a real disk.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from jepsen_lite._run import SandboxError, run

__all__ = [
    "FS_TYPE",
    "PAGE_BYTES",
    "SUBTYPE",
    "Inode",
    "LazyMount",
    "Volume",
    "fail",
    "fuse_preflight",
    "lazy_mounts",
    "remove_stale_mounts",
]

#: The mount's type in /proc/self/mountinfo (``fuse.<subtype>``).
SUBTYPE: Final = "jl-lazyfs"
FS_TYPE: Final = f"fuse.{SUBTYPE}"
#: Dirty tracking granularity: an fsync applies the pages written since the last one.
PAGE_BYTES: Final = 4096
#: How long a mount may take to appear, and a clean unmount to finish.
MOUNT_WAIT_S: Final = 10.0
ROOT_INO: Final = 1
_PR_SET_PDEATHSIG: Final = 1


@dataclass(eq=False)
class Inode:
    ino: int
    mode: int
    data: bytearray = field(default_factory=bytearray)
    entries: dict[str, int] = field(default_factory=dict)
    #: Pages written since the last fsync (files).
    dirty: set[int] = field(default_factory=set)
    #: Names in the current (volatile) tree: 0 or 1 (no hard links).
    links: int = 0
    opens: int = 0
    uid: int = 0
    gid: int = 0
    atime_ns: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    def touch(self) -> None:
        self.mtime_ns = self.ctime_ns = time.time_ns()


def fail(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class Volume:
    """The tree behind one mount: the volatile image every operation sees, and the durable
    state, kept in ``backing`` (a plain directory tree) plus, for files that lost their last
    durable name, in memory. ``stage`` is scratch space on the same file system as ``backing``.
    Single-threaded: the daemon serves one request at a time."""

    def __init__(self, backing: Path, stage: Path) -> None:
        self.backing = backing
        self.stage = stage
        self.inodes: dict[int, Inode] = {}
        #: {directory ino: {name: ino}} as of each directory's last fsync (or the mount).
        self.durable_entries: dict[int, dict[str, int]] = {}
        #: {ino: {(directory ino, name)}}: the reverse of durable_entries.
        self.durable_links: dict[int, set[tuple[int, str]]] = {}
        #: Durable contents of files with no durable name (fsynced, not yet linked).
        self.orphans: dict[int, bytes] = {}
        self.syncs = 0
        self._next_ino = ROOT_INO
        self._staged = 0
        if stage.exists():
            shutil.rmtree(stage)
        stage.mkdir(parents=True)
        backing.mkdir(parents=True, exist_ok=True)
        root = self._new(stat.S_IFDIR | (os.stat(backing).st_mode & 0o7777))
        root.links = 1
        self._load(root, backing)

    # Loading -----------------------------------------------------------------------------------

    def _new(self, mode: int) -> Inode:
        node = Inode(ino=self._next_ino, mode=mode)
        node.atime_ns = node.mtime_ns = node.ctime_ns = time.time_ns()
        self._next_ino += 1
        self.inodes[node.ino] = node
        return node

    def _load(self, directory: Inode, path: Path) -> None:
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                child = self._new(info.st_mode)
                self._load(child, Path(entry.path))
            elif stat.S_ISREG(info.st_mode):
                child = self._new(info.st_mode)
                child.data = bytearray(Path(entry.path).read_bytes())
            else:
                raise SandboxError(f"lazyfs: {entry.path} is neither a file nor a directory")
            child.mtime_ns = info.st_mtime_ns
            child.links = 1
            directory.entries[entry.name] = child.ino
        self.durable_entries[directory.ino] = dict(directory.entries)
        for name, ino in directory.entries.items():
            self.durable_links.setdefault(ino, set()).add((directory.ino, name))

    # Looking up --------------------------------------------------------------------------------

    def node(self, ino: int) -> Inode:
        try:
            return self.inodes[ino]
        except KeyError:
            raise fail(errno.EBADF) from None

    def lookup(self, path: str) -> Inode:
        node = self.inodes[ROOT_INO]
        for part in (p for p in path.split("/") if p):
            if not node.is_dir:
                raise fail(errno.ENOTDIR)
            ino = node.entries.get(part)
            if ino is None:
                raise fail(errno.ENOENT)
            node = self.inodes[ino]
        return node

    def _parent(self, path: str) -> tuple[Inode, str]:
        head, _, name = path.rstrip("/").rpartition("/")
        if not name:
            raise fail(errno.EBUSY)  # the root itself
        parent = self.lookup(head)
        if not parent.is_dir:
            raise fail(errno.ENOTDIR)
        return parent, name

    def attributes(self, node: Inode) -> dict[str, Any]:
        if node.is_dir:
            subdirs = sum(1 for ino in node.entries.values() if self.inodes[ino].is_dir)
            nlink, size = 2 + subdirs, PAGE_BYTES
        else:
            nlink, size = node.links, len(node.data)
        return {
            "st_mode": node.mode,
            "st_nlink": nlink,
            "st_size": size,
            "st_uid": node.uid,
            "st_gid": node.gid,
            "st_atime": node.atime_ns,
            "st_mtime": node.mtime_ns,
            "st_ctime": node.ctime_ns,
            "st_blksize": PAGE_BYTES,
            "st_blocks": (size + 511) // 512,
        }

    # Volatile changes --------------------------------------------------------------------------

    def create(self, path: str, mode: int, *, directory: bool = False) -> Inode:
        parent, name = self._parent(path)
        if name in parent.entries:
            raise fail(errno.EEXIST)
        kind = stat.S_IFDIR if directory else stat.S_IFREG
        node = self._new(kind | (mode & 0o7777))
        node.links = 1
        parent.entries[name] = node.ino
        parent.touch()
        return node

    def read(self, node: Inode, size: int, offset: int) -> bytes:
        return bytes(node.data[offset : offset + size])

    def write(self, node: Inode, data: bytes, offset: int) -> int:
        end = offset + len(data)
        if offset > len(node.data):
            node.dirty.update(range(len(node.data) // PAGE_BYTES, offset // PAGE_BYTES + 1))
            node.data.extend(bytes(offset - len(node.data)))
        node.data[offset:end] = data
        if data:
            node.dirty.update(range(offset // PAGE_BYTES, (end - 1) // PAGE_BYTES + 1))
        node.touch()
        return len(data)

    def truncate(self, node: Inode, length: int) -> None:
        if node.is_dir:
            raise fail(errno.EISDIR)
        old = len(node.data)
        if length < old:
            del node.data[length:]
        else:
            node.data.extend(bytes(length - old))
        low, high = min(old, length), max(old, length)
        if high > low:
            node.dirty.update(range(low // PAGE_BYTES, (high - 1) // PAGE_BYTES + 1))
        node.touch()

    def unlink(self, path: str, *, directory: bool = False) -> None:
        parent, name = self._parent(path)
        ino = parent.entries.get(name)
        if ino is None:
            raise fail(errno.ENOENT)
        node = self.inodes[ino]
        if directory and not node.is_dir:
            raise fail(errno.ENOTDIR)
        if not directory and node.is_dir:
            raise fail(errno.EISDIR)
        if directory and node.entries:
            raise fail(errno.ENOTEMPTY)
        del parent.entries[name]
        parent.touch()
        node.links -= 1
        self._collect(ino)

    def rename(self, old: str, new: str) -> None:
        source_dir, source_name = self._parent(old)
        target_dir, target_name = self._parent(new)
        ino = source_dir.entries.get(source_name)
        if ino is None:
            raise fail(errno.ENOENT)
        node = self.inodes[ino]
        replaced = target_dir.entries.get(target_name)
        if replaced == ino:
            return
        if node.is_dir and (new.rstrip("/") + "/").startswith(old.rstrip("/") + "/"):
            raise fail(errno.EINVAL)  # into its own subtree
        if replaced is not None:
            victim = self.inodes[replaced]
            if victim.is_dir and not node.is_dir:
                raise fail(errno.EISDIR)
            if node.is_dir and not victim.is_dir:
                raise fail(errno.ENOTDIR)
            if victim.is_dir and victim.entries:
                raise fail(errno.ENOTEMPTY)
        del source_dir.entries[source_name]
        target_dir.entries[target_name] = ino
        source_dir.touch()
        target_dir.touch()
        node.ctime_ns = time.time_ns()
        if replaced is not None:
            self.inodes[replaced].links -= 1
            self._collect(replaced)

    def opened(self, node: Inode) -> int:
        node.opens += 1
        return node.ino

    def released(self, node: Inode) -> None:
        node.opens -= 1
        self._collect(node.ino)

    def _collect(self, ino: int) -> None:
        """Forget an inode with no name, no open handle and no durable name."""
        node = self.inodes.get(ino)
        if node is None or node.links > 0 or node.opens > 0:
            return
        self.orphans.pop(ino, None)
        node.data = bytearray()
        if not self.durable_links.get(ino):
            del self.inodes[ino]

    # Durability --------------------------------------------------------------------------------

    def _durable_paths(self, ino: int, depth: int = 0) -> list[Path]:
        """Where ``ino`` is in the backing tree (usually one place; none if not durable)."""
        if ino == ROOT_INO:
            return [self.backing]
        if depth > 256:
            raise fail(errno.ELOOP)
        paths = []
        for directory, name in sorted(self.durable_links.get(ino, ())):
            paths += [p / name for p in self._durable_paths(directory, depth + 1)]
        return paths

    def fsync(self, node: Inode) -> None:
        """Make ``node`` durable: a file's contents, or a directory's entries."""
        self.syncs += 1
        if node.is_dir:
            self._sync_directory(node)
            return
        paths = self._durable_paths(node.ino)
        if not paths:
            self.orphans[node.ino] = bytes(node.data)
        for path in paths:
            self._apply(node, path)
        node.dirty.clear()

    def _apply(self, node: Inode, path: Path) -> None:
        """Write ``node``'s dirty pages (runs of them) and its length to ``path``."""
        with path.open("r+b") as file:
            pages = sorted(node.dirty)
            start = 0
            while start < len(pages):
                end = start
                while end + 1 < len(pages) and pages[end + 1] == pages[end] + 1:
                    end += 1
                low, high = pages[start] * PAGE_BYTES, (pages[end] + 1) * PAGE_BYTES
                chunk = node.data[low:high]
                if chunk:
                    file.seek(low)
                    file.write(chunk)
                start = end + 1
            file.truncate(len(node.data))
        os.chmod(path, node.mode & 0o7777)

    def _sync_directory(self, directory: Inode) -> None:
        new = dict(directory.entries)
        old = self.durable_entries.get(directory.ino, {})
        if new == old:
            return
        appearing = {name: ino for name, ino in new.items() if old.get(name) != ino}
        leaving = {name: ino for name, ino in old.items() if new.get(name) != ino}
        # 1. Nothing changed yet: stage the durable image of every entry that appears, and
        #    remember where the ones that leave are, in case it is their last durable name.
        staged = {name: self._stage(ino) for name, ino in appearing.items()}
        before = {ino: self._durable_paths(ino) for ino in leaving.values()}
        # 2. The durable maps.
        self.durable_entries[directory.ino] = new
        for name, ino in leaving.items():
            links = self.durable_links.get(ino, set())
            links.discard((directory.ino, name))
            if not links:
                self.durable_links.pop(ino, None)
        for name, ino in appearing.items():
            self.durable_links.setdefault(ino, set()).add((directory.ino, name))
        for ino, paths in before.items():
            node = self.inodes.get(ino)
            if self.durable_links.get(ino) or node is None:
                continue
            if node.links > 0 or node.opens > 0:
                if not node.is_dir and paths:
                    self.orphans[ino] = paths[0].read_bytes()
            else:
                self._forget_durable(ino)
        # 3. The backing tree, wherever this directory is in it.
        places = self._durable_paths(directory.ino)
        for index, place in enumerate(places):
            for name in leaving:
                _remove(place / name)
            for name, source in staged.items():
                if index == len(places) - 1:
                    _remove(place / name)
                    os.replace(source, place / name)
                else:
                    _copy(source, place / name)
        for path in staged.values():
            _remove(path)
        for ino in [i for i in self.orphans if self.durable_links.get(i)]:
            if self._durable_paths(ino):
                del self.orphans[ino]

    def _forget_durable(self, ino: int) -> None:
        """``ino`` has no name and no durable name: drop it and what it durably held."""
        for child in self.durable_entries.pop(ino, {}).values():
            links = self.durable_links.get(child, set())
            links = {link for link in links if link[0] != ino}
            if links:
                self.durable_links[child] = links
            else:
                self.durable_links.pop(child, None)
                self._collect(child)
        self._collect(ino)

    def _stage(self, ino: int) -> Path:
        """A copy, in the stage, of the durable image ``ino`` brings to a new durable name."""
        self._staged += 1
        target = self.stage / f"{ino}.{self._staged}"
        node = self.inodes[ino]
        existing = self._durable_paths(ino)
        if existing:
            _copy(existing[0], target)
        elif node.is_dir:
            target.mkdir()
            for name, child in self.durable_entries.get(ino, {}).items():
                os.replace(self._stage(child), target / name)
        else:
            target.write_bytes(self.orphans.get(ino, b""))
        os.chmod(target, node.mode & 0o7777)
        return target


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _copy(source: Path, target: Path) -> None:
    _remove(target)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copyfile(source, target)


# The harness side -------------------------------------------------------------------------------


def fuse_preflight() -> str | None:
    """Why this machine cannot mount lazyfs, in one line; None when it can."""
    if not os.path.exists("/dev/fuse"):
        return "power loss needs /dev/fuse (the fuse kernel module)"
    if shutil.which("fusermount3") is None:
        return "power loss needs libfuse 3 and fusermount3: apt-get install -y fuse3"
    return None


def _unescape(field_text: str) -> str:
    """A path field of /proc/self/mountinfo (spaces and such are octal escapes)."""
    return field_text.encode().decode("unicode_escape").encode("latin-1").decode()


def lazy_mounts() -> list[tuple[str, str]]:
    """(mount point, fsname) of every lazyfs mount in this mount namespace."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        tail = fields[fields.index("-") + 1 :]
        if tail[0] == FS_TYPE:
            found.append((_unescape(fields[4]), _unescape(tail[1])))
    return found


def remove_stale_mounts(alive: Any) -> list[str]:
    """Detach lazyfs mounts whose harness is gone (``alive(pid)`` false for the pid in its
    fsname ``jl-lazyfs-<pid>-…``); the mount points detached."""
    removed = []
    for mountpoint, name in lazy_mounts():
        parts = name.split("-")
        pid = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else None
        if pid is not None and alive(pid):
            continue
        run(["umount", "-l", mountpoint])
        removed.append(mountpoint)
    return removed


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class LazyMount:
    """One lazyfs mount of ``backing`` at ``mountpoint``, served by a daemon process this
    object starts (and stops, by its PID). ``name`` (the fsname) must start with
    ``jl-lazyfs-<harness pid>-`` so that a later harness can tell a stale mount."""

    def __init__(
        self, backing: Path, mountpoint: Path, *, name: str, log: Path, python: str = sys.executable
    ) -> None:
        self.backing = backing
        self.mountpoint = mountpoint
        self.name = name
        self.log = log
        self.python = python
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def serving(self) -> bool:
        """The daemon was started and has not exited."""
        return self.process is not None and self.process.poll() is None

    def errors(self) -> list[str]:
        """Lines of the daemon's log that report an unexpected exception in a callback (a bug
        of lazyfs: the caller saw EINVAL)."""
        if not self.log.exists():
            return []
        lines = self.log.read_text(errors="replace").splitlines()
        return [line for line in lines if "Uncaught" in line or "Traceback" in line]

    @property
    def mounted(self) -> bool:
        target = str(self.mountpoint)
        return any(m == target and n == self.name for m, n in lazy_mounts())

    def mount(self) -> None:
        """Start the daemon; return once the mount is up (SandboxError if it does not come)."""
        if self.mounted:
            raise SandboxError(f"lazyfs is already mounted at {self.mountpoint}")
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        package_dir = str(Path(__file__).resolve().parent.parent)
        path = os.pathsep.join(p for p in (package_dir, os.environ.get("PYTHONPATH")) if p)
        command = [
            self.python, "-m", "jepsen_lite._lazyfs_daemon",
            str(self.backing), str(self.mountpoint), "--name", self.name,
        ]  # fmt: skip
        with self.log.open("ab") as log_file:
            self.process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": path},
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + MOUNT_WAIT_S
        while not self.mounted:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.power_off()
                tail = self.log.read_text(errors="replace")[-2000:]
                raise SandboxError(f"lazyfs did not mount at {self.mountpoint}: {tail}")
            time.sleep(0.02)

    def power_off(self) -> None:
        """The power cut: SIGKILL the daemon (the kernel aborts the connection and drops the
        mount's dirty pages), detach the mount. Only what was durable is left in ``backing``.
        Safe to call when it is already off."""
        process = self.process
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(MOUNT_WAIT_S)
        self.process = None
        if self.mounted:
            run(["umount", "-l", str(self.mountpoint)])

    def unmount(self) -> None:
        """A clean unmount (what was not synced is dropped all the same); falls back to
        `power_off` if the daemon does not exit in time."""
        process = self.process
        if self.mounted:
            try:
                run(["umount", str(self.mountpoint)])
            except SandboxError:
                self.power_off()
                return
        if process is not None:
            try:
                process.wait(MOUNT_WAIT_S)
            except subprocess.TimeoutExpired:
                self.power_off()
        self.process = None
