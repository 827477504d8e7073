"""Training jobs: one `python -m backend.train` process per job, records in SQLite, events in JSON lines.

Layout under the checkpoints folder (hidden, so the model registry never lists it):
    <root>/.jobs/jobs.sqlite            one row per job (backend.service.job_store)
    <root>/.jobs/<job_id>/config.json   the job's TrainConfig fields: the trainer reads them (--config), and
                                        the finished model's card holds the same dict as train_config
    <root>/.jobs/<job_id>/train.log     the trainer's stdout + stderr
    <root>/.jobs/<job_id>/events.jsonl  the trainer's structured events (start/progress/epoch/probe/done/error)
    <root>/.jobs/<job_id>/state/        the trainer's resume state
    <root>/job-<job_id>-<method>/       the finished model (written atomically by the trainer)

Lifecycle: queued -> running -> done | failed | cancelled. A process that exits 0 after a "done" event
is done; a non-zero exit is failed (error = the trainer's last error event or the exit code; the
record's log_tail holds the log's last lines); cancel sends SIGTERM to the job's process group, then
SIGKILL after `grace_s`, and removes any checkpoint the job wrote. A record that says running whose
process is gone and whose owning manager is gone too (service restarted) becomes "interrupted";
`resume_job` requeues it with --resume.

Scheduling: at most `max_running` jobs per device run at once (default 1); the rest wait queued. A
monitor thread reaps this manager's processes and starts queued jobs while there is work, and every
read (list/status) also refreshes lazily, so a manager opened after a restart picks up the queue.
A job's config is validated once, at submit time (backend.service.job_config: the job's fields and
bounds, checked by backend.train.config.config_from_dict, the function the trainer calls on the same
dict): a bad value is a ValueError and creates nothing. Only the standard library is used here (the
training registry and config are torch-free): the trainer runs in its own process.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from backend import REPO
from backend.core.errors import short
from backend.core.runtime import usable_cores
from backend.service.job_config import LIMITS, METHODS, PRESETS, JobConfig, trainable_datasets
from backend.service.job_store import STATES, JobStore, pid_alive, read_events, tail_lines
from backend.train.config import config_from_dict

log = logging.getLogger(__name__)

__all__ = ["LIMITS", "METHODS", "PRESETS", "STATES", "JobConfig", "JobManager", "trainable_datasets"]

_PROGRESS_TYPES = ("progress", "epoch", "probe")
_LIVE_MANAGERS: set[str] = set()  # owner tokens of managers open in this process


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
        self.threads = int(threads or max(1, usable_cores() - 1))
        self.grace_s, self.python, self.poll_s = grace_s, python, poll_s
        self.env = dict(env) if env is not None else None
        self.owner = f"{os.getpid()}:{uuid.uuid4().hex[:8]}"
        _LIVE_MANAGERS.add(self.owner)
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.RLock()
        self._monitor: threading.Thread | None = None
        self._closed = False
        self.store = JobStore(self.db_path)

    # ---- files -------------------------------------------------------------------------------
    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def model_id(self, job_id: str, method: str) -> str:
        return f"job-{job_id}-{method}"

    def config_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "config.json"

    def _config_file(self, job_id: str, stored: dict) -> Path:
        """The job's config file: written at submit; a record from before config files (its stored
        config has a "name") gets one from its job fields."""
        path = self.config_path(job_id)
        if not path.is_file():
            cfg = JobConfig.from_dict(stored, self.data).train if "name" in stored else config_from_dict(stored)
            _write_json(path, cfg.to_dict())
        return path

    # ---- public API ----------------------------------------------------------------------------
    def start_job(self, config: dict) -> dict:
        """Validate `config` (see JobConfig; nothing is created for a bad one), write the job's config
        file, queue the job and start it when the device is free."""
        job = JobConfig.from_dict(config, self.data)
        train = job.train.to_dict()
        job_id = uuid.uuid4().hex[:12]
        name = job.name or " ".join([job.train.method, job.train.preset] + [
            f"{k}={config[k]}" for k in ("width", "epochs", "subset") if config.get(k) is not None])
        self.job_dir(job_id).mkdir(parents=True)
        _write_json(self.config_path(job_id), train)
        with self.store.db(write=True) as db:
            db.execute("INSERT INTO jobs (job_id, name, method, config, device, state, created) "
                       "VALUES (?,?,?,?,?,?,?)", (job_id, name, job.train.method, json.dumps(train),
                                                   self.device, "queued", time.time()))
        log.info("job %s queued: %s", job_id, name)
        self._refresh()
        return self.job_status(job_id)

    def list_jobs(self) -> list[dict]:
        """Every job, newest first."""
        self._refresh()
        with self.store.db() as db:
            rows = db.execute("SELECT * FROM jobs ORDER BY created DESC").fetchall()
        return [self._to_dict(r) for r in rows]

    def job_status(self, job_id: str) -> dict:
        self.store.row(job_id)
        self._refresh()
        return self._to_dict(self.store.row(job_id))

    def job_events(self, job_id: str, since: int, limit: int = 1000) -> list[dict]:
        """Events number `since`.. (each gets its index as "seq"), at most `limit` of them."""
        self.store.row(job_id)
        if isinstance(since, bool) or not isinstance(since, int) or since < 0:
            raise ValueError(f"since must be an integer >= 0, got {short(since)}")
        out = []
        for i, ev in enumerate(read_events(self.job_dir(job_id) / "events.jsonl")):
            if i >= since:
                out.append({**ev, "seq": i})
                if len(out) >= limit:
                    break
        return out

    def job_log(self, job_id: str, tail: int) -> str:
        self.store.row(job_id)
        if isinstance(tail, bool) or not isinstance(tail, int) or not 1 <= tail <= 10000:
            raise ValueError(f"tail must be an integer in 1..10000, got {short(tail)}")
        return tail_lines(self.job_dir(job_id) / "train.log", tail)

    def cancel_job(self, job_id: str) -> dict:
        """Stop a queued/running/interrupted job. A running one gets SIGTERM, SIGKILL after grace_s."""
        row = self.store.row(job_id)
        if row["state"] in ("done", "failed"):
            raise ValueError(f"job {job_id} already finished ({row['state']}); nothing to cancel")
        with self.store.db(write=True) as db:
            db.execute("UPDATE jobs SET cancel_requested=1 WHERE job_id=?", (job_id,))
            db.execute("UPDATE jobs SET state='cancelled', finished=? WHERE job_id=? AND state IN "
                       "('queued','interrupted')", (time.time(), job_id))
        # Wait until the record leaves "running": the process may still be starting (no pid yet) or
        # belong to another manager, which settles the record once it reaps the process.
        signalled, deadline = False, time.time() + self.grace_s + 10
        while time.time() < deadline:
            row = self.store.row(job_id)
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
        row = self.store.row(job_id)
        if row["state"] not in ("interrupted", "failed", "cancelled"):
            raise ValueError(f"job {job_id} is {row['state']}; only interrupted, failed or cancelled jobs "
                             "can be resumed")
        with self.store.db(write=True) as db:
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
    def _command(self, job_id: str, config_file: Path, method: str, resume: bool) -> list[str]:
        d = self.job_dir(job_id)
        cmd = [self.python, "-m", "backend.train", "--config", str(config_file),
               "--threads", str(self.threads), "--no-progress",
               "--device", "cuda" if self.device.startswith("cuda") else "cpu",
               "--out", str(self.root / self.model_id(job_id, method)),
               "--events", str(d / "events.jsonl"), "--state-dir", str(d / "state")]
        return cmd + ["--resume"] if resume else cmd

    def _spawn(self, row: sqlite3.Row) -> None:
        job_id = row["job_id"]
        if self.store.row(job_id)["cancel_requested"]:  # cancelled between being claimed and started
            self._finish(job_id, "cancelled")
            return
        env = dict(os.environ if self.env is None else self.env)
        try:
            config_file = self._config_file(job_id, json.loads(row["config"]))
        except (OSError, ValueError) as e:
            self._finish(job_id, "failed", error=f"the job's config cannot be written: {e}")
            return
        cmd = self._command(job_id, config_file, row["method"], bool(row["resume"]))
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
        with self.store.db(write=True) as db:
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
                if (proc.poll() is not None) if proc is not None else not pid_alive(pid, job_id):
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
            with self.store.db() as db:
                rows = db.execute("SELECT * FROM jobs WHERE state='running'").fetchall()
            for row in rows:
                if row["job_id"] not in self._procs and not self._owned_elsewhere(row):
                    if row["pid"] is None and time.time() - (row["started"] or 0) < 30:
                        continue  # another manager is between claiming and spawning
                    if row["pid"] is None or not pid_alive(int(row["pid"]), row["job_id"]):
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
        return pid_alive(int(pid))

    def _start_queued(self) -> None:
        with self.store.db() as db:  # the common case, nothing queued, needs no write lock
            if db.execute("SELECT 1 FROM jobs WHERE state='queued' AND device=? LIMIT 1",
                          (self.device,)).fetchone() is None:
                return
        with self.store.db(write=True) as db:
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
        row = self.store.row(job_id)
        if row["state"] != "running" or row["pid"] != pid:
            return
        events = read_events(self.job_dir(job_id) / "events.jsonl")
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
            # error is the one sentence; the log's last lines are the record's own field, log_tail
            self._finish(job_id, "failed", error=what, code=code)

    def _finish(self, job_id: str, state: str, error: str | None = None, checkpoint: str | None = None,
                code: int | None = None) -> None:
        with self.store.db(write=True) as db:
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
        events = read_events(d / "events.jsonl", tail_bytes=1 << 16)
        progress = next((e for e in reversed(events) if e.get("type") in _PROGRESS_TYPES), None)
        return {"job_id": row["job_id"], "name": row["name"], "method": row["method"],
                "config": json.loads(row["config"]), "state": row["state"], "device": row["device"],
                "created": row["created"], "started": row["started"], "finished": row["finished"],
                "progress": progress, "checkpoint": row["checkpoint"], "error": row["error"],
                "pid": row["pid"], "attempts": row["attempts"], "exit_code": row["exit_code"],
                "log_tail": tail_lines(d / "train.log", 20)}


def _write_json(path: Path, d: dict) -> None:
    """Write `d` as JSON atomically (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(d, indent=1, sort_keys=True))
    os.replace(tmp, path)
