"""``wonderq serve`` as a user meets it: --help, flags and their environment variables, and
one-line errors (no traceback) for bad values and a port already in use."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from _server import ServerProcess, get, running_server, server_command

from wonderq.config import FIELDS

pytestmark = pytest.mark.timeout(60)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WONDERQ_")}
    full_env.update(env or {})
    return subprocess.run(
        [*server_command(), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=full_env,
        stdin=subprocess.DEVNULL,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "error" in lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_serve_help_explains_every_flag() -> None:
    proc = run("serve", "--help")
    assert proc.returncode == 0
    for field in FIELDS:
        assert field.flag in proc.stdout
        assert field.env in proc.stdout.replace("\n", " ").replace("  ", "")
    assert "WONDERQ_<NAME>" in proc.stdout


def test_top_level_help_and_no_command() -> None:
    assert "serve" in run("--help").stdout
    proc = run()
    assert proc.returncode == 2 and "serve" in proc.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--port", "abc"), ("--port", "abc")),
        (("--port", "70000"), ("--port",)),
        (("--port", "-1"), ("--port",)),
        (("--visibility-timeout", "-5"), ("--visibility-timeout",)),
        (("--visibility-timeout", "1e3"), ("--visibility-timeout",)),
        (("--visibility-timeout", "43201"), ("--visibility-timeout",)),
        (("--max-batch", "0"), ("--max-batch",)),
        (("--max-message-bytes", "x"), ("--max-message-bytes",)),
        (("--max-memory", "-1"), ("--max-memory",)),
        (("--log-level", "loud"), ("--log-level",)),
        (("--max-request-bytes", "1.5"), ("--max-request-bytes",)),
        (("--header-timeout", "0"), ("--header-timeout",)),
        (("--bogus",), ("--bogus",)),
        (("--port",), ("--port",)),
    ],
)
def test_bad_flag_is_one_clear_line(args: tuple[str, ...], words: tuple[str, ...]) -> None:
    proc = run("serve", *args)
    assert proc.returncode == 2
    assert_one_line_error(proc, *words)


def test_bad_environment_value_names_the_variable() -> None:
    proc = run("serve", env={"WONDERQ_MAX_BATCH": "lots"})
    assert proc.returncode == 2
    assert_one_line_error(proc, "WONDERQ_MAX_BATCH", "lots")


def test_port_in_use_is_one_clear_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run("serve", "--host", "127.0.0.1", "--port", str(port))
    assert proc.returncode == 1
    assert_one_line_error(proc, str(port), "in use")


def test_unresolvable_host_is_one_clear_line() -> None:
    proc = run("serve", "--host", "no-such-host.invalid", "--port", "0")
    assert proc.returncode == 1
    assert_one_line_error(proc, "no-such-host.invalid")


def test_flags_win_over_environment_which_wins_over_defaults() -> None:
    with running_server("--max-batch", "7", env={"WONDERQ_MAX_BATCH": "5"}) as srv:
        assert get(srv, "/v1/consumer?cid=1&limit=7").status == 200
        assert get(srv, "/v1/consumer?cid=1&limit=8").status == 400
    with running_server(env={"WONDERQ_MAX_BATCH": "5", "WONDERQ_ACCESS_LOG": "1"}) as srv:
        assert get(srv, "/v1/consumer?cid=1&limit=5").status == 200
        assert get(srv, "/v1/consumer?cid=1&limit=6").status == 400
        srv.stop()
        assert "GET /v1/consumer" in srv.output()  # the access log was switched on


def test_access_log_is_off_by_default() -> None:
    with running_server() as srv:
        get(srv, "/healthz")
        srv.stop()
        assert "GET /healthz" not in srv.output()


def test_access_log_flag() -> None:
    with running_server("--access-log") as srv:
        get(srv, "/healthz?probe=1")
        srv.stop()
        assert '"GET /healthz" 200' in srv.output()


def test_python_dash_m_is_the_same_program() -> None:
    srv = ServerProcess()
    srv.flags = []
    env_cmd = f"{sys.executable} -m wonderq"
    srv.extra_env = {"WONDERQ_SERVER_CMD": env_cmd}
    os.environ["WONDERQ_SERVER_CMD"] = env_cmd  # read by server_command() in this process
    try:
        srv.start()
        assert get(srv, "/healthz").status == 200
        assert srv.stop() == 0
    finally:
        del os.environ["WONDERQ_SERVER_CMD"]
        srv.stop()


def test_listening_line_names_the_bound_port() -> None:
    with running_server() as srv:
        line = next(line for line in srv.lines if "listening on" in line)
        assert f"http://127.0.0.1:{srv.port}" in line
        assert srv.port != 0


# ---- transparent huge pages for the heap (cli.huge_page_env) ---------------------------------


def _glibc_235() -> bool:
    name, _, version = (os.confstr("CS_GNU_LIBC_VERSION") or "").partition(" ")
    return name == "glibc" and tuple(int(x) for x in version.split(".")[:2]) >= (2, 35)


needs_glibc_235 = pytest.mark.skipif(
    sys.platform != "linux" or not _glibc_235(), reason="glibc.malloc.hugetlb needs glibc 2.35+"
)


@needs_glibc_235
def test_huge_page_env_asks_glibc_only_where_the_kernel_waits_to_be_asked(tmp_path) -> None:
    from wonderq.cli import huge_page_env

    mode = tmp_path / "enabled"
    mode.write_text("always [madvise] never\n")
    env = huge_page_env({"PATH": "/bin"}, str(mode))
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    # Other tunables are kept; a setting of the user's own (0: keep 4 KiB pages) wins.
    env = huge_page_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, str(mode))
    assert env == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"}
    assert huge_page_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, str(mode)) is None
    # "always" gives the heap huge pages without asking, "never" gives none: no re-execution.
    for other in ("[always] madvise never\n", "always madvise [never]\n"):
        mode.write_text(other)
        assert huge_page_env({}, str(mode)) is None
    assert huge_page_env({}, str(tmp_path / "missing")) is None  # no THP in this kernel


def _huge_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        line = next(x for x in f if x.startswith("AnonHugePages:"))
    return int(line.split()[1])


def _environ(pid: int) -> list[str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        return [x.decode(errors="replace") for x in f.read().split(b"\0")]


def _thp_mode() -> str:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read()
    except OSError:
        return ""


@needs_glibc_235
@pytest.mark.skipif("[madvise]" not in _thp_mode(), reason="the kernel's THP mode is not madvise")
@pytest.mark.parametrize("tunables", [None, "glibc.malloc.hugetlb=0"])
def test_the_server_stores_big_bodies_in_huge_pages_unless_told_not_to(tunables) -> None:
    from _server import publish, receive

    env = {"GLIBC_TUNABLES": tunables} if tunables else {}
    with running_server(env=env) as srv:
        # 64 KiB bodies: blocks under glibc's mmap threshold, from the heap (1 MiB ones come
        # from the heap or from a mapping each, as glibc's dynamic threshold has it).
        bodies = [chr(ord("a") + i % 26) * (1 << 16) for i in range(384)]
        for body in bodies:
            publish(srv, "default", body)
        environ = _environ(srv.pid)
        huge_kib = _huge_kib(srv.pid)
        got: list[dict] = []
        while len(got) < len(bodies):
            got += receive(srv, "default", "cid=1&limit=100")
        assert [m["body"] for m in got] == bodies
        srv.stop()
    if tunables is None:
        # Re-executed once under the tunable (same PID): 24 MiB of bodies, most in 2 MiB pages.
        assert "GLIBC_TUNABLES=glibc.malloc.hugetlb=1" in environ
        assert huge_kib >= 8 * 2048
        assert "the heap uses transparent huge pages" in srv.output()
    else:
        assert "GLIBC_TUNABLES=glibc.malloc.hugetlb=0" in environ
        assert huge_kib == 0
        assert "transparent huge pages" not in srv.output()
