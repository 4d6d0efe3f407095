"""Run every layer and model builder once on the Keras backend of this process.

The backend test runs this script with `KERAS_BACKEND=jax` or `KERAS_BACKEND=torch`
(the backend is fixed when Keras is first imported, so each backend needs its own
process) and compares the results with the same functions run on TensorFlow.

For each case the script builds a small model, loads the weights from `--weights`
when given (so every backend starts from TensorFlow's weights), computes the outputs on
fixed inputs, runs one SGD step with `train_on_batch`, and writes the initial weights,
the outputs and the trained weights to `--output`:

    KERAS_BACKEND=jax python tests/scale/backend_worker.py \
        --weights=tensorflow.npz --output=jax.npz --export_dir=/tmp/jax_export

With `--export_dir` it also exports the MMoE case with `model.export` as a SavedModel.
"""

import argparse
import os
import pathlib
import sys

import numpy as np

BATCH = 8
LEARNING_RATE = 0.1


def _rng(seed):
    return np.random.default_rng(seed)


def _layer_model(layer_factory, input_shapes, input_dtypes=None):
    """Wrap one layer in a functional model with one input per argument."""
    from mtl_layers.compat import keras

    input_dtypes = input_dtypes or ["float32"] * len(input_shapes)
    inputs = [
        keras.Input(shape, dtype=dtype, name=f"input_{index}")
        for index, (shape, dtype) in enumerate(zip(input_shapes, input_dtypes))
    ]
    outputs = layer_factory()(*inputs)
    return keras.Model(inputs, outputs)


def _tasks():
    from mtl_layers.tasks import TaskSpec

    return [TaskSpec("click", kind="binary"), TaskSpec("rating", kind="regression")]


def _task_labels(seed):
    rng = _rng(seed)
    return {
        "click": rng.integers(0, 2, size=(BATCH, 1)).astype("float32"),
        "rating": rng.normal(size=(BATCH, 1)).astype("float32"),
    }


def _compile_regression(model):
    from mtl_layers.compat import keras

    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), loss="mse")


def _compile_tasks(model):
    import mtl_layers as mtl
    from mtl_layers.compat import keras

    mtl.tasks.compile_for_tasks(model, _tasks(), optimizer=keras.optimizers.SGD(LEARNING_RATE))


def case_expert_bank():
    import mtl_layers as mtl

    model = _layer_model(lambda: mtl.ExpertBank(3, [8, 4], name="experts"), [(6,)])
    _compile_regression(model)
    inputs = [_rng(1).normal(size=(BATCH, 6)).astype("float32")]
    return model, inputs, _rng(2).normal(size=(BATCH, 3, 4)).astype("float32")


def case_task_gate():
    import mtl_layers as mtl

    model = _layer_model(
        lambda: mtl.TaskGate(3, top_k=2, temperature=0.5, name="gate"), [(3, 4), (5,)]
    )
    _compile_regression(model)
    inputs = [
        _rng(3).normal(size=(BATCH, 3, 4)).astype("float32"),
        _rng(4).normal(size=(BATCH, 5)).astype("float32"),
    ]
    return model, inputs, _rng(5).normal(size=(BATCH, 4)).astype("float32")


def case_sequential_expert():
    import mtl_layers as mtl

    model = _layer_model(
        lambda: mtl.SequentialExpert(2, 4, name="lstm_experts"), [(5, 3), (5,)], ["float32", "bool"]
    )
    _compile_regression(model)
    lengths = np.array([5, 4, 3, 2, 1, 5, 3, 1])
    inputs = [
        _rng(6).normal(size=(BATCH, 5, 3)).astype("float32"),
        np.arange(5)[None, :] < lengths[:, None],
    ]
    return model, inputs, _rng(7).normal(size=(BATCH, 5, 2, 4)).astype("float32")


def _case_hypergrid_dense(mode):
    import mtl_layers as mtl

    model = _layer_model(
        lambda: mtl.HyperGridDense(6, block_shape=(4, 3), mode=mode, name="hypergrid"),
        [(3, 8), (5,)],
    )
    _compile_regression(model)
    inputs = [
        _rng(8).normal(size=(BATCH, 3, 8)).astype("float32"),
        _rng(9).normal(size=(BATCH, 5)).astype("float32"),
    ]
    return model, inputs, _rng(10).normal(size=(BATCH, 3, 6)).astype("float32")


def case_task_embedding():
    import mtl_layers as mtl

    model = _layer_model(lambda: mtl.TaskEmbedding(3, 4, name="tasks"), [()], ["int32"])
    _compile_regression(model)
    inputs = [_rng(11).integers(0, 3, size=(BATCH,)).astype("int32")]
    return model, inputs, _rng(12).normal(size=(BATCH, 4)).astype("float32")


def _case_builder(name):
    import mtl_layers as mtl
    from mtl_layers.compat import keras

    features = keras.Input((6,), name="features")
    options = {
        "mmoe": {"num_experts": 3, "expert_units": [8, 4]},
        "omoe": {"num_experts": 3, "expert_units": 4},
        "shared_bottom": {"bottom_units": (8,)},
        "ple": {"num_levels": 2, "expert_units": 4},
    }[name]
    model = getattr(mtl.models, name)(_tasks(), features, **options)
    _compile_tasks(model)
    return model, [_rng(13).normal(size=(BATCH, 6)).astype("float32")], _task_labels(14)


def case_mose():
    import mtl_layers as mtl

    model = mtl.models.mose(
        _tasks(), 3, num_experts=2, expert_units=4, bottom_units=6, output_steps="last"
    )
    _compile_tasks(model)
    lengths = np.array([4, 3, 2, 1, 4, 3, 2, 1])
    inputs = {
        "sequence": _rng(15).normal(size=(BATCH, 4, 3)).astype("float32"),
        "mask": np.arange(4)[None, :] < lengths[:, None],
    }
    return model, inputs, _task_labels(16)


def case_hypergrid_transformer():
    import mtl_layers as mtl

    model = mtl.models.hypergrid_transformer(
        _tasks(), vocab_size=20, sequence_length=5, d_model=8, num_heads=2, d_ff=8,
        num_layers=1, block_shape=(4, 4), dropout=0.0,
    )  # fmt: skip
    _compile_tasks(model)
    inputs = {
        "token_ids": _rng(17).integers(0, 20, size=(BATCH, 5)).astype("int32"),
        "task_id": _rng(18).integers(0, 2, size=(BATCH,)).astype("int32"),
    }
    return model, inputs, _task_labels(19)


CASES = {
    "expert_bank": case_expert_bank,
    "task_gate": case_task_gate,
    "sequential_expert": case_sequential_expert,
    **{f"hypergrid_dense_{mode}": (lambda mode=mode: _case_hypergrid_dense(mode)) for mode in ("LG", "GL", "LL", "GG")},
    "task_embedding": case_task_embedding,
    **{name: (lambda name=name: _case_builder(name)) for name in ("mmoe", "omoe", "shared_bottom", "ple")},
    "mose": case_mose,
    "hypergrid_transformer": case_hypergrid_transformer,
}  # fmt: skip


def _flatten_outputs(outputs):
    if isinstance(outputs, dict):
        return [outputs[key] for key in sorted(outputs)]
    if isinstance(outputs, (list, tuple)):
        return list(outputs)
    return [outputs]


def _to_numpy(value):
    from mtl_layers.compat import ops

    return np.asarray(ops.convert_to_numpy(value))


def run_case(name, initial_weights=None):
    """Return `{key: array}` with the case's initial weights, outputs and trained weights."""
    from mtl_layers.compat import keras

    keras.utils.set_random_seed(0)
    model, inputs, targets = CASES[name]()
    if initial_weights is not None:
        model.set_weights(initial_weights)
    results = {}
    for index, weight in enumerate(model.get_weights()):
        results[f"{name}/initial/{index}"] = weight
    model_inputs = inputs[0] if isinstance(inputs, list) and len(inputs) == 1 else inputs
    outputs = _flatten_outputs(model.predict_on_batch(model_inputs))
    for index, output in enumerate(outputs):
        results[f"{name}/outputs/{index}"] = _to_numpy(output)
    loss = model.train_on_batch(model_inputs, targets)
    loss = np.asarray(loss if np.ndim(loss) == 0 else loss[0], dtype="float64")
    results[f"{name}/loss"] = loss
    for index, weight in enumerate(model.get_weights()):
        results[f"{name}/trained/{index}"] = weight
    return results, model, model_inputs


def initial_weights_of(archive, name):
    """Return the list of `name`'s initial weights stored in `archive`."""
    count = sum(1 for key in archive if key.startswith(f"{name}/initial/"))
    return [archive[f"{name}/initial/{index}"] for index in range(count)]


def export_model(model, export_dir, model_inputs):
    """Export `model` as a SavedModel with `model.export` and return its outputs on the inputs."""
    model.export(str(export_dir), format="tf_saved_model", verbose=False)
    return _flatten_outputs(model.predict_on_batch(model_inputs))


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=pathlib.Path, help="initial weights (.npz) to load")
    parser.add_argument("--output", type=pathlib.Path, required=True)
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    parser.add_argument("--export_dir", type=pathlib.Path, help="export the MMoE case here")
    arguments = parser.parse_args(argv)

    import keras

    archive = dict(np.load(arguments.weights)) if arguments.weights else None
    results = {}
    failures = []
    names = arguments.cases.split(",")
    for name in names:
        try:
            initial = initial_weights_of(archive, name) if archive is not None else None
            case_results, model, model_inputs = run_case(name, initial)
        except Exception as error:  # Report every failing case, not only the first one.
            failures.append(f"{name}: {type(error).__name__}: {error}")
            continue
        results.update(case_results)
        if name == "mmoe" and arguments.export_dir:
            # The trained model is exported; the test serves it on the same inputs.
            for index, output in enumerate(export_model(model, arguments.export_dir, model_inputs)):
                results[f"export/outputs/{index}"] = _to_numpy(output)
    np.savez(arguments.output, **results)
    print(f"backend {keras.backend.backend()}: {len(names) - len(failures)} of {len(names)} cases ran", flush=True)
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr, flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main(sys.argv[1:]))
