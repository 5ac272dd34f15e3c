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
        names=lambda wildcards: POINT_NAMES[wildcards.dataset],
        metric=TASK.selection_metric,
        mode=TASK.mode,
    script:
        "../../scripts/select_checkpoint.py"


# Per-frequency experts, each selected on its own validation split, combined into one model
# and scored on the full four-stream validation and test splits.
rule combine_experts:
    input:
        models=lambda wildcards: expand(
            f"{BEST}/best_model.pth", dataset=EXPERTS[wildcards.dataset]
        ),
        metrics=lambda wildcards: expand(
            f"{BEST}/metrics.json", dataset=EXPERTS[wildcards.dataset]
        ),
        validation=lambda wildcards: split_file(wildcards.dataset, "validation"),
        test=lambda wildcards: split_file(wildcards.dataset, "test"),
        reports=lambda wildcards: expand(
            f"{DATA}/{{split}}.validation.json",
            dataset=wildcards.dataset,
            split=["validation", "test"],
        ),
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
        members=lambda wildcards: EXPERTS[wildcards.dataset],
        member_streams=lambda wildcards: [
            SPECS[m]["streams"][0] for m in EXPERTS[wildcards.dataset]
        ],
        frequencies=lambda wildcards: SPECS[wildcards.dataset]["frequencies"],
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
