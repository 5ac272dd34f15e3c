# statetrain: data → validation → training per grid point → selection → plots, for every
# task (`task: frequency | vae | classifier | sequence`; src/statetrain/tasks).
#
#   snakemake --cores 1                                  # the default experiment
#   snakemake --cores 2 --configfile config/quick.yaml   # instead of config/config.yaml
#   snakemake --cores 2 --configfile config/vae.yaml     # the denoising VAE
from snakemake.utils import min_version

min_version("9.0")


# No `configfile:` here: the default experiment, config/config.yaml, comes from the workflow
# profile (profiles/default/config.yaml), so a --configfile on the command line takes its
# place, and several --configfile files merge, exactly as Snakemake documents.
if not config:
    raise WorkflowError(
        "statetrain: no configuration. Run from the repository root (the workflow profile "
        "profiles/default gives config/config.yaml) or pass --configfile config/config.yaml "
        "(or your own experiment's file)."
    )


# The report's landing page: the experiment's headline table (workflow/report/workflow.rst).
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/assemble.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/export.smk"


rule all:
    default_target: True
    input:
        final_outputs(),


# Everything but training runs on the submit host when a cluster executor is used: these
# jobs take seconds, and a cluster queue would only add waiting.
localrules:
    all,
    headline_table,
    generate_data,
    validate_dataset,
    select_checkpoint,
    combine_experts,
    assemble_experts,
    summarize_sweep,
    plot_sweep_curves,
    export_onnx,


if TASK.batch:

    localrules:
        plot_task,

else:

    localrules:
        plot_predictions,
        plot_learnability,
