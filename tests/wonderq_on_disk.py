"""``wonderq`` with ``--data-dir`` in a fresh temporary directory: the server-level tests
against the durable store.

    WONDERQ_SERVER_CMD="python tests/wonderq_on_disk.py" python -m pytest tests/test_api_seed.py

tests/_server.py starts this instead of ``wonderq``; it runs ``wonderq <args> --data-dir
<tmp>`` (unless the test gave a data directory itself), passes signals on, and removes the
directory when the server exits.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the wrapper dies (Linux's PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def main() -> int:
    wonderq = Path(sys.executable).with_name("wonderq")
    cmd = [str(wonderq)] if wonderq.exists() else [sys.executable, "-m", "wonderq"]
    args = sys.argv[1:]
    with tempfile.TemporaryDirectory(prefix="wq-on-disk-") as tmp:
        if "--data-dir" not in args:
            args = [*args, "--data-dir", tmp]
        # A SIGKILL of this wrapper (a test's crash) kills the server too, as it would a
        # server started directly: else it lives on, holding the data directory's lock.
        server = subprocess.Popen([*cmd, *args], preexec_fn=_die_with_parent)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda n, _f: server.send_signal(n))
        code = server.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
