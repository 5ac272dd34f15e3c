rule generate_data:
    output:
        f"{DATA}/{{split}}.{DATA_EXT}",
    log:
        f"{LOGS}/generate_data/{{dataset}}/{{split}}.log",
    conda:
        "../envs/statetrain.yaml"
    params:
        spec=lookup(within=SPECS, dpath="{dataset}"),
        task=config["task"],
    script:
        "../../scripts/generate_data.py"


rule validate_dataset:
    input:
        split_input,
    output:
        f"{DATA}/{{split}}.validation.json",
    log:
        f"{LOGS}/validate_dataset/{{dataset}}/{{split}}.log",
    conda:
        "../envs/statetrain.yaml"
    params:
        spec=lookup(within=SPECS, dpath="{dataset}"),
        task=config["task"],
    script:
        "../../scripts/validate_dataset.py"
