"""Rule generate_data: write one split of one dataset scenario (the task generates it, or
reads and splits the user's file). By hand: `statetrain data --config ... --dataset ...`."""

import logging

from statetrain import scripting
from statetrain.tasks import get_task

sm = globals()["snakemake"]
with scripting.rule_logging(sm.log[0]):
    task = get_task(sm.params.task, sm.params.spec)
    logging.getLogger("statetrain").info(
        "wrote %s", task.write_split(sm.wildcards.split, sm.output[0])
    )
