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

Readers and outputs: the cells of a benchmark share one run (its ``stage1.pt`` and ``masks.pt``) and each writes
its own student. ``mst distill`` and ``mst eval`` therefore hold the run's lock *shared* (any number at once; a
stage that rewrites the run's common files, ``mst train`` or ``mst fit-masks``, holds it exclusively and is
refused while they read) and an exclusive lock on each file or folder they write (``.<name>.lock`` beside it), so
two stages writing the same student still stop each other. A shared holder leaves the file for the others and
removes it only when it finds itself the last one.

Where flock does not work (some network file systems answer ENOLCK or EOPNOTSUPP), a stage says so once and
falls back to lock files made with ``O_CREAT | O_EXCL``: ``<lock>.held`` with the writer's host and pid, and one
file per reader in ``<lock>.readers/``. A holder on this host whose pid is gone is taken over; one on another
host is always taken as running (its pid cannot be asked), so a crash there leaves a file to remove by hand, and
the message names it.

Limits: flock is advisory (only processes that ask for it are stopped); a child made by ``fork`` without ``exec``
shares its parent's lock and keeps it until it ends, also after the parent died (the message then says so); where
the file cannot be made (a read-only run folder) the stage runs unlocked, as before, with a warning, since the
lock protects the run and should not stop a stage that could work.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator, Sequence
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
def run_lock(
    folder: Path, run: str, command: str, shared: bool = False, outputs: Sequence[Path] = ()
) -> Iterator[None]:
    """Hold the lock of the run whose files live in ``folder`` (``models/<run>``) for the ``with`` block.

    ``command`` names the stage in the message another process gets (``mst train``). ``shared``: the stage only
    reads the run's common files, so other shared holders may hold it at the same time; then every path in
    ``outputs`` (the files or folders the stage writes) is locked exclusively as well. Raises UserError when
    another process holds what is needed. Under torchrun the ranks other than 0 enter without locking (see the
    module docstring).
    """
    if os.environ.get("RANK", "0") != "0":
        yield
        return
    fallback = _Fallback()
    held: list[_RunLock] = []
    try:
        held.append(_RunLock.acquire(Path(folder) / LOCK_NAME, _RunTarget(run), command, shared, fallback))
        for output in outputs:
            output = Path(output)
            lock_path = output.parent / f".{output.name}.lock"
            held.append(_RunLock.acquire(lock_path, _OutputTarget(output), command, False, fallback))
        yield
    finally:
        for lock in reversed(held):
            lock.release()


@dataclass(frozen=True)
class _RunTarget:
    """What a run's lock protects, for the messages."""

    run: str

    def name(self) -> str:
        return f"run '{self.run}'"

    def hint(self) -> str:
        return "wait for it or use another common.run"


@dataclass(frozen=True)
class _OutputTarget:
    path: Path

    def name(self) -> str:
        return str(self.path)

    def hint(self) -> str:
        return "wait for it or write to another --out / --results"


@dataclass
class _Fallback:
    """The lock-file fallback of one stage: whether it is in use, so that the stage warns once, not per lock."""

    warned: bool = False

    def note(self, path: Path, exc: OSError) -> None:
        if self.warned:
            return
        self.warned = True
        from mstcli.ui import logger

        logger().warning(
            f"file locks (flock) do not work on the file system of {path.parent} ({exc.strerror or exc}): using lock"
            " files with host and pid instead; a holder on another host is never taken as gone"
        )


def _flock_unsupported(exc: OSError) -> bool:
    return exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


@dataclass
class _RunLock:
    """A held lock: the open file with the flock (or the fallback's own file), and the folders made for it
    (removed on release when empty)."""

    path: Path
    fd: int | None  # None: running unlocked (the file could not be made) or under the fallback
    made: list[Path]
    shared: bool = False
    fallback_file: Path | None = None  # under the fallback: this holder's .held or reader file

    @classmethod
    def acquire(cls, path: Path, target, command: str, shared: bool, fallback: _Fallback) -> _RunLock:
        folder = path.parent
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
                    return cls._unlocked(path, target, made, exc)
                try:
                    fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                except BlockingIOError:
                    # asked again until the deadline: a reader that finishes last takes the lock alone for a moment
                    # to remove the file (release), which must not refuse another stage
                    holder = Holder.parse(_read(fd))
                    readers = not shared and _only_readers(fd)
                    os.close(fd)
                    final = time.monotonic() >= deadline
                    if readers and final:
                        _refuse_readers(target, holder)
                    if not readers:
                        _refuse_if_known(target, path, holder, final=final)
                    time.sleep(RETRY_S)
                    continue
                except OSError as exc:
                    empty = os.fstat(fd).st_size == 0  # made by this open: nobody's record, leave nothing behind
                    os.close(fd)
                    if empty:
                        path.unlink(missing_ok=True)
                    if _flock_unsupported(exc):
                        fallback.note(path, exc)
                        return cls._by_files(path, target, command, shared, made)
                    return cls._unlocked(path, target, made, exc)
                if not _names(path, fd):  # locked a file its holder had just removed: start over
                    os.close(fd)
                    continue
                left = Holder.parse(_read(fd))
                if left is not None and not shared:
                    _debug(f"{target.name()}: taking over {path} from {left.describe()}, which no longer holds it")
                _write(fd, Holder.this_process(command).to_json())
                return cls(path, fd, made, shared)
        except BaseException:
            _remove_empty(made)
            raise

    @classmethod
    def _unlocked(cls, path: Path, target, made: list[Path], exc: OSError) -> _RunLock:
        from mstcli.ui import logger

        logger().warning(
            f"cannot lock {target.name()} ({path}: {exc.strerror or exc}); running without the lock, so another mst "
            f"on {target.name()} at the same time is not stopped"
        )
        return cls(path, None, made)

    @classmethod
    def _by_files(cls, path: Path, target, command: str, shared: bool, made: list[Path]) -> _RunLock:
        """The fallback: ``<lock>.held`` made exclusively by a writer, a file per reader in ``<lock>.readers/``."""
        me = Holder.this_process(command)
        held = path.with_name(path.name + ".held")
        readers = path.with_name(path.name + ".readers")
        for _ in range(2):  # a second try after taking over a file left by a process that is gone
            writer = Holder.parse(_read_file(held)) if held.exists() else None
            if writer is not None and not writer.running():
                _debug(f"{target.name()}: taking over {held} from {writer.describe()}, which is gone")
                held.unlink(missing_ok=True)
                continue
            if writer is not None or held.exists():
                raise UserError(f"{target.name()} is in use by {_who(writer, held)}; {target.hint()}")
            if shared:
                readers.mkdir(exist_ok=True)
                mine = readers / f"{me.host}-{me.pid}.json"
                mine.write_text(me.to_json())
                if held.exists():  # a writer came in between: let it have the run
                    mine.unlink(missing_ok=True)
                    continue
                return cls(path, None, made, True, mine)
            try:
                fd = os.open(held, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w") as out:
                out.write(me.to_json())
            live = [h for h in _reader_records(readers) if h.running()]
            if live:
                held.unlink(missing_ok=True)
                _refuse_readers(target, live[0])
            return cls(path, None, made, False, held)
        raise UserError(f"{target.name()} is in use by another process (it holds {held}); {target.hint()}")

    def release(self) -> None:
        """Remove the file (only if it is still this lock's, and for a shared holder only when it is the last
        reader) while holding the flock, then let go of it."""
        if self.fallback_file is not None:
            self.fallback_file.unlink(missing_ok=True)
            if self.shared:
                _remove_empty([self.fallback_file.parent])
        if self.fd is not None:
            try:
                if self.shared:  # the last reader removes the file: it is the last if it can take it alone
                    fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if _names(self.path, self.fd):
                    self.path.unlink()
            except OSError:  # other readers still hold it (BlockingIOError), or it is gone
                pass
            finally:
                os.close(self.fd)
                self.fd = None
        _remove_empty(self.made)


def _only_readers(fd: int) -> bool:
    """Whether the holders of the file ``fd`` are readers: a shared lock is then granted (and let go at once)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


def _refuse_readers(target, holder: Holder | None) -> None:
    who = f" ({holder.describe()} among them)" if holder is not None and holder.running() else ""
    raise UserError(f"{target.name()} is being read by other mst stages{who}; {target.hint()}")


def _who(holder: Holder | None, path: Path) -> str:
    if holder is None:
        return f"another process (it holds {path})"
    gone = "" if holder.here() else f"; if that process has ended, remove {path}"
    return f"{holder.describe()}{gone}"


def _read_file(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _reader_records(folder: Path) -> list[Holder]:
    if not folder.is_dir():
        return []
    records = []
    for entry in folder.iterdir():
        holder = Holder.parse(_read_file(entry))
        if holder is None:
            continue
        if not holder.running():
            entry.unlink(missing_ok=True)  # a reader that is gone
            continue
        records.append(holder)
    return records


def _refuse_if_known(target, path: Path, holder: Holder | None, final: bool) -> None:
    """Raise the refusal at the deadline (``final``). Until then the file is read again: the holder writes its
    record right after taking the flock (until then the file may still hold the record of a killed process it took
    over from), and a reader that finishes last holds the file alone for a moment to remove it."""
    hint = target.hint()
    if holder is not None and holder.pid == os.getpid() and holder.here():
        raise RuntimeError(
            f"{path}: this process already holds the lock of {target.name()} (a stage inside a stage)"
        )
    if not final:
        return
    if holder is not None and holder.running():
        raise UserError(f"{target.name()} is in use by {holder.describe()}; {hint}")
    if holder is None:
        raise UserError(f"{target.name()} is in use by another process (it holds {path}); {hint}")
    raise UserError(
        f"{target.name()} is in use: {holder.describe()} is gone, but a process it started still holds {path}; {hint}"
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
