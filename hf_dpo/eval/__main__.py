"""``python -m hf_dpo.eval [eval.yaml] key=value ...``."""

import sys

from .runner import main

sys.exit(main())
