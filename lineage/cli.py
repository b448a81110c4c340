"""The `lineage` command: `run` (a Hydra job or sweep), `compare` (an audit of two model
files, or of a model file and a deployed model's URL), `tree` (the lineage forest of a
collection of model files) and `serve` (a model over the Open
Inference Protocol, lineage.remote). Exit code 0 for a completed comparison, whatever the
verdict; 2 with a one-line message for bad input (missing or corrupt files, mismatched
tasks, bad options).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from .interrupt import guard

log = logging.getLogger("lineage")


def add_reference_options(p: Any, when: str) -> None:
    """--references N and --reference FILE, as `compare` and `tree` take them; `when`: when
    the config's n_independent is the default."""
    p.add_argument(
        "--references",
        type=int,
        default=None,
        help="independent references to train or load for calibration (default: none "
        f"beside --reference files; else the config's n_independent when {when})",
    )
    p.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="FILE",
        help="an independent model file to calibrate against (repeatable)",
    )


def add_compare(sub: Any) -> None:
    c = sub.add_parser("compare", help="is SUSPECT derived from PARENT, and how closely?")
    c.add_argument("parent", help="model file or Hugging Face folder")
    c.add_argument(
        "suspect",
        help="model file, Hugging Face folder, or a URL http(s)://host:port[/v2/models/NAME]",
    )
    c.add_argument("--arch", help="what builds a plain state dict: module:factory or a YAML")
    c.add_argument("--suspect-arch", help="--arch for the suspect when it differs")
    c.add_argument("--head", help="the parent's head layer (default: its last Linear)")
    c.add_argument("--data", help="dataset name or data YAML (default: the parent's)")
    c.add_argument("--data-root", help="folder holding the dataset files")
    add_reference_options(c, "the parent file records how it was trained, else 0")
    c.add_argument("--zoo", help="zoo folder for references (default outputs/zoo)")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.epilog = "Extra KEY=VALUE arguments are Hydra overrides, e.g. closeness.max_points=200."
    from .remote import cli as remote

    remote.add_remote_options(c)


def add_tree(sub: Any) -> None:
    t = sub.add_parser("tree", help="recover the lineage forest of a collection of model files")
    t.add_argument("files", nargs="+", metavar="FILE_OR_DIR", help="model files or folders of them")
    t.add_argument("--arch", help="what builds a plain state dict: module:factory or a YAML")
    t.add_argument("--data", help="dataset name or data YAML (default: the one the files name)")
    t.add_argument("--data-root", help="folder holding the dataset files")
    add_reference_options(t, "a file records how it was trained")
    t.add_argument(
        "--prune",
        type=float,
        default=None,
        metavar="MARGIN",
        help="skip pairs agreeing less than the most-agreeing references, less MARGIN",
    )
    t.add_argument(
        "--candidates",
        type=int,
        default=None,
        metavar="K",
        help="judge only pairs where one model is among the other's K nearest in weight space "
        "or K most-agreeing (default: every pair)",
    )
    t.add_argument("--zoo", help="zoo folder for references (default outputs/zoo)")
    t.add_argument("--out", help="folder for edges.json, tree.graphml, tree.png, recovery.json")
    t.epilog = "Extra KEY=VALUE arguments are Hydra overrides, e.g. closeness.max_points=200."


def tree_main(args: argparse.Namespace) -> int:
    """`lineage tree`: one line and exit 2 for bad input, as `compare`."""
    from .text import shorten

    if args.candidates is not None and args.candidates < 1:
        print(f"error: candidates must be at least 1, got {args.candidates}", file=sys.stderr)
        return 2
    for f in [*args.files, *args.reference]:
        if not Path(f).exists():  # before the heavy imports
            print(f"error: model file not found: {shorten(f)}", file=sys.stderr)
            return 2
    from .errors import LineageError
    from .text import printable
    from .tree_files import model_files

    try:  # light: the count of models is answered before torch loads
        model_files(args.files)
    except LineageError as e:
        print(f"error: {printable(e)}", file=sys.stderr)
        return 2
    if refused_for_memory("lineage tree"):
        return 2
    from .tree_files import run, summary

    if args.arch:  # the user's own module, as `compare` finds it
        cwd = str(Path.cwd())
        if cwd not in sys.path:
            sys.path.append(cwd)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        result = run(args)
    except LineageError as e:
        print(f"error: {printable(e)}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory (is ulimit -v too small for this task?)", file=sys.stderr)
        return 2
    print(summary(result))
    return 0


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("lineage")
    except PackageNotFoundError:
        return "unknown"


def missing_file(args: argparse.Namespace) -> str | None:
    """The first model file `compare` was given that does not exist (a URL is no file)."""
    from .remote.protocol import is_url
    from .text import shorten

    files = [args.parent, *([] if is_url(args.suspect) else [args.suspect]), *args.reference]
    for f in files:
        try:
            Path(f).stat()
        except FileNotFoundError:
            return f"model file not found: {shorten(f)}"
        except OSError:
            pass  # a name too long, a loop of links: load_model says which, in one line
    return None


def refused_for_memory(what: str) -> bool:
    """Refuse, in one line, a command that would fail midway for want of address space."""
    from .utils import address_space_error

    why = address_space_error(what)
    if why:
        print(f"error: {why}", file=sys.stderr)
    return why is not None


@guard("lineage")  # SIGTERM: exit 143 and say what was interrupted (lineage.interrupt)
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["run"]:  # Hydra parses its own command line: hand it the rest
        if not {"-h", "--help"} & set(argv) and refused_for_memory("lineage run"):
            return 2
        from .app import main as run_main

        sys.argv = [f"{Path(sys.argv[0]).name} run", *argv[1:]]
        run_main()
        return 0
    # The parser, --help, --version and argument errors import neither torch nor Lightning
    # (nor Hydra): a refusal costs a fraction of a second (benchmarks/bench_cli_light.py).
    p = argparse.ArgumentParser(prog="lineage", description=__doc__)
    p.add_argument("--version", action="version", version=f"lineage {version()}")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="one job, or -m a sweep (Hydra overrides; see lineage run --help)")
    add_compare(sub)
    add_tree(sub)
    from .remote import cli as remote

    remote.add_serve_parser(sub)
    from .report import cli as report_cli

    report_cli.add_parser(sub)
    args, extra = p.parse_known_args(argv)
    if args.command == "report":
        if extra:
            p.error(f"unrecognized arguments: {' '.join(extra)}")
        return report_cli.main(args)
    if args.command == "serve":
        if extra:
            p.error(f"unrecognized arguments: {' '.join(extra)}")
        if refused_for_memory("lineage serve"):
            return 2
        return remote.serve(args)
    args.overrides = [a for a in extra if "=" in a and not a.startswith("-")]
    if len(args.overrides) != len(extra):
        p.error(f"unrecognized arguments: {' '.join(a for a in extra if a not in args.overrides)}")
    if args.references is not None and args.references < 0:
        p.error("--references must be >= 0")
    if args.command == "tree":
        return tree_main(args)
    missing = missing_file(args)
    if missing:  # before the heavy imports: a typo in a path is answered at once
        print(f"error: {missing}", file=sys.stderr)
        return 2
    if refused_for_memory("lineage compare"):
        return 2

    from .audit import compare, report
    from .errors import LineageError
    from .text import printable

    if args.arch or args.suspect_arch:
        # The user's own --arch names a module of the folder they run in, as `python -m`
        # would see it (a console script does not); a model file never names code.
        cwd = str(Path.cwd())
        if cwd not in sys.path:
            sys.path.append(cwd)  # last: it never shadows an installed module
    # Progress goes to stderr, one line per stage; stdout holds only the result.
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    # httpx logs every request at INFO: hundreds of lines in one remote audit
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        result = compare(args)
    except LineageError as e:
        print(f"error: {printable(e)}", file=sys.stderr)
        return 2
    except MemoryError:  # a limit above the floor can still be too small for the task
        print("error: out of memory (is ulimit -v too small for this task?)", file=sys.stderr)
        return 2
    print(json.dumps(result, default=str) if args.json else report(result))
    return 0
