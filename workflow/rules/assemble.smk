# Issue 19's recipe, step 2 of 3: the per-frequency experts (step 1: ordinary datasets with
# `streams: [f]`, trained by rule train) placed block-diagonally into ONE FrequencyLSTM, once
# per grid point from the experts' runs at that point (each seed of a seed grid is a chain of
# its own), scored frozen on the full validation and test splits like a trained run
# (runs/<name>/<point>/); rule select_checkpoint then keeps the best point on validation
# (best/<name>/: a row in summary.csv, Graph 1/2). Step 3, the joint fine-tune, is rule train
# on a dataset with `training.init_from: <name>` (its run at the same grid point).


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
