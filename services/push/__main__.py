"""``python -m services.push``: the push to Shopify (``services.push.process``)."""

from __future__ import annotations

import sys

from services.push.process import main

if __name__ == "__main__":
    sys.exit(main())
