"""Rule combine_experts: per-frequency experts → one ExpertLSTM, scored on all four streams.

Each member dataset trains one expert on one stream (`streams: [f]`) and selects its best grid
point on its own frozen validation split; nothing here chooses anything. The combined model
routes every row to the expert of its one-hot C and is scored frozen, with the state carried
from each stream start, on the full validation and test splits (the same seeds, so each
expert meets exactly the rows it was scored on). By hand:
  python scripts/combine_experts.py --config config/experts.yaml --experts experts
"""

from statetrain import scripting
from statetrain.config import dataset_spec, expert_spec
from statetrain.experts import combine_experts

if "snakemake" in globals():
    sm = globals()["snakemake"]
    with scripting.rule_logging(sm.log[0]):
        combine_experts(
            sm.wildcards.dataset,
            sm.params.members,
            sm.params.member_streams,
            sm.params.frequencies,
            list(sm.input.models),
            list(sm.input.metrics),
            {"validation": sm.input.validation, "test": sm.input.test},
            sm.output.model,
            sm.output.metrics,
            sm.output.selection,
        )
elif __name__ == "__main__":
    p = scripting.parser(__doc__)
    p.add_argument("--experts", required=True, help="a name under `experts:` in the config")
    args = p.parse_args()
    cfg = scripting.load(args)
    members = cfg["experts"][args.experts]
    spec = expert_spec(cfg, args.experts)
    best = scripting.BEST.format(dataset=args.experts)
    with scripting.rule_logging(args.log, echo=True):
        combine_experts(
            args.experts,
            members,
            [dataset_spec(cfg, m)["streams"][0] for m in members],
            spec["frequencies"],
            [f"{scripting.BEST.format(dataset=m)}/best_model.pth" for m in members],
            [f"{scripting.BEST.format(dataset=m)}/metrics.json" for m in members],
            {s: scripting.data_path(cfg, args.experts, s) for s in ("validation", "test")},
            f"{best}/best_model.pth",
            f"{best}/metrics.json",
            f"{best}/selection.json",
        )
