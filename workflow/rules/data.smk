rule generate_data:
    output:
        "results/data/{dataset}/{split}.npy",
    log:
        "results/logs/generate_data/{dataset}/{split}.log",
    conda:
        "../envs/statetrain.yaml"
    params:
        spec=lambda wildcards: SPECS[wildcards.dataset],
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
        min_stream_length=lambda wildcards: SPECS[wildcards.dataset][
            "min_stream_length"
        ],
        n_frequencies=lambda wildcards: len(SPECS[wildcards.dataset]["frequencies"]),
    script:
        "../../scripts/validate_dataset.py"
