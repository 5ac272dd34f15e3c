"""Rule plot_predictions: Graph 1 (3 Hz) and Graph 2 (all frequencies) of a selected model.

Predictions are frozen, on the test split, with the state carried from the stream start as in
training.
"""

from statetrain import scripting
from statetrain.checkpoint import load_model
from statetrain.tasks.frequency import plots
from statetrain.tasks.frequency.trainer import Split, predict
from statetrain.validation import load_array


def main(model_path: str, data_path: str, graph1: str, graph2: str, fs: float, title: str) -> None:
    model, ckpt = load_model(model_path)
    array = load_array(data_path)
    split = Split.from_array(array)
    pred = predict(model, split, ckpt.get("state_reset", "epoch"))
    freqs = ckpt.get("frequencies") or [1, 3, 5, 7]
    plots.graph1(
        array,
        pred,
        split.starts,
        split.columns,
        freqs,
        fs,
        graph1,
        title=f"Graph 1: extracting 3 Hz, {title} (test set)",
    )
    plots.graph2(
        array,
        pred,
        split.starts,
        split.columns,
        freqs,
        fs,
        graph2,
        title=f"Graph 2: every frequency, {title} (test set)",
    )


if "snakemake" in globals():
    sm = globals()["snakemake"]
    with scripting.rule_logging(sm.log[0]):
        main(
            sm.input.model,
            sm.input.test,
            sm.output.graph1,
            sm.output.graph2,
            sm.params.fs,
            sm.params.title,
        )
