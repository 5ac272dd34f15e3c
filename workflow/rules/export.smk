# ONNX export of a dataset's selected model, any task: stateful models as one step with the
# state as explicit I/O (x, h0, c0 -> y, h1, c1), batch tasks as samples in, probabilities
# out. The job runs the test split through onnxruntime (state carried) and fails unless it
# matches PyTorch to 1e-4.
# In the default target only with `export: {onnx: true}`; `snakemake
# results/best/spec/model.onnx` builds it either way.
rule export_onnx:
    input:
        model=f"{BEST}/best_model.pth",
        test=test_split,
        test_report=f"{DATA}/test.validation.json",
    output:
        onnx=f"{BEST}/model.onnx",
        check=f"{BEST}/onnx_check.json",
    log:
        f"{LOGS}/export_onnx/{{dataset}}.log",
    conda:
        "../envs/statetrain.yaml"
    threads: 1
    params:
        opset=config["export"]["opset"],
    script:
        "../../scripts/export_onnx.py"
