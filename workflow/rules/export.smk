# ONNX export of a dataset's selected model: one LSTM step with the state as explicit I/O
# (x, h0, c0 -> y, h1, c1; dynamic batch). The job runs the test split through onnxruntime
# step by step with the state carried and fails unless it matches PyTorch to 1e-4.
# In the default target only with `export: {onnx: true}`; `snakemake
# results/best/spec/model.onnx` builds it either way.
rule export_onnx:
    input:
        model="results/best/{dataset}/best_model.pth",
        test=lambda wildcards: split_file(wildcards.dataset, "test"),
        test_report="results/data/{dataset}/test.validation.json",
    output:
        onnx="results/best/{dataset}/model.onnx",
        check="results/best/{dataset}/onnx_check.json",
    log:
        "results/logs/export_onnx/{dataset}.log",
    conda:
        "../envs/statetrain.yaml"
    threads: 1
    params:
        opset=config["export"]["opset"],
    script:
        "../../scripts/export_onnx.py"
