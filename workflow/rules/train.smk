# One job per dataset × grid point. last.pth (the resumable state) is written next to the
# declared outputs but is NOT declared: Snakemake deletes declared outputs before a job runs
# and after it fails, so only an undeclared file lets a killed job resume.
rule train:
    input:
        unpack(train_inputs),
    output:
        model=f"{RUNS}/best_model.pth",
        history=f"{RUNS}/training_history.json",
        csv=f"{RUNS}/history.csv",
        metrics=f"{RUNS}/metrics.json",
        curves=report(
            f"{RUNS}/loss_curves.png",
            caption="../report/loss_curves.rst",
            category="Loss curves",
            subcategory="{dataset}",
            labels=run_labels,
        ),
    log:
        f"{LOGS}/train/{{dataset}}/{GRID.wildcard_pattern}.log",
    wildcard_constraints:
        dataset=DATASET_RE,
    priority: train_priority
    conda:
        "../envs/statetrain.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    params:
        training=train_params,
        task=config["task"],
        labels=run_labels,
        logging=config["logging"],
        data=lookup(within=SPECS, dpath="{dataset}"),
    script:
        "../../scripts/train.py"
