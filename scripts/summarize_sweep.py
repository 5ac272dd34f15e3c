"""Rule summarize_sweep: one CSV row per dataset × grid point, the selected ones marked
(statetrain.selection.summarize; the task decides its columns)."""

from statetrain import scripting
from statetrain.selection import summarize

sm = globals()["snakemake"]
with scripting.rule_logging(sm.log[0]):
    summarize(
        sm.params.task,
        sm.params.specs,
        list(sm.input.metrics),
        list(sm.input.selections),
        sm.output[0],
    )
