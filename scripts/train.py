"""Rule train: one grid point on one dataset, resumable from its last.pth.

By hand (the same as `statetrain train ...`):
  python scripts/train.py --config config/config.yaml --dataset spec --set lr=0.003
  (add --quick for a 2-epoch smoke run into results/quick/).
"""

import sys
from pathlib import Path

from statetrain import cli, scripting
from statetrain.runner import train_batch_run, train_run

if "snakemake" in globals():
    sm = globals()["snakemake"]
    paths = {"train": sm.input.train, "validation": sm.input.validation, "test": sm.input.test}
    training = {**sm.params.training, "threads": sm.threads}
    out_dir = Path(sm.output.model).parent
    with scripting.rule_logging(sm.log[0]):
        if sm.params.task != "frequency":
            train_batch_run(
                sm.params.task,
                training,
                paths,
                out_dir,
                sm.params.data,
                labels=sm.params.labels,
                logging_cfg=sm.params.logging,
            )
        else:
            train_run(
                training,
                paths,
                out_dir,
                sm.params.frequencies,
                min_stream_length=sm.params.min_stream_length,
                labels=sm.params.labels,
                logging_cfg=sm.params.logging,
                data_spec=sm.params.data,
            )
elif __name__ == "__main__":
    sys.exit(cli.main(["train", *sys.argv[1:]]))
