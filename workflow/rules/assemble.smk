# Issue 19's recipe, step 2 of 3: the per-frequency experts (step 1: ordinary datasets with
# `streams: [f]`, trained by rule train and selected by select_checkpoint on their own frozen
# validation) placed block-diagonally into ONE FrequencyLSTM, scored frozen on the full
# validation and test splits like any model (results/best/<name>/, a row in summary.csv,
# Graph 1/2). Step 3, the joint fine-tune, is rule train on a dataset with
# `training.init_from: <name>` (common.smk resolves the name to this rule's model).
rule assemble_experts:
    input:
        models=lambda wildcards: expand(
            f"{BEST}/best_model.pth", dataset=ASSEMBLIES[wildcards.dataset]["experts"]
        ),
        metrics=lambda wildcards: expand(
            f"{BEST}/metrics.json", dataset=ASSEMBLIES[wildcards.dataset]["experts"]
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
        f"{LOGS}/assemble_experts/{{dataset}}.log",
    wildcard_constraints:
        dataset=ASSEMBLE_RE,
    conda:
        "../envs/statetrain.yaml"
    threads: 1
    params:
        members=lambda wildcards: ASSEMBLIES[wildcards.dataset]["experts"],
        member_streams=lambda wildcards: [
            SPECS[m]["streams"][0] for m in ASSEMBLIES[wildcards.dataset]["experts"]
        ],
        frequencies=lambda wildcards: SPECS[wildcards.dataset]["frequencies"],
        options=lambda wildcards: {
            k: v for k, v in ASSEMBLIES[wildcards.dataset].items() if k != "experts"
        },
    script:
        "../../scripts/assemble_experts.py"
