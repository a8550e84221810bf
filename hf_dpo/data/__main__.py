"""``python -m hf_dpo.data key=value ...``: inspect a preference dataset (see hf_dpo.data.inspection)."""

from hf_dpo.data.inspection import main

raise SystemExit(main())
