"""Run the pkggov CLI as `python -m pkggov_client`."""

from __future__ import annotations

import sys

from pkggov_client.cli import main

if __name__ == "__main__":
    sys.exit(main())
