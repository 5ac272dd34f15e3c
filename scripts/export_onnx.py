"""Rule export_onnx: a selected model as ONNX (one step, explicit state), checked in onnxruntime.

The test split runs through onnxruntime one step at a time with the state carried (and reset
as in training); the job fails unless every prediction is within 1e-4 of PyTorch's.

By hand, export-only (any statetrain checkpoint, no training; the check runs when --data is
given, its report going next to --out as <name>.check.json unless --check-out says otherwise):
  python scripts/export_onnx.py --checkpoint any.pth --out model.onnx [--data test.npy]
or a dataset's selected model, into the workflow's own places (paths from --config):
  python scripts/export_onnx.py --dataset spec
"""

from pathlib import Path

import torch

from statetrain import scripting
from statetrain.export import export_checkpoint


def main(
    checkpoint: str,
    out: str,
    data: str | None,
    report_path: str | None,
    opset: int,
    threads: int = 1,
) -> dict:
    torch.set_num_threads(threads)
    return export_checkpoint(checkpoint, out, data, opset=opset, report_path=report_path)


if "snakemake" in globals():
    sm = globals()["snakemake"]
    with scripting.rule_logging(sm.log[0]):
        main(
            sm.input.model,
            sm.output.onnx,
            sm.input.test,
            sm.output.check,
            sm.params.opset,
            sm.threads,
        )
elif __name__ == "__main__":
    p = scripting.parser(__doc__)
    p.add_argument("--checkpoint", help="the checkpoint to export (export-only mode)")
    p.add_argument("--out", help="the .onnx file to write (with --checkpoint)")
    p.add_argument("--data", help="a .npy split to check the export on (optional)")
    p.add_argument("--check-out", help="the check report (default: <out name>.check.json)")
    p.add_argument(
        "--dataset",
        help="instead of --checkpoint: results/best/DATASET/best_model.pth into "
        "results/best/DATASET/model.onnx, checked on the dataset's test split",
    )
    p.add_argument("--opset", type=int, help="ONNX opset (default: export.opset, 17)")
    args = p.parse_args()
    if bool(args.checkpoint) == bool(args.dataset):
        p.error("give either --checkpoint (with --out) or --dataset")
    if args.dataset:
        from statetrain.config import dataset_spec, user_paths

        cfg = scripting.load(args)
        best = scripting.BEST.format(dataset=args.dataset)
        checkpoint, out = f"{best}/best_model.pth", f"{best}/model.onnx"
        data = user_paths(dataset_spec(cfg, args.dataset)).get("test") or (
            scripting.DATA.format(dataset=args.dataset, split="test")
        )
        report = f"{best}/onnx_check.json"
        opset = args.opset or cfg["export"]["opset"]
    else:
        if not args.out:
            p.error("--checkpoint needs --out (the .onnx file to write)")
        checkpoint, out, data = args.checkpoint, args.out, args.data
        report = args.check_out or (
            str(Path(out).with_name(Path(out).stem + ".check.json")) if data else None
        )
        opset = args.opset or 17
    with scripting.rule_logging(args.log, echo=True):
        main(checkpoint, out, data, report, opset)
