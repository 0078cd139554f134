"""handprop_jax.hostmem: when the process re-executes itself with malloc huge pages, and with what."""

import os
import subprocess
import sys

import pytest

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


def test_accelerator_requested_from_jax_platforms_or_installed_plugins():
    nothing = dict(installed=lambda name: False, exists=lambda path: False)
    assert not hostmem.accelerator_requested({"JAX_PLATFORMS": "cpu"})
    assert hostmem.accelerator_requested({"JAX_PLATFORMS": "cuda,cpu"}, **nothing)
    assert hostmem.accelerator_requested({"JAX_PLATFORMS": "tpu"}, **nothing)
    assert not hostmem.accelerator_requested({"JAX_PLATFORMS": "cpu,cuda"},  # the first entry decides
                                             installed=lambda n: True, exists=lambda p: True)
    assert hostmem.accelerator_requested({"JAX_PLATFORM_NAME": "gpu"}, **nothing)
    # unset: a plugin counts only with its device node present
    assert not hostmem.accelerator_requested({}, **nothing)
    cuda = lambda name: name == "jax_cuda12_plugin"
    assert not hostmem.accelerator_requested({}, installed=cuda, exists=lambda p: False)
    assert hostmem.accelerator_requested({}, installed=cuda, exists=lambda p: p == "/dev/nvidiactl")
    assert not hostmem.accelerator_requested({}, installed=cuda, exists=lambda p: p == "/dev/accel0")
    tpu = lambda name: name == "libtpu"
    assert hostmem.accelerator_requested({}, installed=tpu, exists=lambda p: p == "/dev/accel0")


def test_only_cpu_training_commands_pay_off(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    for args, want in ((["train", "--config", "tiny"], True), (["demo"], True), (["evaluate", "-h"], False),
                       (["propagate"], False), (["data", "build", "x"], False), (["visualize"], False),
                       (["--help"], False), ([], False)):
        assert hostmem.command_pays_off(args) is want, args
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    assert not hostmem.command_pays_off(["train", "--config", "tiny"])


@pytest.mark.slow  # quick tier (make test-fast): starts the program in subprocesses, runs in make test
def test_handprop_reexecutes_for_train_only(tmp_path):
    """The real ``handprop`` program: ``evaluate`` runs in its first process; ``train`` re-executes
    once with the tunable where the platform supports it (each process prints one line first)."""
    code = ("import os, sys; sys.argv = ['handprop'] + sys.argv[1:]; from handprop_jax import cli; "
            "print('T=' + os.environ.get('GLIBC_TUNABLES', ''), flush=True); sys.exit(cli.main())")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "HANDPROP_HUGEPAGES")}
    env["JAX_PLATFORMS"] = "cpu"
    run = lambda *args: subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                                       text=True)
    out = run("evaluate", "--workdir", str(tmp_path / "none"))
    assert out.stdout.splitlines() == ["T="] and "config.json not found" in out.stderr
    out = run("train", "--config", "no_such_config", "--workdir", str(tmp_path / "w"))
    supported = hostmem._glibc_supports_hugetlb() and hostmem._thp_enabled()
    assert out.stdout.splitlines() == (["T=", "T=glibc.malloc.hugetlb=1"] if supported else ["T="])
    assert out.returncode == 2 and "no_such_config" in out.stderr
