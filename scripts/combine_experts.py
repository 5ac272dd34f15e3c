"""Rule combine_experts: per-frequency experts → one ExpertLSTM, scored on all four streams.

Each member dataset trains one expert on one stream (`streams: [f]`) and selects its best grid
point on its own frozen validation split; nothing here chooses anything. The combined model
routes every row to the expert of its one-hot C and is scored frozen, with the state carried
from each stream start, on the full validation and test splits (the same seeds, so each
expert meets exactly the rows it was scored on); the logic is statetrain.tasks.frequency.experts.
"""

from statetrain import scripting
from statetrain.tasks.frequency.experts import combine_experts

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
