rule select_checkpoint:
    input:
        unpack(select_inputs),
    output:
        model="results/best/{dataset}/best_model.pth",
        selection="results/best/{dataset}/selection.json",
        metrics="results/best/{dataset}/metrics.json",
    log:
        "results/logs/select_checkpoint/{dataset}.log",
    conda:
        "../envs/statetrain.yaml"
    params:
        names=lambda wildcards: POINT_NAMES[wildcards.dataset],
        metric=TASK.selection_metric,
        mode=TASK.mode,
    script:
        "../../scripts/select_checkpoint.py"


rule summarize_sweep:
    input:
        metrics=[f for dataset in DATASETS for f in run_files(dataset, "metrics.json")],
        selections=expand("results/best/{dataset}/selection.json", dataset=DATASETS),
    output:
        report(
            "results/sweep/summary.csv",
            caption="../report/summary.rst",
            category="Sweep",
            labels={"table": "summary"},
        ),
    log:
        "results/logs/summarize_sweep.log",
    conda:
        "../envs/statetrain.yaml"
    params:
        phase_jitter={name: spec.get("phase_jitter") for name, spec in SPECS.items()},
        metric=TASK.selection_metric,
    script:
        "../../scripts/summarize_sweep.py"
