"""Rule export_onnx: a selected model of any task as ONNX, checked in onnxruntime on the test
split (stateful models step by step with the state carried and reset as in training; the job
fails unless every output is within 1e-4 of PyTorch's). By hand: `statetrain export
CHECKPOINT OUT.onnx --data test.npy`."""

import torch

from statetrain import scripting
from statetrain.export import export_checkpoint

sm = globals()["snakemake"]
with scripting.rule_logging(sm.log[0]):
    torch.set_num_threads(sm.threads)
    export_checkpoint(
        sm.input.model,
        sm.output.onnx,
        sm.input.test,
        opset=sm.params.opset,
        report_path=sm.output.check,
    )
