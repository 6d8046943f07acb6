"""One writer per run: the lock a stage holds on ``models/<run>/`` while it writes the run's files.

Two ``mst train -S common.run=x`` at once used to collide: both kept their resume state in ``models/x/.resume/``
and one removed the folder under the other (engine/resume.py), so the other died with a traceback. Now every stage
that writes into ``models/<run>/`` or ``results/<run>/`` runs inside :func:`run_lock`, and a second process on the
same run stops at once, before any work, with a one-line :class:`UserError` naming the holder::

    error: run 'x' is in use by pid 1234 (mst train, since 12:03:04); wait for it or use another common.run

Why ``fcntl.flock`` on ``models/<run>/.lock`` and not a pid file made with ``O_CREAT | O_EXCL``: the kernel
releases a flock when its holder ends, however it ends (SIGKILL, the OOM killer, a crash), so a lock left by a
dead process is simply free and nothing has to guess. A pid file has to be judged stale by asking whether its pid
still runs: wrong once the pid is reused, impossible for a pid of another host, and taking over a stale file
races (two processes both find it stale, both replace it, both go on). The file's content here (pid, host,
command, start time; JSON) only says who holds the lock, for the message; it never decides who does.

What keeps the flock right:

- The holder removes the file on release while it still holds the lock. A process that opened the old file just
  before may then get its flock; it checks that the path still names the file it locked and starts over if not,
  so two processes never hold two different files of one run.
- A file left by a killed process has no flock on it: the next stage takes it over silently (a debug line names
  the old holder).
- The lock is released on every way out of the ``with`` block (success, UserError, KeyboardInterrupt, a bug), and
  the folders the lock made (a refused or failed stage on a new run) are removed again when empty.
- Under torchrun only rank 0 (``RANK``) takes the lock, for the whole job: the other ranks write nothing
  (engine/distributed.py), and when rank 0 is refused it exits with the error and torchrun stops the others. The
  stages take the lock before the process group exists, so ``RANK`` from the environment decides.

Limits: flock is advisory (only processes that ask for it are stopped); a child made by ``fork`` without ``exec``
shares its parent's lock and keeps it until it ends, also after the parent died (the message then says so); where
the file cannot be made or locked (a read-only run folder, a filesystem without locks) the stage runs unlocked,
as before, with a warning, since the lock protects the run and should not stop a stage that could work.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from mstcli.errors import UserError

LOCK_NAME = ".lock"
#: how long a refused process waits for the holder to have written who it is (it writes right after its flock)
HOLDER_WAIT_S = 1.0
RETRY_S = 0.05


@dataclass(frozen=True)
class Holder:
    """Who holds a run's lock: what its file records, for the message of a refused process."""

    pid: int
    host: str
    command: str  # the stage's command, e.g. "mst train"
    since: str  # ISO 8601 local time with its UTC offset
    argv: tuple[str, ...] = ()

    @classmethod
    def this_process(cls, command: str) -> Holder:
        since = datetime.now().astimezone().isoformat(timespec="seconds")
        return cls(os.getpid(), socket.gethostname(), command, since, tuple(sys.argv))

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        """The holder a lock file records; None for an empty, half-written or foreign file."""
        try:
            data = json.loads(text)
            argv = tuple(str(a) for a in data.get("argv", ()))
            return cls(int(data["pid"]), str(data["host"]), str(data["command"]), str(data["since"]), argv)
        except (ValueError, TypeError, KeyError):
            return None

    def to_json(self) -> str:
        return json.dumps(asdict(self)) + "\n"

    def here(self) -> bool:
        return self.host == socket.gethostname()

    def running(self) -> bool:
        """Whether the recorded pid still runs; True when that cannot be known (another host)."""
        if not self.here():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # it runs, as another user
            return True
        return True

    def describe(self) -> str:
        """``pid 1234 (mst train, since 12:03:04)``; the host when it is another, the date when it is not today."""
        try:
            started = datetime.fromisoformat(self.since)
            today = started.date() == datetime.now(started.tzinfo).date()
            since = started.strftime("%H:%M:%S" if today else "%Y-%m-%d %H:%M:%S")
        except ValueError:
            since = self.since
        where = "" if self.here() else f" on {self.host}"
        return f"pid {self.pid}{where} ({self.command}, since {since})"


@contextmanager
def run_lock(folder: Path, run: str, command: str) -> Iterator[None]:
    """Hold the exclusive lock of the run whose files live in ``folder`` (``models/<run>``) for the ``with`` block.

    ``command`` names the stage in the message another process gets (``mst train``). Raises UserError when another
    process holds the lock. Under torchrun the ranks other than 0 enter without locking (see the module docstring).
    """
    if os.environ.get("RANK", "0") != "0":
        yield
        return
    lock = _RunLock.acquire(Path(folder), run, command)
    try:
        yield
    finally:
        lock.release()


@dataclass
class _RunLock:
    """A held lock: the open file with the flock, and the folders made for it (removed on release when empty)."""

    path: Path
    fd: int | None  # None: running unlocked (the file could not be made or locked)
    made: list[Path]

    @classmethod
    def acquire(cls, folder: Path, run: str, command: str) -> _RunLock:
        path = folder / LOCK_NAME
        made: list[Path] = []
        deadline = time.monotonic() + HOLDER_WAIT_S
        try:
            while True:
                made += [f for f in _missing(folder) if f not in made]
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                except FileNotFoundError:  # a holder's release removed the folder in between: make it again
                    continue
                except OSError as exc:
                    return cls._unlocked(path, run, made, exc)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = Holder.parse(_read(fd))
                    os.close(fd)
                    _refuse_if_known(run, path, holder, final=time.monotonic() >= deadline)
                    time.sleep(RETRY_S)
                    continue
                except OSError as exc:
                    empty = os.fstat(fd).st_size == 0  # made by this open: nobody's record, leave nothing behind
                    os.close(fd)
                    if empty:
                        path.unlink(missing_ok=True)
                    return cls._unlocked(path, run, made, exc)
                if not _names(path, fd):  # locked a file its holder had just removed: start over
                    os.close(fd)
                    continue
                left = Holder.parse(_read(fd))
                if left is not None:
                    _debug(f"run '{run}': taking over {path} from {left.describe()}, which no longer holds it")
                _write(fd, Holder.this_process(command).to_json())
                return cls(path, fd, made)
        except BaseException:
            _remove_empty(made)
            raise

    @classmethod
    def _unlocked(cls, path: Path, run: str, made: list[Path], exc: OSError) -> _RunLock:
        from mstcli.ui import logger

        logger().warning(
            f"cannot lock run '{run}' ({path}: {exc.strerror or exc}); running without the lock, so another mst "
            "on this run at the same time is not stopped"
        )
        return cls(path, None, made)

    def release(self) -> None:
        """Remove the file (only if it is still this lock's) while holding the flock, then let go of it."""
        if self.fd is not None:
            try:
                if _names(self.path, self.fd):
                    self.path.unlink()
            except OSError:
                pass
            finally:
                os.close(self.fd)
                self.fd = None
        _remove_empty(self.made)


def _refuse_if_known(run: str, path: Path, holder: Holder | None, final: bool) -> None:
    """Raise the refusal once the holder is known. An empty or unreadable file, or one naming a pid of this host
    that is gone, is read again until ``final``: the holder writes its record right after taking the flock (and
    until then the file may still hold the record of the killed process it took over from)."""
    hint = "wait for it or use another common.run"
    if holder is not None and holder.pid == os.getpid() and holder.here():
        raise RuntimeError(f"{path}: this process already holds the lock of run '{run}' (a stage inside a stage)")
    if holder is not None and holder.running():
        raise UserError(f"run '{run}' is in use by {holder.describe()}; {hint}")
    if not final:
        return
    if holder is None:
        raise UserError(f"run '{run}' is in use by another process (it holds {path}); {hint}")
    raise UserError(
        f"run '{run}' is in use: {holder.describe()} is gone, but a process it started still holds {path}; {hint}"
    )


def _missing(folder: Path) -> list[Path]:
    """``folder`` and its parents that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first; stop at the first that is not empty (or gone)
        try:
            folder.rmdir()
        except OSError:
            return


def _names(path: Path, fd: int) -> bool:
    """Whether ``path`` is still the file open as ``fd``."""
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def _read(fd: int) -> str:
    return os.pread(fd, 65536, 0).decode(errors="replace")


def _write(fd: int, text: str) -> None:
    data = text.encode()
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))


def _debug(note: str) -> None:
    from mstcli.ui import logger

    logger().debug(note)
