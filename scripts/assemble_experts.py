"""Rule assemble_experts: one grid point's per-frequency experts → ONE FrequencyLSTM, scored.

The logic is statetrain.tasks.frequency.assemble.assemble_from_files (block-diagonal assembly,
the other frequencies' one-hots closing each expert's gates), so the rule's model is exactly
the library's; a dataset with `training.init_from: <this assembly>` then fine-tunes it.
"""

from statetrain import scripting
from statetrain.tasks.frequency.assemble import assemble_from_files

if "snakemake" in globals():
    sm = globals()["snakemake"]
    with scripting.rule_logging(sm.log[0]):
        assemble_from_files(
            sm.wildcards.dataset,
            sm.params.point,
            list(sm.params.members),
            list(sm.params.member_streams),
            list(sm.params.frequencies),
            list(sm.input.models),
            list(sm.input.metrics),
            {"validation": sm.input.validation, "test": sm.input.test},
            sm.output.model,
            sm.output.metrics,
            sm.output.members,
            **sm.params.options,
        )
