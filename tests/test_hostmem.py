"""handprop_jax.hostmem: when the process re-executes itself with malloc huge pages, and with what."""

import os
import subprocess
import sys

from handprop_jax import hostmem


def test_env_adds_the_tunable_once_and_keeps_others():
    assert hostmem.hugepage_env({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    env = hostmem.hugepage_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "X": "1"})
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert env["X"] == "1"
    assert hostmem.hugepage_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None  # user's choice
    assert hostmem.hugepage_env({"GLIBC_TUNABLES": env["GLIBC_TUNABLES"]}) is None  # no loop
    assert hostmem.hugepage_env({"HANDPROP_HUGEPAGES": "0"}) is None
    # children can get the environment back as it was
    assert hostmem.original_environ(env) == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "X": "1"}
    assert hostmem.original_environ(hostmem.hugepage_env({"Y": "2"})) == {"Y": "2"}
    assert hostmem.original_environ({"Z": "3"}) == {"Z": "3"}


def test_reexec_calls_execve_with_the_original_command_line(monkeypatch):
    calls = []
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.delenv("HANDPROP_HUGEPAGES", raising=False)
    assert hostmem.reexec_with_hugepages(lambda *a: calls.append(a), supported=True)
    (path, argv, env), = calls
    assert path == sys.executable and argv == list(sys.orig_argv)
    assert env["GLIBC_TUNABLES"] == hostmem.TUNABLE
    assert not hostmem.reexec_with_hugepages(lambda *a: calls.append(a), supported=False)
    monkeypatch.setenv("HANDPROP_HUGEPAGES", "0")
    assert not hostmem.reexec_with_hugepages(lambda *a: calls.append(a), supported=True)
    assert len(calls) == 1


def test_thp_setting_parsing(tmp_path):
    f = tmp_path / "enabled"
    for text, want in (("always [madvise] never\n", True), ("[always] madvise never\n", True),
                       ("always madvise [never]\n", False)):
        f.write_text(text)
        assert hostmem._thp_enabled(f) is want
    assert hostmem._thp_enabled(tmp_path / "missing") is False


def test_a_real_process_reexecutes_once_with_the_tunable():
    code = ("import os; from handprop_jax import hostmem; hostmem.reexec_with_hugepages(); "
            "print('T=' + os.environ.get('GLIBC_TUNABLES', ''))")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "HANDPROP_HUGEPAGES")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    supported = hostmem._glibc_supports_hugetlb() and hostmem._thp_enabled()
    # printed once (exec replaced the first run before it printed), with the tunable where supported
    assert out.stdout.splitlines() == ["T=glibc.malloc.hugetlb=1" if supported else "T="]
