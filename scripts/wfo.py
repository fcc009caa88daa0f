"""`python scripts/wfo.py ARGS` is `cryptorl wfo ARGS` (cryptorl_jax/cli/wfo.py)."""

import sys

from cryptorl_jax.cli.wfo import main

if __name__ == "__main__":
    sys.exit(main())
