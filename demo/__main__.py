"""python -m demo: walk the phase-4 checklist against a running system; exit 0 only if all pass."""

import asyncio
import sys

from demo.checklist import main

sys.exit(asyncio.run(main()))
