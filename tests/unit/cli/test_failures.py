"""One mapping from exception to `error:` line at the CLI edge: what the user's paths, disk, text or
sizes caused is exit 2 with the path and the fix; only real bugs are "internal error" (exit 1)."""

from __future__ import annotations

import errno
import os

import pytest

from clusterlm.cli.main import describe_failure, main
from clusterlm.errors import ConfigError, TrainingError


def _os_error(code: int, path: str = "/data/run") -> OSError:
    return OSError(code, os.strerror(code), path)


@pytest.mark.parametrize("code, words", [
    (errno.EACCES, "permission denied"), (errno.EPERM, "not permitted"), (errno.ENOTDIR, "not a directory"),
    (errno.EEXIST, "already exists"), (errno.EROFS, "read-only file system"), (errno.ENOSPC, "no space left"),
    (errno.EDQUOT, "quota"), (errno.EISDIR, "is a directory"), (errno.ENOENT, "does not exist"),
    (errno.ENAMETOOLONG, "too long"), (errno.ELOOP, "symbolic links"), (errno.EADDRINUSE, "--port"),
])
def test_user_caused_os_errors_name_the_path_and_the_fix(code, words):
    message, status = describe_failure(_os_error(code))
    assert status == 2 and message.startswith("/data/run: ") and words in message and "; " in message
    assert "internal error" not in message


def test_an_os_error_with_two_paths_names_both():
    message, _ = describe_failure(OSError(errno.ENOENT, "No such file or directory", "/a", None, "/b"))
    assert "/a → /b" in message


def test_machine_failures_are_exit_1_but_not_bugs():
    message, status = describe_failure(_os_error(errno.EIO))
    assert status == 1 and "internal error" not in message and "/data/run" in message


@pytest.mark.parametrize("exc, words", [
    (MemoryError(), "out of memory"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried"),
     "out of memory"),
    (type("OutOfMemoryError", (RuntimeError,), {})("CUDA out of memory. Tried to allocate 2 GiB"), "out of memory"),
])
def test_sizes_beyond_memory_are_user_errors(exc, words):
    message, status = describe_failure(exc)
    assert status == 2 and words in message


def test_text_that_is_not_unicode_is_a_user_error():
    with pytest.raises(UnicodeEncodeError) as info:
        "a\ud800".encode("utf-8")
    message, status = describe_failure(info.value)
    assert status == 2 and "not valid Unicode" in message


def test_undecodable_input_says_where():
    try:
        b"ok\xffno".decode("utf-8")
    except UnicodeDecodeError as exc:
        message, status = describe_failure(exc)
    assert status == 2 and "byte 2" in message


def test_own_errors_keep_their_status_and_bugs_are_internal():
    assert describe_failure(ConfigError("bad key")) == ("bad key", 2)
    assert describe_failure(TrainingError("diverged")) == ("diverged", 1)
    message, status = describe_failure(ZeroDivisionError("division by zero"))
    assert status == 1 and message.startswith("internal error (ZeroDivisionError")


def test_a_permission_error_inside_a_verb_is_one_line_exit_2(monkeypatch, capsys, tmp_path):
    """End to end through main: a verb whose write is refused (as root, chmod cannot provoke it)."""
    def refuse(path, data):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr("clusterlm.cli.theory.run", lambda args: refuse(tmp_path / "ro" / "x", b""))
    assert main(["theory", "backprop"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {tmp_path / 'ro' / 'x'}: permission denied; ")


def test_multi_line_messages_become_one_line(capsys):
    import clusterlm.cli.theory as theory

    original = theory.run
    try:
        theory.run = lambda args: (_ for _ in ()).throw(ConfigError("first\nsecond"))
        assert main(["theory", "backprop"]) == 2
    finally:
        theory.run = original
    assert capsys.readouterr().err == "error: first second\n"
