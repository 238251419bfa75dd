"""What mixed precision buys: a training step timed per precision x batch size x model size, with peak memory,
speedup over 32-true, FLOPs, MFU, loss parity and (``--overhead``) Lightning's per-step cost. The measuring code
lives in :mod:`mmfuse.bench`; this script only parses arguments and picks the results directory.

    python benchmarks/amp.py --size tiny --batch-size 8 32 --threads 1 --overhead
    python benchmarks/amp.py --replot benchmarks/results/amp_h200   # amp.md and plots again, from amp.json

Results go to ``benchmarks/results/amp_<device>/`` (``amp.json``, ``amp.md``, ``amp_<size>.png``); ``amp.json``
is rewritten after every cell, so a run that is stopped keeps what it measured. ``benchmarks/gpu.sh`` runs the
GPU sweep.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mmfuse.bench import render_report
from mmfuse.commands.bench import add_amp_arguments, run_amp
from mmfuse.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_amp_arguments(parser, default_out=str(REPO / "benchmarks" / "results" / "amp_{device}"))
    parser.add_argument("--replot", metavar="DIR", help="only rewrite amp.md and the plots of DIR from its amp.json")
    args = parser.parse_args()
    try:
        if args.replot:
            for path in render_report(args.replot):
                print(f"wrote {path}")
            return
        run_amp(args)
    except ConfigError as err:
        print(f"amp.py: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
