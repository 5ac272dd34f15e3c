"""Rule generate_data: write one split of one dataset scenario as a float32 .npy file.

By hand: python scripts/generate_data.py --config config/config.yaml --dataset spec
"""

import logging

from statetrain import scripting
from statetrain.config import SPLITS, dataset_spec
from statetrain.data import generate_split, save_array

log = logging.getLogger("statetrain")


def main(spec: dict, split: str, out: str) -> None:
    array = generate_split(spec, split)
    save_array(array, out)
    log.info(
        "wrote %s: %d rows, phase_jitter %.4f rad, seed %d",
        out,
        len(array),
        spec["phase_jitter"],
        spec["seeds"][split],
    )


if "snakemake" in globals():
    sm = globals()["snakemake"]
    with scripting.rule_logging(sm.log[0]):
        main(sm.params.spec, sm.wildcards.split, sm.output[0])
elif __name__ == "__main__":
    p = scripting.parser(__doc__)
    p.add_argument("--dataset", default="spec")
    p.add_argument("--split", choices=SPLITS, nargs="+", default=list(SPLITS))
    args = p.parse_args()
    cfg = scripting.load(args)
    with scripting.rule_logging(args.log, echo=True):
        for split in args.split:
            path = scripting.DATA.format(dataset=args.dataset, split=split)
            main(dataset_spec(cfg, args.dataset), split, path)
