rule plot_sweep_curves:
    input:
        sweep_histories,
    output:
        report(
            f"{PLOTS}/sweep_loss_curves.png",
            caption="../report/sweep_curves.rst",
            category="Sweep",
            subcategory="{dataset}",
            labels={
                "figure": f"validation {TASK.monitor.removeprefix('val_')} per grid point"
            },
        ),
    log:
        f"{LOGS}/plot_sweep_curves/{{dataset}}.log",
    conda:
        "../envs/statetrain.yaml"
    params:
        names=lookup(within=POINT_NAMES, dpath="{dataset}"),
        title=sweep_title,
        monitor=TASK.monitor,
    script:
        "../../scripts/plot_loss_curves.py"


# The frequency task's figures: the assignment's Graph 1 and 2 and the learnability map.
if not TASK.batch:

    rule plot_predictions:
        input:
            model=f"{BEST}/best_model.pth",
            test=test_split,
        output:
            graph1=report(
                f"{PLOTS}/graph1.png",
                caption="../report/graph1.rst",
                category="Predictions",
                subcategory="{dataset}",
                labels={"figure": "Graph 1 (3 Hz)"},
            ),
            graph2=report(
                f"{PLOTS}/graph2.png",
                caption="../report/graph2.rst",
                category="Predictions",
                subcategory="{dataset}",
                labels={"figure": "Graph 2 (all frequencies)"},
            ),
        log:
            f"{LOGS}/plot_predictions/{{dataset}}.log",
        conda:
            "../envs/statetrain.yaml"
        params:
            fs=lookup(within=SPECS, dpath="{dataset}/fs"),
            title=dataset_title,
        script:
            "../../scripts/plot_predictions.py"

    rule plot_learnability:
        input:
            f"{SWEEP}/summary.csv",
        output:
            figure=report(
                f"{ROOT}/plots/learnability.png",
                caption="../report/learnability.rst",
                category="Sweep",
                labels={"figure": "learnability"},
            ),
            table=f"{SWEEP}/learnability.md",
        log:
            f"{LOGS}/plot_learnability.log",
        conda:
            "../envs/statetrain.yaml"
        script:
            "../../scripts/plot_learnability.py"


# A batch task's figures (task.figures: VAE losses and latent space; classifier ROC, PR and
# confusion matrix), from the selected model on the test split.
if TASK.batch:

    rule plot_task:
        input:
            model=f"{BEST}/best_model.pth",
            splits=all_splits,
        output:
            [
                report(
                    f"{PLOTS}/{name}",
                    caption="../report/task_figure.rst",
                    category="Figures",
                    subcategory="{dataset}",
                    labels={"figure": name.removesuffix(".png")},
                )
                for name in TASK.figures
            ],
        log:
            f"{LOGS}/plot_task/{{dataset}}.log",
        conda:
            "../envs/statetrain.yaml"
        params:
            task=config["task"],
            spec=lookup(within=SPECS, dpath="{dataset}"),
            figures=TASK.figures,
            title=task_title,
        script:
            "../../scripts/plot_task.py"


# The headline (one row per dataset: the selected grid point and its test scores), shown on
# the report's landing page (workflow/report/workflow.rst) and as a table of its own.
rule headline_table:
    input:
        f"{SWEEP}/summary.csv",
    output:
        report(
            f"{SWEEP}/headline.csv",
            caption="../report/headline.rst",
            category="Sweep",
            labels={"table": "selected models"},
        ),
    log:
        f"{LOGS}/headline_table.log",
    conda:
        "../envs/statetrain.yaml"
    params:
        metric=TASK.selection_metric,
        criterion=f"{'lowest' if TASK.mode == 'min' else 'highest'} frozen validation "
        f"{TASK.selection_metric}",
    script:
        "../../scripts/headline_table.py"
