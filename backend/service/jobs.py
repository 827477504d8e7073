"""Training jobs: one `python -m backend.train` process per job, records in SQLite, events in JSON lines.

Layout under the checkpoints folder (hidden, so the model registry never lists it):
    <root>/.jobs/jobs.sqlite            one row per job (WAL; short transactions; several threads and
                                        processes may open it at once)
    <root>/.jobs/<job_id>/train.log     the trainer's stdout + stderr
    <root>/.jobs/<job_id>/events.jsonl  the trainer's structured events (start/progress/epoch/probe/done/error)
    <root>/.jobs/<job_id>/state/        the trainer's resume state
    <root>/job-<job_id>-<method>/       the finished model (written atomically by the trainer)

Lifecycle: queued -> running -> done | failed | cancelled. A process that exits 0 after a "done" event
is done; a non-zero exit is failed (error = the trainer's last error event or the exit code, plus the
log tail); cancel sends SIGTERM to the job's process group, then SIGKILL after `grace_s`, and removes
any checkpoint the job wrote. A record that says running whose process is gone and whose owning
manager is gone too (service restarted) becomes "interrupted"; `resume_job` requeues it with --resume.

Scheduling: at most `max_running` jobs per device run at once (default 1); the rest wait queued. A
monitor thread reaps this manager's processes and starts queued jobs while there is work, and every
read (list/status) also refreshes lazily, so a manager opened after a restart picks up the queue.
Only the standard library is used here: the trainer runs in its own process.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from backend import REPO
from backend.core.errors import NotFoundError, short

log = logging.getLogger(__name__)

METHODS = ("rsupcon", "pgd_at", "trades", "supcon", "fgsm_rs", "ce")
PRESETS = ("smoke", "short", "gpu12", "full")  # backend.train.config.PRESETS
STATES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
LIMITS = {"widths": [16, 32, 64], "epochs": [1, 50], "subset": [64, 50000], "attack_steps": [1, 20],
          "batch_size": [8, 1024], "name_chars": 64, "methods": list(METHODS), "presets": list(PRESETS)}
_JOB_ID_RE = re.compile(r"^[0-9a-f]{12}$")
_PROGRESS_TYPES = ("progress", "epoch", "probe")
_LIVE_MANAGERS: set[str] = set()  # owner tokens of managers open in this process


@dataclass(frozen=True)
class JobConfig:
    """A validated training-job configuration (see LIMITS). None means "the preset's value"
    (backend.train.config.PRESETS: smoke = seconds, short = minutes on a 2-core CPU, full = GPU)."""
    method: str
    preset: str = "short"
    width: int | None = None        # ResNet-18 base channels
    subset: int | None = None       # training images
    epochs: int | None = None
    attack_steps: int | None = None  # PGD steps used to craft training examples
    batch_size: int | None = None
    name: str | None = None
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> "JobConfig":
        """Build and validate from plain data; ValueError names the bad key or value."""
        if not isinstance(d, dict):
            raise ValueError(f"job config must be a dict, got {type(d).__name__}")
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown job config keys {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        if "method" not in d:
            raise ValueError(f"job config needs 'method' (one of {', '.join(METHODS)})")
        kw = {k: v for k, v in d.items() if v is not None or k in ("name",)}
        for key in ("width", "subset", "epochs", "attack_steps", "batch_size", "seed"):
            v = kw.get(key)
            if v is not None:
                # finite first: int(inf) raises OverflowError and int(nan) ValueError deep in a request
                if (isinstance(v, bool) or not isinstance(v, (int, float))
                        or (isinstance(v, float) and not math.isfinite(v)) or int(v) != v):
                    raise ValueError(f"job config {key} must be an integer, got {short(v)}")
                kw[key] = int(v)
        cfg = cls(**kw)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown training method {short(self.method)}; known: {', '.join(METHODS)}")
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {short(self.preset)}; known: {', '.join(PRESETS)}")
        if self.width is not None and self.width not in LIMITS["widths"]:
            raise ValueError(f"width must be one of {LIMITS['widths']}, got {short(self.width)}")
        for key in ("epochs", "subset", "attack_steps", "batch_size"):
            lo, hi = LIMITS[key]
            v = getattr(self, key)
            if v is not None and not lo <= v <= hi:
                raise ValueError(f"{key} must be in {lo}..{hi}, got {short(v)}")
        if not 0 <= self.seed < 2**31:
            raise ValueError(f"seed must be in 0..2**31-1, got {short(self.seed)}")
        if self.name is not None and (not isinstance(self.name, str) or not self.name.strip()
                                      or len(self.name) > LIMITS["name_chars"] or not self.name.isprintable()):
            raise ValueError(f"job name must be 1-{LIMITS['name_chars']} printable characters, got {short(self.name)}")

    def to_dict(self) -> dict:
        return asdict(self)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, name TEXT NOT NULL, method TEXT NOT NULL, config TEXT NOT NULL,
    device TEXT NOT NULL, state TEXT NOT NULL, pid INTEGER, owner TEXT,
    created REAL NOT NULL, started REAL, finished REAL, checkpoint TEXT, error TEXT,
    exit_code INTEGER, attempts INTEGER NOT NULL DEFAULT 0, resume INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0)
"""


class JobManager:
    """Starts, tracks, cancels and resumes training jobs for one checkpoints folder.

    data: the trainer's --data (a CIFAR root, "synthetic", or None to let the trainer resolve it);
    threads: the trainer's --threads (default: all cores but one); python/env: how the trainer is launched.
    """

    def __init__(self, checkpoint_root: str | os.PathLike, data: str | None = None, device: str = "cpu",
                 max_running: int = 1, threads: int | None = None, grace_s: float = 5.0,
                 python: str = sys.executable, env: dict | None = None, poll_s: float = 0.5,
                 jobs_dir: str | os.PathLike | None = None):
        self.root = Path(checkpoint_root)
        self.jobs_dir = Path(jobs_dir) if jobs_dir is not None else self.root / ".jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.jobs_dir / "jobs.sqlite"
        self.data, self.device, self.max_running = data, str(device), int(max_running)
        # Default: all cores but one, so the app stays responsive while a job trains on the same CPU
        # (oversubscribed OpenMP threads slow interactive work down many times over).
        self.threads = int(threads or max(1, (os.cpu_count() or 2) - 1))
        self.grace_s, self.python, self.poll_s = grace_s, python, poll_s
        self.env = dict(env) if env is not None else None
        self.owner = f"{os.getpid()}:{uuid.uuid4().hex[:8]}"
        _LIVE_MANAGERS.add(self.owner)
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.RLock()
        self._monitor: threading.Thread | None = None
        self._closed = False
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)

    # ---- storage -------------------------------------------------------------------------------
    @contextmanager
    def _db(self, write: bool = False):
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

    def _row(self, job_id: str) -> sqlite3.Row:
        if not isinstance(job_id, str) or not _JOB_ID_RE.match(job_id):
            raise NotFoundError(f"unknown job id {short(job_id)}")
        with self._db() as db:
            row = db.execute("SELECT * FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"unknown job id {short(job_id)}")
        return row

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def model_id(self, job_id: str, method: str) -> str:
        return f"job-{job_id}-{method}"

    # ---- public API ----------------------------------------------------------------------------
    def start_job(self, config: dict) -> dict:
        """Validate `config` (see JobConfig), queue the job and start it when the device is free."""
        cfg = JobConfig.from_dict(config)
        job_id = uuid.uuid4().hex[:12]
        name = cfg.name or " ".join([cfg.method, cfg.preset] + [f"{k}={v}" for k, v in (
            ("width", cfg.width), ("epochs", cfg.epochs), ("subset", cfg.subset)) if v is not None])
        self.job_dir(job_id).mkdir(parents=True)
        with self._db(write=True) as db:
            db.execute("INSERT INTO jobs (job_id, name, method, config, device, state, created) "
                       "VALUES (?,?,?,?,?,?,?)", (job_id, name, cfg.method, json.dumps(cfg.to_dict()),
                                                   self.device, "queued", time.time()))
        log.info("job %s queued: %s", job_id, cfg)
        self._refresh()
        return self.job_status(job_id)

    def list_jobs(self) -> list[dict]:
        """Every job, newest first."""
        self._refresh()
        with self._db() as db:
            rows = db.execute("SELECT * FROM jobs ORDER BY created DESC").fetchall()
        return [self._to_dict(r) for r in rows]

    def job_status(self, job_id: str) -> dict:
        self._row(job_id)
        self._refresh()
        return self._to_dict(self._row(job_id))

    def job_events(self, job_id: str, since: int = 0, limit: int = 1000) -> list[dict]:
        """Events number `since`.. (each gets its index as "seq"), at most `limit` of them."""
        self._row(job_id)
        if isinstance(since, bool) or not isinstance(since, int) or since < 0:
            raise ValueError(f"since must be an integer >= 0, got {short(since)}")
        out = []
        for i, ev in enumerate(_read_events(self.job_dir(job_id) / "events.jsonl")):
            if i >= since:
                out.append({**ev, "seq": i})
                if len(out) >= limit:
                    break
        return out

    def job_log(self, job_id: str, tail: int = 100) -> str:
        self._row(job_id)
        if isinstance(tail, bool) or not isinstance(tail, int) or not 1 <= tail <= 10000:
            raise ValueError(f"tail must be an integer in 1..10000, got {short(tail)}")
        return _tail_lines(self.job_dir(job_id) / "train.log", tail)

    def cancel_job(self, job_id: str) -> dict:
        """Stop a queued/running/interrupted job. A running one gets SIGTERM, SIGKILL after grace_s."""
        row = self._row(job_id)
        if row["state"] in ("done", "failed"):
            raise ValueError(f"job {job_id} already finished ({row['state']}); nothing to cancel")
        with self._db(write=True) as db:
            db.execute("UPDATE jobs SET cancel_requested=1 WHERE job_id=?", (job_id,))
            db.execute("UPDATE jobs SET state='cancelled', finished=? WHERE job_id=? AND state IN "
                       "('queued','interrupted')", (time.time(), job_id))
        # Wait until the record leaves "running": the process may still be starting (no pid yet) or
        # belong to another manager, which settles the record once it reaps the process.
        signalled, deadline = False, time.time() + self.grace_s + 10
        while time.time() < deadline:
            row = self._row(job_id)
            if row["state"] != "running":
                break
            if row["pid"] and not signalled:
                self._terminate(job_id, int(row["pid"]))
                signalled = True
            self._refresh()
            time.sleep(0.05)
        return self.job_status(job_id)

    def resume_job(self, job_id: str) -> dict:
        """Requeue an interrupted, failed or cancelled job; the trainer continues from its saved state."""
        row = self._row(job_id)
        if row["state"] not in ("interrupted", "failed", "cancelled"):
            raise ValueError(f"job {job_id} is {row['state']}; only interrupted, failed or cancelled jobs "
                             "can be resumed")
        with self._db(write=True) as db:
            db.execute("UPDATE jobs SET state='queued', resume=1, cancel_requested=0, error=NULL, "
                       "exit_code=NULL, finished=NULL, pid=NULL, device=? WHERE job_id=? AND state IN "
                       "('interrupted','failed','cancelled')", (self.device, job_id))
        self._refresh()
        return self.job_status(job_id)

    def close(self) -> None:
        """Stop monitoring. Running trainers keep going (their own session); a later manager adopts
        the records and reports them interrupted if their processes have gone."""
        with self._lock:  # an in-flight refresh finishes first
            self._closed = True
        _LIVE_MANAGERS.discard(self.owner)

    # ---- process handling ----------------------------------------------------------------------
    def _command(self, job_id: str, cfg: dict, resume: bool) -> list[str]:
        d = self.job_dir(job_id)
        cmd = [self.python, "-m", "backend.train", "--method", cfg["method"], "--preset", cfg["preset"],
               "--seed", str(cfg["seed"]), "--threads", str(self.threads), "--no-progress",
               "--device", "cuda" if self.device.startswith("cuda") else "cpu",
               "--out", str(self.root / self.model_id(job_id, cfg["method"])),
               "--events", str(d / "events.jsonl"), "--state-dir", str(d / "state")]
        for key in ("width", "epochs", "subset", "attack_steps", "batch_size"):
            if cfg.get(key) is not None:  # None: the preset decides
                cmd += [f"--{key.replace('_', '-')}", str(cfg[key])]
        if self.data is not None:
            cmd += ["--data", str(self.data)]
        if resume:
            cmd.append("--resume")
        return cmd

    def _spawn(self, row: sqlite3.Row) -> None:
        job_id = row["job_id"]
        if self._row(job_id)["cancel_requested"]:  # cancelled between being claimed and started
            self._finish(job_id, "cancelled")
            return
        cmd = self._command(job_id, json.loads(row["config"]), bool(row["resume"]))
        env = dict(os.environ if self.env is None else self.env)
        try:
            with open(self.job_dir(job_id) / "train.log", "ab") as logf:
                logf.write(f"$ {' '.join(cmd)}\n".encode())
                logf.flush()
                # own session: cancel signals the whole group, and Ctrl-C on the server spares it
                proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as e:
            self._finish(job_id, "failed", error=f"could not start the trainer: {e}")
            return
        self._procs[job_id] = proc
        with self._db(write=True) as db:
            db.execute("UPDATE jobs SET pid=? WHERE job_id=?", (proc.pid, job_id))
        log.info("job %s started: pid %d", job_id, proc.pid)

    def _terminate(self, job_id: str, pid: int) -> None:
        proc = self._procs.get(job_id)
        for sig, wait in ((signal.SIGTERM, self.grace_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                return
            deadline = time.time() + wait
            while time.time() < deadline:
                if (proc.poll() is not None) if proc is not None else not _pid_alive(pid, job_id):
                    return
                time.sleep(0.05)
            log.warning("job %s ignored %s for %.1f s", job_id, sig.name, wait)

    def _refresh(self) -> None:
        """Reap finished processes, adopt orphaned records, and start queued jobs."""
        with self._lock:
            if self._closed:
                return
            for job_id, proc in list(self._procs.items()):
                code = proc.poll()
                if code is not None:
                    del self._procs[job_id]
                    self._settle(job_id, code, proc.pid)
            with self._db() as db:
                rows = db.execute("SELECT * FROM jobs WHERE state='running'").fetchall()
            for row in rows:
                if row["job_id"] not in self._procs and not self._owned_elsewhere(row):
                    if row["pid"] is None and time.time() - (row["started"] or 0) < 30:
                        continue  # another manager is between claiming and spawning
                    if row["pid"] is None or not _pid_alive(int(row["pid"]), row["job_id"]):
                        self._settle(row["job_id"], None, row["pid"])
            self._start_queued()
            self._ensure_monitor()

    def _owned_elsewhere(self, row: sqlite3.Row) -> bool:
        """True when another live manager owns this running record (it will settle it itself)."""
        owner = row["owner"] or ""
        pid = owner.split(":")[0]
        if owner == self.owner or not pid.isdigit():
            return False
        if int(pid) == os.getpid():
            return owner in _LIVE_MANAGERS
        return _pid_alive(int(pid))

    def _start_queued(self) -> None:
        with self._db() as db:  # the common case, nothing queued, needs no write lock
            if db.execute("SELECT 1 FROM jobs WHERE state='queued' AND device=? LIMIT 1",
                          (self.device,)).fetchone() is None:
                return
        with self._db(write=True) as db:
            running = db.execute("SELECT COUNT(*) FROM jobs WHERE state='running' AND device=?",
                                 (self.device,)).fetchone()[0]
            free = self.max_running - running
            rows = db.execute("SELECT * FROM jobs WHERE state='queued' AND device=? ORDER BY created LIMIT ?",
                              (self.device, max(free, 0))).fetchall()
            now = time.time()
            for r in rows:
                db.execute("UPDATE jobs SET state='running', started=?, owner=?, pid=NULL, "
                           "attempts=attempts+1 WHERE job_id=?", (now, self.owner, r["job_id"]))
        for r in rows:
            self._spawn(r)

    def _settle(self, job_id: str, code: int | None, pid: int | None) -> None:
        """Decide a running job's end state from its exit code (None: unknown, process gone).
        `pid` is the process that ended: a record that has since moved on (resumed under a new
        process) is left alone."""
        row = self._row(job_id)
        if row["state"] != "running" or row["pid"] != pid:
            return
        events = _read_events(self.job_dir(job_id) / "events.jsonl")
        done = [e for e in events if e.get("type") == "done"]
        errors = [e for e in events if e.get("type") == "error"]
        out = self.root / self.model_id(job_id, row["method"])
        finished_ok = bool(done) and (out / "card.json").is_file() and code in (0, None)
        if finished_ok:
            self._finish(job_id, "done", checkpoint=out.name, code=code)
        elif row["cancel_requested"]:
            shutil.rmtree(out, ignore_errors=True)  # a cancelled job leaves no checkpoint behind
            self._finish(job_id, "cancelled", code=code)
        elif code is None:
            self._finish(job_id, "interrupted", error="the trainer process is gone (service restarted "
                         "or the process was killed); resume to continue from the last saved state")
        else:
            what = (errors[-1].get("message") if errors else None) or (
                f"killed by signal {-code}" if code < 0 else f"exited with code {code}")
            if code == 0:
                what = "the trainer exited without a 'done' event and checkpoint"
            tail = _tail_lines(self.job_dir(job_id) / "train.log", 15)
            self._finish(job_id, "failed", error=f"{what}\n--- log tail ---\n{tail}", code=code)

    def _finish(self, job_id: str, state: str, error: str | None = None, checkpoint: str | None = None,
                code: int | None = None) -> None:
        with self._db(write=True) as db:
            db.execute("UPDATE jobs SET state=?, error=?, checkpoint=?, exit_code=?, finished=? "
                       "WHERE job_id=? AND state IN ('running','queued')",
                       (state, error, checkpoint, code, time.time(), job_id))
        log.info("job %s %s%s", job_id, state, f": {error.splitlines()[0]}" if error else "")

    def _ensure_monitor(self) -> None:
        if self._procs and (self._monitor is None or not self._monitor.is_alive()):
            self._monitor = threading.Thread(target=self._watch, name="robustlens-jobs", daemon=True)
            self._monitor.start()

    def _watch(self) -> None:
        while not self._closed:
            time.sleep(self.poll_s)
            try:
                self._refresh()
            except sqlite3.Error:  # a locked or busy database must not kill the monitor
                log.exception("job monitor refresh failed")
            with self._lock:
                if not self._procs:
                    return

    # ---- views ---------------------------------------------------------------------------------
    def _to_dict(self, row: sqlite3.Row) -> dict:
        d = self.job_dir(row["job_id"])
        events = _read_events(d / "events.jsonl", tail_bytes=1 << 16)
        progress = next((e for e in reversed(events) if e.get("type") in _PROGRESS_TYPES), None)
        return {"job_id": row["job_id"], "name": row["name"], "method": row["method"],
                "config": json.loads(row["config"]), "state": row["state"], "device": row["device"],
                "created": row["created"], "started": row["started"], "finished": row["finished"],
                "progress": progress, "checkpoint": row["checkpoint"], "error": row["error"],
                "pid": row["pid"], "attempts": row["attempts"], "exit_code": row["exit_code"],
                "log_tail": _tail_lines(d / "train.log", 20)}


def _read_events(path: Path, tail_bytes: int | None = None) -> list[dict]:
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


def _tail_lines(path: Path, n: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256 * n - 4096))
            data = f.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-n:])


def _pid_alive(pid: int, job_id: str | None = None) -> bool:
    """Is `pid` a live (non-zombie) process, and, when job_id is given, still our trainer (pids get reused)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path(f"/proc/{pid}")
    try:
        stat = (proc / "stat").read_text()
        if stat[stat.rindex(")") + 2:].startswith("Z"):
            return False
        if job_id is not None:
            return job_id.encode() in (proc / "cmdline").read_bytes()
    except (OSError, ValueError):
        pass  # no /proc (not Linux): trust kill(0)
    return True
