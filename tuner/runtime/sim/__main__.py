"""`python -m tuner.runtime.sim ...`: run the simulated SGLang server (see server.main)."""

import sys

from tuner.runtime.sim.server import main

if __name__ == "__main__":
    sys.exit(main())
