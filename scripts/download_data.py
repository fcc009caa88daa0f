"""`python scripts/download_data.py ARGS` is `cryptorl download ARGS` (cli/download.py)."""

import sys

from cryptorl_jax.cli.download import main

if __name__ == "__main__":
    sys.exit(main())
