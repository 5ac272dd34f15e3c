rule select_checkpoint:
    input:
        unpack(select_inputs),
    output:
        model=f"{BEST}/best_model.pth",
        selection=f"{BEST}/selection.json",
        metrics=f"{BEST}/metrics.json",
    log:
        f"{LOGS}/select_checkpoint/{{dataset}}.log",
    wildcard_constraints:
        dataset=SELECTED_RE,
    conda:
        "../envs/statetrain.yaml"
    params:
        names=lookup(within=POINT_NAMES, dpath="{dataset}"),
        metric=TASK.selection_metric,
        mode=TASK.mode,
    script:
        "../../scripts/select_checkpoint.py"


# Per-frequency experts, each selected on its own validation split, combined into one model
# and scored on the full four-stream validation and test splits.
rule combine_experts:
    input:
        models=member_models,
        metrics=member_metrics,
        validation=validation_split,
        test=test_split,
        reports=scored_split_reports,
    output:
        model=f"{BEST}/best_model.pth",
        selection=f"{BEST}/selection.json",
        metrics=f"{BEST}/metrics.json",
    log:
        f"{LOGS}/combine_experts/{{dataset}}.log",
    wildcard_constraints:
        dataset=EXPERTS_RE,
    conda:
        "../envs/statetrain.yaml"
    params:
        members=lookup(within=EXPERTS, dpath="{dataset}"),
        member_streams=member_streams,
        frequencies=lookup(within=SPECS, dpath="{dataset}/frequencies"),
    script:
        "../../scripts/combine_experts.py"


rule summarize_sweep:
    input:
        metrics=[
            f
            for dataset in [*DATASETS, *ASSEMBLIES]
            for f in run_files(dataset, "metrics.json")
        ]
        + expand(f"{BEST}/metrics.json", dataset=list(EXPERTS)),
        selections=expand(
            f"{BEST}/selection.json", dataset=[*DATASETS, *EXPERTS, *ASSEMBLIES]
        ),
    output:
        report(
            f"{SWEEP}/summary.csv",
            caption="../report/summary.rst",
            category="Sweep",
            labels={"table": "summary"},
        ),
    log:
        f"{LOGS}/summarize_sweep.log",
    conda:
        "../envs/statetrain.yaml"
    params:
        task=config["task"],
        specs=SPECS,
    script:
        "../../scripts/summarize_sweep.py"
