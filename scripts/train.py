"""`python scripts/train.py ARGS` is `cryptorl train ARGS` (cryptorl_jax/cli/train.py)."""

import sys

from cryptorl_jax.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
