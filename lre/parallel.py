"""Run a stage's jobs in parallel, Kaldi style: one command and one log per job.

A job is ``python -m <module> <argv...>``; :func:`run_jobs` starts all of them at once and
waits. How a job is started depends on ``cmd``:

* ``""`` or ``"local"`` (default): on this machine. Where ``fork`` is available each job
  runs in a forked copy of this process, which already has torch imported, so short
  stages do not pay the interpreter and import start-up once per job; elsewhere it runs
  the command as a subprocess. Either way the job does exactly what the command does.
* a Kaldi script (first word ends in ``.pl``: ``run.pl``, ``queue.pl``, ``slurm.pl``):
  called once per job as ``CMD LOG COMMAND``; the script writes the log.
* anything else is a prefix put in front of each command, e.g. ``srun -n1 -c1`` or
  ``sbatch --wait -o /dev/null``; the job's output goes to its log.

A log starts with the command line and ends with its exit code, like Kaldi's ``run.pl``.
When a job fails, :func:`run_jobs` waits for the others, then raises ``LreError`` naming
the failed job's log and quoting its last lines.
"""

from __future__ import annotations

import contextlib
import datetime
import multiprocessing
import multiprocessing.connection
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lre.utils import LreError

TAIL_LINES = 20


@dataclass
class Job:
    """One job: ``python -m <module> <argv...>``, logging to ``log``."""

    index: int
    argv: list[str]
    log: Path
    module: str = "lre.features"

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, *self.argv]

    def command_line(self) -> str:
        return shlex.join(self.command())


@dataclass
class JobResult:
    index: int
    returncode: int
    seconds: float
    log: Path
    tail: list[str] = field(default_factory=list)


def log_tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    """The last ``lines`` lines of a log (empty when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def _now() -> str:
    return datetime.datetime.now().strftime("%a %b %d %H:%M:%S %Y")


def _write_header(job: Job) -> None:
    job.log.parent.mkdir(parents=True, exist_ok=True)
    with open(job.log, "w", encoding="utf-8") as f:
        f.write(f"# {job.command_line()}\n# Started at {_now()}\n#\n")


def _write_footer(job: Job, rc: int, seconds: float) -> None:
    with open(job.log, "a", encoding="utf-8") as f:
        f.write(f"# Accounting: time={int(round(seconds))} threads=1\n"
                f"# Ended (code {rc}) at {_now()}, elapsed time {int(round(seconds))} seconds\n")


def _runner_kind(cmd: str) -> str:
    words = shlex.split(cmd)
    if not words or words == ["local"]:
        return "local"
    if words[0].endswith(".pl"):
        return "kaldi"
    return "prefix"


def _forked_job(job: Job) -> None:
    """Body of a forked local job: stdout/stderr to the log, then the module's ``main``."""
    import importlib
    import logging

    fd = os.open(job.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", closefd=False)
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", closefd=False)
    for handler in logging.root.handlers[:]:  # the parent's handlers point elsewhere
        logging.root.removeHandler(handler)
    try:
        rc = importlib.import_module(job.module).main(job.argv)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
        rc = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(rc or 0))


class _Running:
    """A started job; ``wait_handle`` is waitable with multiprocessing.connection.wait."""

    def __init__(self, job: Job, kind: str, cmd: str) -> None:
        self.job, self.start, self.kind = job, time.time(), kind
        self.proc: subprocess.Popen | None = None
        self.process: multiprocessing.Process | None = None
        self._done = threading.Event()
        self._rc: int | None = None
        if kind == "local" and "fork" in multiprocessing.get_all_start_methods():
            _write_header(job)
            self.process = multiprocessing.get_context("fork").Process(
                target=_forked_job, args=(job,), name=f"job-{job.index}", daemon=False)
            self.process.start()
            return
        if kind == "kaldi":
            job.log.parent.mkdir(parents=True, exist_ok=True)
            args = [*shlex.split(cmd), str(job.log), *job.command()]
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        else:
            _write_header(job)
            prefix = shlex.split(cmd) if kind == "prefix" else []
            with open(job.log, "ab") as log:
                self.proc = subprocess.Popen([*prefix, *job.command()], stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT)
        threading.Thread(target=self._wait_proc, daemon=True).start()

    def _wait_proc(self) -> None:
        assert self.proc is not None
        self._rc = self.proc.wait()
        self._done.set()

    @property
    def wait_handle(self):
        return self.process.sentinel if self.process is not None else None

    def poll(self) -> int | None:
        if self.process is not None:
            return self.process.exitcode
        return self._rc if self._done.is_set() else None

    def finish(self) -> JobResult:
        if self.process is not None:
            self.process.join()
            rc = self.process.exitcode
            rc = 128 - rc if rc is not None and rc < 0 else rc  # killed by signal -> 128+n
        else:
            rc = self._rc
        seconds = time.time() - self.start
        rc = int(rc if rc is not None else 1)
        if self.process is not None or self.kind == "prefix":
            _write_footer(self.job, rc, seconds)
        return JobResult(self.job.index, rc, seconds, self.job.log)

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            if self.process is not None:
                self.process.terminate()
            elif self.proc is not None:
                self.proc.terminate()


def run_jobs(
    jobs: Sequence[Job],
    cmd: str = "",
    on_done: Callable[[JobResult], None] | None = None,
    what: str = "jobs",
) -> list[JobResult]:
    """Run ``jobs`` concurrently through ``cmd`` and wait for all of them.

    ``on_done`` is called as each job finishes (progress). Returns the results in job
    order. Raises ``LreError`` when any job exits non-zero: the message names the first
    failed job's log and ends with its last lines.
    """
    kind = _runner_kind(cmd)
    running: list[_Running] = []
    results: dict[int, JobResult] = {}
    try:
        for job in jobs:
            running.append(_Running(job, kind, cmd))
        pending = list(running)
        while pending:
            handles = [r.wait_handle for r in pending if r.wait_handle is not None]
            if handles and len(handles) == len(pending):
                multiprocessing.connection.wait(handles)
            else:
                multiprocessing.connection.wait(handles, timeout=0.05) if handles \
                    else time.sleep(0.05)
            for r in list(pending):
                if r.poll() is None:
                    continue
                pending.remove(r)
                res = r.finish()
                results[res.index] = res
                if on_done is not None and res.returncode == 0:
                    on_done(res)
    except BaseException:
        for r in running:
            r.kill()
        raise
    failed = [results[j.index] for j in jobs if results[j.index].returncode != 0]
    if failed:
        first = failed[0]
        tail = log_tail(first.log)
        others = (f" (and {len(failed) - 1} more: jobs "
                  f"{', '.join(str(f.index) for f in failed[1:])})" if len(failed) > 1 else "")
        raise LreError(
            f"{first.log}: {what} job {first.index} of {len(jobs)} failed with exit code "
            f"{first.returncode}{others}; last lines of its log:\n" + "\n".join(tail)
        )
    return [results[j.index] for j in jobs]


__all__ = ["Job", "JobResult", "log_tail", "run_jobs"]
