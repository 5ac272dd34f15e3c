"""Rule select_checkpoint: the best grid point of one dataset by the task's frozen
validation metric (MSE for frequency, the total loss for vae, AUC-PR for classifier); the
test split plays no part in the choice (statetrain.selection)."""

from statetrain import scripting
from statetrain.selection import select_grid_point

sm = globals()["snakemake"]
with scripting.rule_logging(sm.log[0]):
    select_grid_point(
        sm.wildcards.dataset,
        sm.params.names,
        list(sm.input.metrics),
        list(sm.input.models),
        sm.output.model,
        sm.output.selection,
        sm.output.metrics,
        sm.params.metric,
        sm.params.mode,
    )
