"""The job runner: local (forked) jobs, prefix commands, Kaldi .pl scripts, failures."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from lre.parallel import Job, run_jobs
from lre.utils import LreError

JOB_MODULE = '''
import os, sys, time

def main(argv):
    index, seconds, code = int(argv[0]), float(argv[1]), int(argv[2])
    print(f"job {index} pid {os.getpid()} env {os.environ.get('LRE_TEST_FLAG', '-')}")
    print(f"job {index} stderr line", file=sys.stderr)
    time.sleep(seconds)
    if code:
        print(f"job {index}: something went wrong", file=sys.stderr)
    return code

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
'''


@pytest.fixture
def job_module(tmp_path, monkeypatch):
    """An importable module ``lre_test_jobmod`` whose ``main(argv)`` sleeps and exits."""
    (tmp_path / "lre_test_jobmod.py").write_text(JOB_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return "lre_test_jobmod"


def _jobs(tmp_path: Path, module: str, specs: list[tuple[float, int]]) -> list[Job]:
    return [Job(index=i, module=module, argv=[str(i), str(sec), str(code)],
                log=tmp_path / "log" / f"make_feats.{i}.log")
            for i, (sec, code) in enumerate(specs, 1)]


def test_local_jobs_run_concurrently_with_one_log_each(tmp_path, job_module):
    jobs = _jobs(tmp_path, job_module, [(0.6, 0), (0.6, 0), (0.6, 0)])
    done = []
    t = time.time()
    results = run_jobs(jobs, cmd="", on_done=lambda r: done.append(r.index))
    elapsed = time.time() - t
    assert [r.returncode for r in results] == [0, 0, 0]
    assert sorted(done) == [1, 2, 3]
    assert elapsed < 1.6  # three 0.6 s jobs side by side, not one after the other
    pids = set()
    for job in jobs:
        text = job.log.read_text()
        first = text.splitlines()[0]
        assert first.startswith("# ") and f"-m {job_module} {job.index}" in first
        assert f"job {job.index} stderr line" in text
        assert "# Ended (code 0)" in text
        pids.add(text.split(" pid ")[1].split()[0])
    assert len(pids) == 3 and str(os.getpid()) not in pids


def test_failure_names_the_log_and_quotes_its_tail(tmp_path, job_module):
    jobs = _jobs(tmp_path, job_module, [(0.0, 0), (0.1, 3), (0.0, 0)])
    with pytest.raises(LreError) as err:
        run_jobs(jobs, what="make_feats train")
    msg = str(err.value)
    assert msg.startswith(f"{jobs[1].log}: make_feats train job 2 of 3 failed with exit code 3")
    assert "job 2: something went wrong" in msg
    assert "# Ended (code 3)" in jobs[1].log.read_text()
    assert "# Ended (code 0)" in jobs[2].log.read_text()  # the others still finished


def test_prefix_command(tmp_path, job_module):
    jobs = _jobs(tmp_path, job_module, [(0.0, 0), (0.0, 0)])
    run_jobs(jobs, cmd="env LRE_TEST_FLAG=via-prefix")
    for job in jobs:
        assert f"job {job.index} pid" in job.log.read_text()
        assert "env via-prefix" in job.log.read_text()
        assert job.log.read_text().splitlines()[0].startswith("# ")
    jobs = _jobs(tmp_path, job_module, [(0.0, 5)])
    with pytest.raises(LreError, match="exit code 5"):
        run_jobs(jobs, cmd="env LRE_TEST_FLAG=x")


def test_kaldi_style_script(tmp_path, job_module):
    script = tmp_path / "fake_queue.pl"
    script.write_text(
        "#!/usr/bin/env bash\n"
        "# CMD LOG COMMAND..., like Kaldi's run.pl/queue.pl with one job\n"
        "log=$1; shift\n"
        "mkdir -p \"$(dirname \"$log\")\"\n"
        "echo \"# $*\" > \"$log\"\n"
        "LRE_TEST_FLAG=from-queue \"$@\" >> \"$log\" 2>&1\n"
        "rc=$?\n"
        "echo \"# Ended (code $rc)\" >> \"$log\"\n"
        "exit $rc\n"
    )
    script.chmod(0o755)
    jobs = _jobs(tmp_path, job_module, [(0.0, 0), (0.0, 2)])
    with pytest.raises(LreError, match=r"make_feats\.2\.log.*exit code 2"):
        run_jobs(jobs, cmd=str(script))
    assert "env from-queue" in jobs[0].log.read_text()
    assert "# Ended (code 2)" in jobs[1].log.read_text()


def test_subprocess_fallback_runs_the_command(tmp_path, job_module, monkeypatch):
    import multiprocessing

    # Where fork is unavailable the local runner starts `python -m module` itself.
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    jobs = _jobs(tmp_path, job_module, [(0.0, 0)])
    run_jobs(jobs)
    text = jobs[0].log.read_text()
    assert f"{sys.executable} -m {job_module} 1" in text and "job 1 pid" in text
