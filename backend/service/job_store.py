"""The training jobs' records and files: one SQLite table, and readers for a job's events and log.

Standard library only. The database is in WAL mode with short transactions, so several threads and
processes (two services on one checkpoints folder) may open it at once; a write takes the lock up front
(BEGIN IMMEDIATE), so two readers that both decide to update cannot lose one of the updates.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
from contextlib import contextmanager
from pathlib import Path

from backend.core.errors import NotFoundError, short
from backend.core.runtime import pid_alive  # noqa: F401 (re-exported: backend.service.jobs, tests)

STATES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
_JOB_ID_RE = re.compile(r"^[0-9a-f]{12}$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, name TEXT NOT NULL, method TEXT NOT NULL, config TEXT NOT NULL,
    device TEXT NOT NULL, state TEXT NOT NULL, pid INTEGER, owner TEXT,
    created REAL NOT NULL, started REAL, finished REAL, checkpoint TEXT, error TEXT,
    exit_code INTEGER, attempts INTEGER NOT NULL DEFAULT 0, resume INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0)
"""


class JobStore:
    """The jobs table of one database file (created on first use)."""

    def __init__(self, db_path: str | os.PathLike):
        self.db_path = Path(db_path)
        with self.db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)

    @contextmanager
    def db(self, write: bool = False):
        db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA busy_timeout=30000")
            if write:
                db.execute("BEGIN IMMEDIATE")  # take the write lock up front: no lost updates between readers
            yield db
            if write:
                db.execute("COMMIT")
        except BaseException:
            if write and db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def row(self, job_id: str) -> sqlite3.Row:
        """The record of `job_id`; NotFoundError for an id that is malformed or unknown."""
        if not isinstance(job_id, str) or not _JOB_ID_RE.match(job_id):
            raise NotFoundError(f"unknown job id {short(job_id)}")
        with self.db() as db:
            row = db.execute("SELECT * FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"unknown job id {short(job_id)}")
        return row


def read_events(path: Path, tail_bytes: int | None = None) -> list[dict]:
    """Parse a JSON-lines events file; a half-written last line (writer mid-flush) is skipped."""
    try:
        with open(path, "rb") as f:
            if tail_bytes is not None:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - tail_bytes))
            data = f.read()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    if tail_bytes is not None and len(data) >= tail_bytes:
        lines = lines[1:]  # the first line is probably cut
    out = []
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict):
            out.append(ev)
    return out


def tail_lines(path: Path, n: int) -> str:
    """The last n lines of a text file ("" when it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256 * n - 4096))
            data = f.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-n:])
