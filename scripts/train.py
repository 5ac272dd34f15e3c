"""Rule train: one grid point on one dataset, resumable from its last.pth.

By hand (the same as `statetrain train ...`):
  python scripts/train.py --config config/config.yaml --dataset spec --set lr=0.003
  (add --quick for a 2-epoch smoke run into results/quick/).
"""

import sys
from pathlib import Path

from statetrain import cli, scripting
from statetrain.runner import run

if "snakemake" in globals():
    sm = globals()["snakemake"]
    paths = {s: sm.input[s] for s in ("train", "validation", "test")}
    training = {**sm.params.training, "threads": sm.threads}
    with scripting.rule_logging(sm.log[0]):
        run(
            sm.params.task,
            sm.params.data,
            training,
            paths,
            Path(sm.output.model).parent,
            labels=sm.params.labels,
            logging_cfg=sm.params.logging,
        )
elif __name__ == "__main__":
    sys.exit(cli.main(["train", *sys.argv[1:]]))
