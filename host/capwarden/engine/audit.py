"""The audit log's writer: an append-only, hash-chained record of every decision (the file's
format, its check and its repair are auditfile.py's, re-exported here).

Durability: every line is on disk (fdatasync) before the decision it records is acknowledged.
By default `record()` writes the whole line with one write() and syncs before it returns. In
group-commit mode (the server turns it on, because it awaits `durable()` before it sends
anything) `record()` only queues the line; one flush at the next turn of the event loop writes
and syncs every line queued so far, so concurrent decisions share it. That flush writes through
O_DIRECT into zeros preallocated ahead of the log (directlog.py), so that it costs the disk's
cache flush alone; a crash loses only lines whose decision nobody was told about.

A torn last line (a crash or power loss mid-write, before its sync, so never acknowledged) is
reported with the entries before it. The engine does not start over it unless asked to repair:
`repair_torn_tail()` (`capwarden audit --repair`) moves the torn bytes aside into a file and the
chain goes on, with an `audit_repair` entry saying what was moved where.
"""

import asyncio
import hashlib
import logging
import os
import threading
import time

from capwarden.engine import directlog
from capwarden.engine.auditfile import (BROKEN, GENESIS, TORN, Check, advice, canonical, read, repair_torn_tail,
                                        sync_dir, truncate, verify, write_all)
from capwarden.errors import StoreError

__all__ = ["AuditLog", "Check", "verify", "read", "repair_torn_tail", "GENESIS", "TORN", "BROKEN"]

PREALLOCATE = 1 << 20  # bytes of zeros written ahead of the log in group-commit mode
DIRECT = True          # group commit writes through O_DIRECT where the file system takes it

log = logging.getLogger("capwarden.audit")
_fdatasync = getattr(os, "fdatasync", os.fsync)


class AuditLog:
    """The engine's log. `AuditLog(None)` keeps the chain in memory only (unit tests).

    Raises StoreError when the log at `path` does not verify: a broken chain always, a torn last
    line unless `repair` is true (then the torn tail is moved aside, see repair_torn_tail, and an
    `audit_repair` entry records it).
    """

    def __init__(self, path, repair=False):
        self.path = path
        self._lock = threading.Lock()
        self.seq = 0
        self.last = GENESIS
        self._file = None
        self._size = 0            # bytes of whole lines written
        self._synced = 0          # of which on disk
        self._synced_seq = 0
        self._grouped = False
        self._alloc = None        # in group-commit mode: the file's preallocated end (zeros past _size)
        self._direct = None       # in group-commit mode: a directlog.DirectAppender, when O_DIRECT works
        self._flush_soon = False  # a flush is scheduled on the event loop
        self._failed = None       # why appends are refused (a failed sync: the file's state is unknown)
        self.syncs = 0            # fdatasync calls, for benchmarks and tests
        self.last_repair = repaired = None     # (aside path, bytes) when this opening repaired a torn tail
        if path and os.path.exists(path):
            try:
                c = verify(path)
            except OSError as exc:
                raise StoreError("cannot read the audit log %s: %s" % (path, exc.strerror or exc)) from None
            if c.kind == TORN and repair:
                self.last_repair = repaired = repair_torn_tail(path)
                c = verify(path)
            if c.problem:
                raise StoreError("audit log %s: %s. %s" % (path, c.problem, advice(c, path)))
            if c.size > c.good_bytes:          # zeros preallocated by a writer that did not close
                truncate(path, c.good_bytes)
            if c.entries:
                self.seq = c.entries[-1]["seq"]
                self.last = c.entries[-1]["hash"]
            self._size = self._synced = c.good_bytes
            self._synced_seq = self.seq
        if repaired:
            log.warning("audit log %s: moved a torn last line (%d bytes) to %s", path, repaired[1], repaired[0])
            self.record("audit_repair", "done", "torn_tail", detail="moved %d bytes of a torn last line to %s" % (
                repaired[1], os.path.basename(repaired[0])))

    # ---- appending ------------------------------------------------------------------------------
    def record(self, action, outcome, reason="", **fields):
        """Append one entry and return it. Durable when this returns, except in group-commit mode,
        where it goes to disk with the flush at the next turn of the event loop, and `durable()`
        waits for that. Raises StoreError if it cannot be written; the chain then stays at the
        last entry written."""
        with self._lock:
            entry = {"seq": self.seq + 1, "ts": int(time.time()), "action": action, "outcome": outcome,
                     "reason": reason}
            entry.update({k: v for k, v in fields.items() if v is not None})
            entry["prev"] = self.last
            body = canonical(entry)
            entry["hash"] = hashlib.sha256(body.encode()).hexdigest()
            if self.path:
                # The same canonical text, hash appended: one encoding per entry. verify() parses
                # the line, so the key order of the line itself does not matter.
                line = (body[:-1] + ',"hash":"' + entry["hash"] + '"}\n').encode()
                if self._direct is not None:
                    if self._failed:
                        raise StoreError(self._failed)
                    self._direct.add(line)          # written by the flush at the next turn
                    self._size += len(line)
                else:
                    self._write(line)
            self.seq, self.last = entry["seq"], entry["hash"]
            if self.path and not self._grouped:
                self._sync_locked()
            elif self.path and not self._flush_soon:
                self._schedule_flush()
            return entry

    def _schedule_flush(self):
        # Every entry reaches the disk within a turn of the loop, whether or not an answer waits.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._sync_locked()
            return
        self._flush_soon = True
        loop.call_soon(self._flush_now)

    def _flush_now(self):
        with self._lock:
            self._flush_soon = False
            if not self._failed:
                try:
                    self._sync_locked()
                except StoreError as exc:   # durable() raises it to whoever waits for this entry
                    log.error("%s", exc)

    def _write(self, data):
        if self._failed:
            raise StoreError(self._failed)
        try:
            self._open()
            if self._alloc is not None and self._size + len(data) > self._alloc:
                self._preallocate(len(data))
            write_all(self._file.fileno(), data, self._size)
        except OSError as exc:
            # A partial line (disk full) is cut off again, or the next entry would follow garbage.
            if self._file is not None:
                try:
                    os.ftruncate(self._file.fileno(), self._size)
                    self._alloc = None
                except OSError:
                    self._failed = "the audit log %s has a partial line that could not be cut off" % self.path
            raise StoreError("cannot append to the audit log %s: %s" % (self.path, exc.strerror or exc)) from None
        self._size += len(data)

    def _open(self):
        if self._file is None:
            created = not os.path.exists(self.path)
            # A file object (unbuffered), so a log dropped without close() still closes its fd.
            # Not O_APPEND: lines go at the end of the verified lines, over preallocated zeros.
            self._file = open(self.path, "r+b" if not created else "w+b", buffering=0,
                              opener=lambda p, fl: os.open(p, fl | getattr(os, "O_CLOEXEC", 0), 0o600))
            if created:
                sync_dir(self.path)

    def _preallocate(self, need=0):
        """Write zeros ahead of the log and sync them once, so that the fdatasync of each later
        line changes no metadata (no journal commit, about 30 us less per sync here). On any
        error, plain appends go on."""
        fd = self._file.fileno()
        start = self._size if self._alloc is None else self._alloc
        end = self._size + max(need, 0) + PREALLOCATE
        try:
            write_all(fd, bytes(end - start), start)
            _fdatasync(fd)
        except OSError:
            try:
                os.ftruncate(fd, self._synced if self._direct is not None else self._size)
            except OSError:
                pass
            self._alloc = None
            return
        self._alloc = end

    def _direct_on(self):
        keep = self._size % directlog.BLOCK
        head = os.pread(self._file.fileno(), keep, self._size - keep)
        try:
            self._direct = directlog.DirectAppender(self.path, self._size, head)
        except OSError:
            self._direct = None                     # no O_DIRECT here (tmpfs): the page cache it is

    def _direct_off(self):
        if self._direct is not None:
            direct, self._direct = self._direct, None
            direct.close()

    def _give_back(self):
        """Cut preallocated zeros off again (the log ends with its last line). Raises OSError."""
        if self._alloc is not None:
            self._alloc = None
            os.ftruncate(self._file.fileno(), self._size)
            os.fsync(self._file.fileno())

    def _sync_locked(self):
        if self._synced == self._size:
            return
        size, seq = self._size, self.seq
        try:
            if self._direct is not None:
                if self._alloc is not None and self._direct.blocks_end() > self._alloc:
                    self._preallocate(self._direct.blocks_end() - self._size)
                self._direct.flush(_fdatasync)
            else:
                _fdatasync(self._file.fileno())
        except OSError as exc:
            # After a failed sync the kernel may have dropped the pages: a later sync that
            # succeeds proves nothing about them. Fail closed: no more appends.
            self._failed = "the audit log %s could not be synced (%s): restart the engine" % (
                self.path, exc.strerror or exc)
            raise StoreError(self._failed) from None
        self.syncs += 1
        self._synced, self._synced_seq = max(self._synced, size), max(self._synced_seq, seq)

    # ---- group commit ---------------------------------------------------------------------------
    def group_commit(self, on):
        """Turn group-commit mode on or off. Whoever turns it on must await `durable()` before
        acknowledging any decision. Turning it off syncs what is pending. Raises StoreError."""
        with self._lock:
            self._grouped = bool(on)
            if not self.path:
                return
            try:
                self._open()
                if on and self._alloc is None and not self._failed:
                    self._sync_locked()
                    self._alloc = self._size
                    self._preallocate()
                    if DIRECT and self._alloc is not None:
                        self._direct_on()
                elif not on:
                    self._sync_locked()
                    self._direct_off()
                    self._give_back()
            except OSError as exc:
                raise StoreError("audit log %s: %s" % (self.path, exc.strerror or exc)) from None

    @property
    def pending(self):
        """Entries written but not yet synced."""
        return self.seq - self._synced_seq

    async def durable(self, upto=None):
        """Return once every entry recorded so far (up to seq `upto` when given) is on disk.
        Raises StoreError.

        It first lets the event loop run the other tasks that are ready (the answers of a batch
        of board replies read together, say), so every decision that gets here in that turn
        shares one fdatasync: the first of them to go on syncs, the others find it done. The sync
        runs on the loop's thread: handing it to a worker thread costs more (about 50 us here)
        than it saves at one request at a time.
        """
        target = self.seq if upto is None else min(upto, self.seq)
        if self._synced_seq >= target or not self.path:
            return
        await asyncio.sleep(0)
        if self._synced_seq >= target:
            return
        with self._lock:
            if self._failed:
                raise StoreError(self._failed)
            self._sync_locked()

    def sync(self):
        """Sync every entry written so far (blocking). Raises StoreError."""
        if self._file is not None:
            with self._lock:
                self._sync_locked()

    def close(self):
        """Sync what is pending and close the file. Raises StoreError if the sync fails."""
        with self._lock:
            if self._file is not None:
                try:
                    if not self._failed:
                        self._sync_locked()
                        self._direct_off()
                        self._give_back()
                except OSError as exc:
                    raise StoreError("audit log %s: %s" % (self.path, exc.strerror or exc)) from None
                finally:
                    self._direct_off()
                    self._file.close()
                    self._file = None
