rule generate_data:
    output:
        f"results/data/{{dataset}}/{{split}}.{DATA_EXT}",
    log:
        "results/logs/generate_data/{dataset}/{split}.log",
    conda:
        "../envs/statetrain.yaml"
    params:
        spec=lambda wildcards: SPECS[wildcards.dataset],
        task=config["task"],
    script:
        "../../scripts/generate_data.py"


rule validate_dataset:
    input:
        split_input,
    output:
        "results/data/{dataset}/{split}.validation.json",
    log:
        "results/logs/validate_dataset/{dataset}/{split}.log",
    conda:
        "../envs/statetrain.yaml"
    params:
        min_stream_length=lambda wildcards: SPECS[wildcards.dataset].get(
            "min_stream_length", 1
        ),
        n_frequencies=lambda wildcards: len(
            SPECS[wildcards.dataset].get("frequencies", [])
        ),
        spec=lambda wildcards: SPECS[wildcards.dataset],
        task=config["task"],
    script:
        "../../scripts/validate_dataset.py"
