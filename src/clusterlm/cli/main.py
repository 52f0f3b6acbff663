"""`clusterlm` entry point: dispatch to one module per verb, turn user errors into one line.

Each verb lives in `clusterlm/cli/<module>.py` and exposes `add_arguments(parser)`
and `run(args) -> int`; its module docstring is its `--help` description. A verb module
only parses and prints; the work is one call into `clusterlm.api`. Verb modules are imported
only when used, and import the api inside `run`, so `--help` never imports torch (seconds).

Process-wide settings belong here, at the entry point, never in library code:
  * for verbs that train, glibc's allocator is told to keep freed memory (`runtime/host.py`,
    ~1.4× faster CPU steps); `--no-host-tuning` (or CLUSTERLM_NO_HOST_TUNING=1) leaves it alone;
  * a worker started by torchrun (TORCHELASTIC_RUN_ID set) asks the kernel for SIGTERM when its
    agent dies (`runtime/host.exit_with_parent`), so killing the agent never leaves workers
    training on their own; SIGTERM makes the trainer checkpoint after the step and exit.

Errors end here, as one line on stderr (`describe_failure`): the project's own errors with their
message and exit status; what the user's environment caused — a path that cannot be written, a
full disk, text that is not valid Unicode, sizes beyond the machine's memory — with the path and
the fix, exit 2; anything else is a bug ("internal error", exit 1; `--debug` shows the traceback).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from dataclasses import dataclass

from clusterlm import __version__
from clusterlm.errors import ClusterLMError
from clusterlm.runtime.host import exit_with_parent, keep_freed_host_memory


@dataclass(frozen=True)
class Verb:
    module: str
    help: str


VERBS: dict[str, Verb] = {
    "prepare": Verb("prepare", "clean, tokenize and shard a text corpus into a dataset dir"),
    "train": Verb("train", "train a model from a config (one process, or many under torchrun)"),
    "eval": Verb("evaluate", "loss, perplexity, bits per byte and accuracy of a checkpoint"),
    "generate": Verb("generate", "generate text from a checkpoint (KV cache, streaming)"),
    "serve": Verb("serve", "serve a checkpoint over HTTP (OpenAI-style completions and chat)"),
    "export": Verb("export", "export a checkpoint to one safetensors file or HF transformers"),
    "cluster": Verb("cluster", "describe (show) or measure (probe) a cluster's hardware"),
    "plan": Verb("plan", "predict memory, time, energy and cost of a run on a cluster"),
    "launch": Verb("launch", "print or run torchrun / Slurm commands for a config"),
    "jobs": Verb("jobs", "show Slurm jobs: state, elapsed time, nodes, log tail"),
    "theory": Verb("theory", "worked examples: backprop by hand, the sigmoid classifier"),
    "quickstart": Verb("quickstart", "prepare → train → eval → generate on the default corpus"),
    "finetune": Verb("finetune", "fine-tune a checkpoint: classify, sft (full/LoRA); build task datasets"),
    "classify": Verb("classify", "label texts with a fine-tuned classifier"),
    "eval-translate": Verb("eval_translate", "chrF/BLEU of a translation model vs identity and TM"),
    "eval-qa": Verb("eval_qa", "exact match / F1 of a QA model vs TF-IDF retrieval"),
}


# Verbs that train a model: the allocator tuning pays off there (and nowhere else).
TRAINING_VERBS = ("train", "quickstart")
GLOBAL_FLAGS = ("--debug", "--no-host-tuning")


class ArgParser(argparse.ArgumentParser):
    """argparse with one-line errors (`error: …`) and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def _top_parser() -> ArgParser:
    lines = [f"  {name:<14} {verb.help}" for name, verb in VERBS.items()]
    parser = ArgParser(
        prog="clusterlm",
        description="Build a language model end to end and plan/run it on a cluster.",
        epilog="verbs:\n" + "\n".join(lines) + "\n\nRun 'clusterlm VERB --help' for a verb's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"clusterlm {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("--no-host-tuning", action="store_true",
                        help="leave the C allocator alone when training (see 'runtime/host.py')")
    parser.add_argument("verb", metavar="VERB", choices=list(VERBS), help="one of: " + ", ".join(VERBS))
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def verb_parser(name: str) -> tuple[ArgParser, object]:
    """Build the argument parser of one verb (used by main and by tests)."""
    module = importlib.import_module(f"clusterlm.cli.{VERBS[name].module}")
    parser = ArgParser(
        prog=f"clusterlm {name}",
        description=(module.__doc__ or VERBS[name].help).strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    return parser, module


# errno → (what happened, what to do). Each is caused by the user's paths or machine: exit 2.
_OS_ERRORS: dict[int, tuple[str, str]] = {
    errno.EACCES: ("permission denied", "choose a path you may write to, or change its permissions"),
    errno.EPERM: ("operation not permitted", "choose a path you may write to, or change its permissions"),
    errno.ENOTDIR: ("a part of this path is a file, not a directory", "choose a path inside a directory"),
    errno.EEXIST: ("already exists (as a file where a directory is needed?)", "choose another path or move it away"),
    errno.EISDIR: ("is a directory, not a file", "give a file path"),
    errno.ENOENT: ("does not exist", "check the path"),
    errno.EROFS: ("is on a read-only file system", "choose a writable location"),
    errno.ENOSPC: ("no space left on the device", "free some space or write to another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or write to another disk"),
    errno.EFBIG: ("file too large for this file system", "write to another file system"),
    errno.ENAMETOOLONG: ("file name too long", "choose a shorter path"),
    errno.ELOOP: ("too many levels of symbolic links", "fix the symbolic link loop"),
    errno.EMFILE: ("too many open files", "raise the limit (ulimit -n)"),
    errno.ENFILE: ("too many open files on this system", "close other programs or raise the limit"),
    errno.EADDRINUSE: ("address already in use", "choose another --port, or stop the program using it"),
    errno.EADDRNOTAVAIL: ("address not available on this machine", "choose another --host"),
}


def describe_failure(exc: BaseException) -> tuple[str, int]:
    """The one `error:` line (without the prefix) and exit status for an exception that ends a verb."""
    if isinstance(exc, ClusterLMError):
        return str(exc), exc.exit_code
    if isinstance(exc, OSError) and exc.errno in _OS_ERRORS:
        what, fix = _OS_ERRORS[exc.errno]
        where = " → ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
        return (f"{where}: {what}; {fix}" if where else f"{what}; {fix}"), 2
    if isinstance(exc, OSError) and exc.errno is not None:  # the machine failed (I/O, network): not a bug
        where = f"{exc.filename}: " if exc.filename is not None else ""
        return f"{where}{exc.strerror or exc}", 1
    if isinstance(exc, UnicodeDecodeError):
        return (f"input is not valid {exc.encoding} text ({exc.reason} at byte {exc.start}); "
                "convert it to UTF-8"), 2
    if isinstance(exc, UnicodeError):
        return (f"text that is not valid Unicode ({exc}); lone surrogates cannot be encoded — fix the "
                "input, or set PYTHONIOENCODING=utf-8 if the terminal cannot show it"), 2
    if _out_of_memory(exc):
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        return (f"out of memory ({detail}); lower the sizes (model, batch, sequence length) or use a "
                "machine with more memory"), 2
    return (f"internal error ({type(exc).__name__}: {exc}); rerun with --debug for the traceback "
            "and report it"), 1


def _out_of_memory(exc: BaseException) -> bool:
    """MemoryError, torch.OutOfMemoryError, or the CPU allocator's RuntimeError (matched by text:
    importing torch here would slow every `--help`)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Positional items (inputs, section.key=value overrides) may follow options; verbs with
    sub-commands (argparse cannot intermix those) parse the usual way."""
    try:
        return parser.parse_intermixed_args(argv)
    except TypeError:
        return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    for flag in GLOBAL_FLAGS:  # accepted before or after the verb
        if flag in argv:
            argv.remove(flag)
            argv.insert(0, flag)
    try:
        top = _top_parser().parse_args(argv)
        parser, module = verb_parser(top.verb)
        args = _parse(parser, top.rest)
        args.debug = debug
        if top.verb in TRAINING_VERBS and not (top.no_host_tuning or os.environ.get("CLUSTERLM_NO_HOST_TUNING")):
            keep_freed_host_memory()
        if os.environ.get("TORCHELASTIC_RUN_ID"):  # a torchrun worker: die with the agent
            exit_with_parent()
        return int(module.run(args) or 0)  # type: ignore[attr-defined]
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    except BrokenPipeError:
        # `clusterlm generate … | head`: the reader went away; not an error.
        sys.stderr.close()
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except Exception as exc:  # noqa: BLE001 - every failure is one line; --debug shows the traceback
        if debug:
            raise
        message, code = describe_failure(exc)
        sys.stderr.write(f"error: {_one_line(message)}\n")
        return code


def _one_line(message: str) -> str:
    """Exception texts may hold newlines (a path, a wrapped traceback); the contract is one line."""
    return " ".join(line.strip() for line in message.splitlines()) if "\n" in message else message


def entry() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    entry()
