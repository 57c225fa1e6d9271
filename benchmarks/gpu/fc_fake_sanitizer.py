"""A stand-in for compute-sanitizer, used by `first_contact.py --dry-run` (no GPU, no CUDA toolkit needed):
takes the same command line (`--tool NAME ... PROGRAM ARGS`), runs PROGRAM and prints the banner and the
summary lines the real tool prints, so the sanitizer stage's command building, timeouts and log parsing
run exactly as they will on the GPU machine. It checks nothing: the stage labels its results as a dry run.
`FC_FAKE_SANITIZER_ERRORS=N` makes it report N errors (to test how findings are reported)."""

from __future__ import annotations

import os
import subprocess
import sys


def main(argv: list[str]) -> int:
    tool, error_exitcode, i = "memcheck", 0, 0
    while i < len(argv) and argv[i].startswith(
        "-"
    ):  # options, each with one value (as first_contact passes them)
        if argv[i] == "--tool":
            tool = argv[i + 1]
        elif argv[i] == "--error-exitcode":
            error_exitcode = int(argv[i + 1])
        i += 2
    if i >= len(argv):
        print("fake compute-sanitizer: no program given", file=sys.stderr)
        return 2
    print(
        "========= COMPUTE-SANITIZER (fake: benchmarks/gpu/fc_fake_sanitizer.py, nothing is checked)",
        flush=True,
    )
    rc = subprocess.run(argv[i:]).returncode
    errors = int(os.environ.get("FC_FAKE_SANITIZER_ERRORS", "0"))
    if tool == "racecheck":
        print(f"========= RACECHECK SUMMARY: {errors} hazards displayed ({errors} errors, 0 warnings)")
    print(f"========= ERROR SUMMARY: {errors} error{'' if errors == 1 else 's'}", flush=True)
    return error_exitcode if errors and error_exitcode else rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
