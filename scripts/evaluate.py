"""`python scripts/evaluate.py ARGS` is `cryptorl evaluate ARGS` (cryptorl_jax/cli/evaluate.py)."""

import sys

from cryptorl_jax.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
