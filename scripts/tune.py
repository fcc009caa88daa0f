"""`python scripts/tune.py ARGS` is `cryptorl tune ARGS` (cryptorl_jax/cli/tune.py)."""

import sys

from cryptorl_jax.cli.tune import main

if __name__ == "__main__":
    sys.exit(main())
