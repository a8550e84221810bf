"""``python -m hf_dpo.eval [eval.yaml] key=value ...``."""

import sys

from hf_dpo.eval.runner import main

sys.exit(main())
