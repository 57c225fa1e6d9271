"""The subcommands of `unet-fast`, one module each (see unet_fast/cli.py).

Exit codes, the same for every command and for both `segment` paths (one process, `--ray`):"""

EXIT_OK = 0  # everything asked for was done
EXIT_FAILURE = 1  # the run could not go on: the engine could not be built, Ray is missing, --out cannot be made
EXIT_USAGE = 2  # bad usage, nothing done: a bad option, a path or glob naming nothing, bad weights or card
EXIT_INPUTS_FAILED = 3  # some inputs failed (each named on stderr); every other input was done and written
