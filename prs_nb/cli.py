"""The ``prs-nb`` command line."""

from __future__ import annotations

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    from prs_nb.demo import run_demo

    result = run_demo(root=args.root, n_files=args.files, workers=args.workers, progress=None)
    print(result.summary())
    lines = result.read_lines()
    if lines:
        print(f"\nfirst rows of {result.output_path} (file mean hot_readings):")
        for line in sorted(lines)[:5]:
            print("  " + line)
    return 0 if result.status == "Completed" else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prs-nb", description="Run Azure ML parallel-run jobs locally.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    d = sub.add_parser("demo", help="run a demo job on generated data and print its summary")
    d.add_argument("--root", default="prs_demo", help="folder for the generated data and runs (default prs_demo)")
    d.add_argument("--files", type=int, default=400, help="number of generated files (default 400)")
    d.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU cores)")
    d.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
