# Issue 19's recipe, step 2 of 3: the per-frequency experts (step 1: ordinary datasets with
# `streams: [f]`, trained by rule train) placed block-diagonally into ONE FrequencyLSTM, once
# per grid point from the experts' runs at that point (each seed of a seed grid is a chain of
# its own), scored frozen on the full validation and test splits like a trained run
# (runs/<name>/<point>/); rule select_checkpoint then keeps the best point on validation
# (best/<name>/: a row in summary.csv, Graph 1/2). Step 3, the joint fine-tune, is rule train
# on a dataset with `training.init_from: <name>` (its run at the same grid point).


def assembly_inputs(wildcards):
    point = run_point(wildcards)
    members = ASSEMBLIES[wildcards.dataset]["experts"]
    data = DATA.format(dataset=wildcards.dataset)
    return {
        "models": [source_file(m, point, "best_model.pth") for m in members],
        "metrics": [source_file(m, point, "metrics.json") for m in members],
        "validation": split_file(wildcards.dataset, "validation"),
        "test": split_file(wildcards.dataset, "test"),
        "reports": [f"{data}/{s}.validation.json" for s in ("validation", "test")],
    }


def run_point(wildcards):
    return grid_point_name(grid_point(wildcards))


def assembly_members(wildcards):
    return ASSEMBLIES[wildcards.dataset]["experts"]


def assembly_member_streams(wildcards):
    return [SPECS[m]["streams"][0] for m in assembly_members(wildcards)]


def assembly_frequencies(wildcards):
    return SPECS[wildcards.dataset]["frequencies"]


def assembly_settings(wildcards):
    return {k: v for k, v in ASSEMBLIES[wildcards.dataset].items() if k != "experts"}


rule assemble_experts:
    input:
        unpack(assembly_inputs),
    output:
        model=f"{RUNS}/best_model.pth",
        members=f"{RUNS}/members.json",
        metrics=f"{RUNS}/metrics.json",
    log:
        f"{LOGS}/assemble_experts/{{dataset}}/{GRID.wildcard_pattern}.log",
    wildcard_constraints:
        dataset=ASSEMBLE_RE,
    conda:
        "../envs/statetrain.yaml"
    threads: 1
    params:
        point=run_point,
        members=assembly_members,
        member_streams=assembly_member_streams,
        frequencies=assembly_frequencies,
        options=assembly_settings,
    script:
        "../../scripts/assemble_experts.py"
