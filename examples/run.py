"""Train with DPO from a YAML file plus key=value overrides; copy and adapt.

    accelerate launch examples/run.py yaml_configs/ultrafeedback.yaml learning_rate=5e-7 dpo_beta=0.1
    python examples/run.py yaml_configs/quickstart.yaml

The same command is installed as ``hf-dpo-train`` and runs as ``python -m hf_dpo.train``. With
``--python-api`` as the first argument, the script builds the config and calls ``hf_dpo.train.run`` itself
(the two lines to start from when you embed a run in your own code; bad input then raises instead of
printing a one-paragraph error).
"""

import sys

from hf_dpo import load_config
from hf_dpo.train import TrainConfig, main, run

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("--python-api"):
        # The same run through the Python API: build the config, then call run() (raises on bad input).
        config = load_config(TrainConfig, sys.argv[2:])
        result = run(config)
        print(f"final model: {result.final_dir}; test metrics: {result.eval_metrics}")
    else:
        sys.exit(main(sys.argv[1:]))
