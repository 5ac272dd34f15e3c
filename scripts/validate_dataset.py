"""Rule validate_dataset: check a split before anything trains on it; write the report.

A bad file stops the workflow here, with a message naming the check, the row/column and what
was expected. By hand: `statetrain data --config ... --dataset ...`.
"""

import logging

from statetrain import scripting
from statetrain.io import write_json
from statetrain.tasks import get_task

sm = globals()["snakemake"]
with scripting.rule_logging(sm.log[0]):
    report = get_task(sm.params.task, sm.params.spec).check_split(sm.input[0])
    write_json(report, sm.output[0])
    logging.getLogger("statetrain").info("%s is valid", sm.input[0])
