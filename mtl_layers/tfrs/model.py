"""A multi-task TensorFlow Recommenders model whose shared part is an mtl_layers architecture.

TensorFlow Recommenders 0.7 runs only on Keras 2 (`tf_keras`), so this module needs
`TF_USE_LEGACY_KERAS=1` in the environment before TensorFlow is imported.
"""

import dataclasses
import numbers
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

from mtl_layers.compat import IS_KERAS_2

KERAS_3_MESSAGE = (
    "mtl_layers.tfrs needs Keras 2 because TensorFlow Recommenders 0.7 does not run on "
    "Keras 3, which is active in this process. Set the environment variable "
    "TF_USE_LEGACY_KERAS=1 before Python starts (for example "
    "`TF_USE_LEGACY_KERAS=1 python train.py`) and install `tf-keras` at the release of "
    "`tensorflow` (`pip install mtl_layers[tfrs]`)."
)
if not IS_KERAS_2:
    raise ImportError(KERAS_3_MESSAGE)

import tensorflow as tf  # noqa: E402
import tensorflow_recommenders as tfrs  # noqa: E402

from mtl_layers import models as mtl_models  # noqa: E402
from mtl_layers.compat import keras  # noqa: E402
from mtl_layers.models.features import FeatureSpec  # noqa: E402
from mtl_layers.tasks import TaskSpec, check_tasks  # noqa: E402
from mtl_layers.tfrs.uncertainty import UncertaintyWeighting  # noqa: E402

ARCHITECTURES = ("mmoe", "omoe", "shared_bottom", "ple", "mose")


@dataclasses.dataclass(frozen=True)
class RetrievalSpec:
    """A two-tower retrieval task trained next to the ranking tasks.

    The query tower encodes `query_features`, the candidate tower `candidate_features`,
    each with the ranking model's own preprocessing and embedding layers (so the tasks
    share them) and a linear projection to `embedding_dim`. The loss is the softmax
    cross-entropy of each query against the other candidates in its batch, averaged over
    the batch (`tfrs.tasks.Retrieval`).

    Args:
        name: Task name; it prefixes the task's loss and metrics in the training logs
            and names the exported query-candidate score `<name>_score`.
        query_features: Names of the query (user) features.
        candidate_features: Names of the candidate (item) features.
        embedding_dim: Size of the query and candidate embeddings.
        loss_weight: Weight (> 0) of the retrieval loss in the total loss.
        top_k: The k of the top-k recall metrics `<name>_top_k/top_<k>_categorical_accuracy`
            computed in evaluation when the model has candidates.
    """

    name: str = "retrieval"
    query_features: Tuple[str, ...] = ()
    candidate_features: Tuple[str, ...] = ()
    embedding_dim: int = 32
    loss_weight: float = 1.0
    top_k: Tuple[int, ...] = (10, 50, 100)

    def __post_init__(self):
        TaskSpec(self.name, loss_weight=self.loss_weight)  # Reuse its name and weight checks.
        for field in ("query_features", "candidate_features", "top_k"):
            object.__setattr__(self, field, tuple(getattr(self, field)))
        if not self.query_features or not self.candidate_features:
            raise ValueError(
                "`query_features` and `candidate_features` must both name at least one feature. "
                f"Received: query_features={self.query_features}, "
                f"candidate_features={self.candidate_features}"
            )
        for field in ("embedding_dim",) + tuple(f"top_k[{i}]" for i in range(len(self.top_k))):
            value = self.embedding_dim if field == "embedding_dim" else self.top_k[int(field[6:-1])]
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"`{field}` must be an integer >= 1. Received: {value!r}")


def _per_example(loss):
    """Return a copy of the Keras loss `loss` that returns the weighted per-example losses."""
    return type(loss).from_config({**loss.get_config(), "reduction": keras.losses.Reduction.NONE})


def _num_replicas() -> int:
    return tf.distribute.get_strategy().num_replicas_in_sync


def _average_over_global_batch(per_example_losses: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """Average each task's per-example losses over the global batch, scaled for this replica.

    Returns `sum / (N / R)` per task, where `sum` is this replica's sum of weighted losses,
    N the number of loss values in the global batch (added up over the replicas) and R the
    number of replicas. The mean of these values over the replicas is the loss of the
    global batch even when the replicas get batches of different sizes. Without a strategy
    (R = 1) this is the Keras `SUM_OVER_BATCH_SIZE` reduction, with the same operations.
    """
    sums = {name: tf.reduce_sum(losses) for name, losses in per_example_losses.items()}
    counts = [tf.cast(tf.size(losses), tf.float32) for losses in per_example_losses.values()]
    replicas = _num_replicas()
    if replicas > 1:
        # One collective for all tasks: the global number of loss values per task.
        global_counts = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, tf.stack(counts)
        )
        counts = tf.unstack(global_counts / replicas)
    return {
        name: tf.math.divide_no_nan(sums[name], tf.cast(count, sums[name].dtype))
        for name, count in zip(sums, counts)
    }


def _builder(architecture) -> Callable:
    if callable(architecture):
        return architecture
    builder = getattr(mtl_models, architecture, None) if architecture in ARCHITECTURES else None
    if builder is None:
        raise ValueError(
            f"`architecture` must be one of {ARCHITECTURES} or a builder function "
            f"`(tasks, features, **options) -> keras.Model`. Received: {architecture!r}"
        )
    return builder


class MultiTaskModel(tfrs.models.Model):
    """A TFRS model with one `tfrs.tasks.Ranking` per task and an optional retrieval task.

    The ranking tasks share the chosen architecture (MMoE, OMoE, Shared-Bottom, PLE or
    MoSE from `mtl_layers.models`): its functional model maps raw features to one output
    per task and is available as `ranking_model`. The total loss is

        sum_k w_k * L_k                     (fixed weights, `TaskSpec.loss_weight`)
        sum_k w_k * U_k(L_k)                (with `uncertainty_weighting=True`)

    where U_k is the learned uncertainty weighting of `UncertaintyWeighting`, plus the
    layers' own losses (gate load balancing), which TFRS reports as
    `regularization_loss`. The training history has, per task, `<task>_loss` (the
    unweighted loss) and the task's metrics (`<task>_rmse`, `<task>_auc` or
    `<task>_accuracy`), and with uncertainty weighting `<task>_log_variance`.

    Training data are `(features, labels)` or `(features, labels, sample_weights)`, with
    labels and sample weights keyed by task name, or one dict of features and labels.

    The model trains under `MirroredStrategy` and `MultiWorkerMirroredStrategy` (build and
    compile it in the strategy's scope): each task loss is averaged over the global batch,
    and the logs are the values of the global batch. A retrieval task takes its in-batch
    negatives from each replica's part of the batch only. See docs/distributed.md.

    Args:
        tasks: The ranking tasks, as `TaskSpec`s.
        features: FeatureSpecs of the raw inputs; for MoSE, its `sequence_features`.
        architecture: One of `ARCHITECTURES`, or a builder with the signature of
            `mtl_layers.models.mmoe`.
        architecture_options: Keyword arguments of the builder (for example
            `num_experts`).
        retrieval: An optional `RetrievalSpec`; it needs FeatureSpecs.
        candidates: All candidates' features (a dict of arrays keyed by the retrieval
            task's candidate feature names), for the top-k metrics. Without them the
            retrieval task reports only its loss.
        uncertainty_weighting: Learn each task's loss weight (Kendall et al., CVPR 2018).
        name: Model name.
    """

    def __init__(
        self,
        tasks: Sequence[TaskSpec],
        features,
        architecture: Union[str, Callable] = "mmoe",
        architecture_options: Optional[Mapping] = None,
        retrieval: Optional[RetrievalSpec] = None,
        candidates: Optional[Mapping[str, Sequence]] = None,
        uncertainty_weighting: bool = False,
        name: str = "multitask_model",
    ):
        super().__init__(name=name)
        self.task_specs = check_tasks(tasks)
        if retrieval is not None and retrieval.name in {task.name for task in self.task_specs}:
            raise ValueError(f"The retrieval task name {retrieval.name!r} is also a ranking task name.")
        self.retrieval_spec = retrieval
        self.ranking_model = _builder(architecture)(
            self.task_specs, features, **dict(architecture_options or {})
        )
        # The tasks return per-example losses, and `compute_loss` averages them over the
        # global batch, which stays correct under a `tf.distribute` strategy.
        self.ranking_tasks = {
            task.name: tfrs.tasks.Ranking(
                loss=_per_example(task.loss()),
                metrics=self._task_metrics(task),
                name=f"{task.name}_task",
            )
            for task in self.task_specs
        }
        self.loss_weights = {task.name: float(task.loss_weight) for task in self.task_specs}

        if retrieval is not None:
            specs = self._feature_specs(features, retrieval)
            self.query_model = self._tower(specs, retrieval.query_features, "query")
            self.candidate_model = self._tower(specs, retrieval.candidate_features, "candidate")
            self.retrieval_task = tfrs.tasks.Retrieval(
                loss=keras.losses.CategoricalCrossentropy(
                    from_logits=True, reduction=keras.losses.Reduction.NONE
                ),
                metrics=self._top_k_metric(retrieval, candidates),
                name=f"{retrieval.name}_task",
            )
            self.loss_weights[retrieval.name] = float(retrieval.loss_weight)

        task_names = list(self.loss_weights)
        self.loss_trackers = {name: keras.metrics.Mean(name=f"{name}_loss") for name in task_names}
        self.uncertainty_weighting = None
        if uncertainty_weighting:
            self.uncertainty_weighting = UncertaintyWeighting(
                task_names,
                regression_tasks=[task.name for task in self.task_specs if task.kind == "regression"],
                name="uncertainty_weighting",
            )
            # The weights do not depend on input shapes; create them now so they exist
            # before the first training step.
            self.uncertainty_weighting.build(None)
            self.log_variance_trackers = {
                name: keras.metrics.Mean(name=f"{name}_log_variance") for name in task_names
            }
        self.serving_model = self._build_serving_model()
        # Every value that `train_step` and `test_step` log is already that of the global
        # batch, so `fit` and `evaluate` under a strategy take the first replica's values.
        # The tf_keras 2.21 default, "auto", adds them up instead (except on TPUs), which
        # under MultiWorkerMirroredStrategy multiplies every metric by the worker count.
        self.distribute_reduction_method = "first"

    @staticmethod
    def _task_metrics(task: TaskSpec) -> list:
        # Metric names are history keys, so each copy is prefixed with its task's name.
        return [
            type(metric).from_config({**metric.get_config(), "name": f"{task.name}_{metric.name}"})
            for metric in task.metrics()
        ]

    @staticmethod
    def _feature_specs(features, retrieval) -> Dict[str, FeatureSpec]:
        if not isinstance(features, (list, tuple)) or not all(
            isinstance(spec, FeatureSpec) for spec in features
        ):
            raise ValueError(
                "A retrieval task needs `features` as a list of FeatureSpec, so that its "
                f"towers can share the ranking model's feature encoders. Received: {features!r}"
            )
        specs = {spec.name: spec for spec in features}
        unknown = sorted(
            set(retrieval.query_features + retrieval.candidate_features) - set(specs)
        )
        if unknown:
            raise ValueError(
                f"The retrieval task uses features {unknown} that are not in `features`: "
                f"{sorted(specs)}."
            )
        return specs

    def _encoder_layer(self, name: str):
        try:
            return self.ranking_model.get_layer(name)
        except ValueError as error:
            raise ValueError(
                f"The ranking model has no layer {name!r} to share with the retrieval towers. "
                "Build it from FeatureSpecs with a builder of `mtl_layers.models`."
            ) from error

    def _tower(self, specs: Dict[str, FeatureSpec], names: Sequence[str], role: str):
        """Build a tower that encodes `names` with the ranking model's layers and projects them."""
        inputs = {}
        encodings = []
        for name in names:
            spec = specs[name]
            raw = keras.Input(shape=(), dtype=spec.dtype, name=name)
            inputs[name] = raw
            column = tf.reshape(raw, (-1, 1))
            if spec.kind == "numeric":
                encodings.append(self._encoder_layer(f"{name}_normalization")(column))
                continue
            looked_up = self._encoder_layer(f"{name}_lookup")(column)
            embedded = self._encoder_layer(f"{name}_embedding")(looked_up)
            encodings.append(tf.reshape(embedded, (-1, spec.embedding_dim)))
        joined = encodings[0] if len(encodings) == 1 else keras.layers.Concatenate()(encodings)
        spec = self.retrieval_spec
        projected = keras.layers.Dense(spec.embedding_dim, name=f"{spec.name}_{role}_projection")(joined)
        return keras.Model(inputs, projected, name=f"{spec.name}_{role}_model")

    def _top_k_metric(self, retrieval: RetrievalSpec, candidates):
        if candidates is None:
            return None
        missing = sorted(set(retrieval.candidate_features) - set(candidates))
        if missing:
            raise ValueError(
                f"`candidates` has no values for the candidate features {missing}. Received "
                f"keys: {sorted(candidates)}"
            )
        dataset = tf.data.Dataset.from_tensor_slices(
            {name: candidates[name] for name in retrieval.candidate_features}
        )
        # Streaming top-k recomputes the candidate embeddings with the current weights.
        return tfrs.metrics.FactorizedTopK(
            candidates=dataset.batch(256).map(self.candidate_model),
            ks=retrieval.top_k,
            name=f"{retrieval.name}_top_k",
        )

    def _build_serving_model(self):
        """Return a functional model from raw features to every task output."""
        inputs = {
            name: keras.Input(shape=tensor.shape[1:], dtype=tensor.dtype, name=name)
            for name, tensor in self._ranking_inputs().items()
        }
        outputs = dict(self.ranking_model(inputs))
        if self.retrieval_spec is not None:
            spec = self.retrieval_spec
            query = self.query_model({name: inputs[name] for name in spec.query_features})
            candidate = self.candidate_model({name: inputs[name] for name in spec.candidate_features})
            outputs[f"{spec.name}_score"] = keras.layers.Dot(axes=1, name=f"{spec.name}_score")(
                [query, candidate]
            )
        return keras.Model(inputs, outputs, name=f"{self.name}_serving")

    def _ranking_inputs(self) -> Dict[str, tf.Tensor]:
        structure = self.ranking_model.input
        if isinstance(structure, dict):
            return dict(structure)
        tensors = structure if isinstance(structure, (list, tuple)) else [structure]
        return {tensor.name.split(":")[0]: tensor for tensor in tensors}

    def call(self, features, training=False):
        """Return the outputs of every task (and the retrieval score) for raw `features`."""
        return self.serving_model(
            {name: features[name] for name in self.serving_model.input}, training=training
        )

    def train_step(self, inputs):
        """Run the TFRS training step, with the layer losses divided among the replicas."""
        with tf.GradientTape() as tape:
            loss = self.compute_loss(inputs, training=True)
            regularization_loss = self._regularization_loss()
            total_loss = loss + regularization_loss
        gradients = tape.gradient(total_loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))

        logs = self._logs(loss, regularization_loss, total_loss)
        if self.retrieval_spec is not None:
            # Top-k metrics are computed only in evaluation, so their training values are
            # stale zeros; leave them out of the training logs.
            prefix = f"{self.retrieval_spec.name}_top_k/"
            logs = {name: value for name, value in logs.items() if not name.startswith(prefix)}
        return logs

    def test_step(self, inputs):
        """Compute the evaluation loss and metrics of one batch, as `train_step` does."""
        loss = self.compute_loss(inputs, training=False)
        regularization_loss = self._regularization_loss()
        return self._logs(loss, regularization_loss, loss + regularization_loss)

    def _regularization_loss(self):
        """Return this replica's share of the layers' own losses (gate load balancing).

        Each replica computes the layer losses on its part of the batch. The optimizer adds
        up the replicas' gradients, so dividing by the number of replicas gives the
        gradient of the mean over the replicas.
        """
        regularization_loss = tf.reduce_sum([tf.reduce_sum(loss) for loss in self.losses])
        replicas = _num_replicas()
        if replicas > 1:
            regularization_loss = regularization_loss / replicas
        return regularization_loss

    def _logs(self, loss, regularization_loss, total_loss):
        """Return the step's logs: the metrics and the three losses of the global batch."""
        logs = {metric.name: metric.result() for metric in self.metrics}
        losses = [loss, regularization_loss, total_loss]
        if _num_replicas() > 1:
            # The losses are this replica's shares, and their sums over the replicas are the
            # values of the global batch, like the metric results.
            losses = tf.unstack(
                tf.distribute.get_replica_context().all_reduce(
                    tf.distribute.ReduceOp.SUM, tf.stack(losses)
                )
            )
        logs["loss"], logs["regularization_loss"], logs["total_loss"] = losses
        return logs

    def _split(self, inputs):
        if isinstance(inputs, (tuple, list)):
            if len(inputs) == 2:
                return inputs[0], inputs[1], {}
            if len(inputs) == 3:
                return inputs
            raise ValueError(
                "Training data must be (features, labels) or (features, labels, sample_weights). "
                f"Received a tuple of {len(inputs)} elements."
            )
        return inputs, inputs, {}

    def compute_loss(self, inputs, training: bool = False):
        """Return the weighted sum of the task losses and update the loss trackers.

        Each task loss is the mean of its per-example losses over the global batch. Under a
        `tf.distribute` strategy the return value is this replica's share, and the shares
        of all replicas add up to the loss of the global batch. So the gradients that the
        optimizer adds up over the replicas are those of single-process training.
        """
        features, labels, sample_weights = self._split(inputs)
        missing = [task.name for task in self.task_specs if task.name not in labels]
        if missing:
            raise ValueError(
                f"No labels for the tasks {missing}. Received keys: {sorted(labels)}. Key each "
                "task's labels by the task name."
            )
        ranking_inputs = {name: features[name] for name in self._ranking_inputs()}
        predictions = self.ranking_model(ranking_inputs, training=training)

        per_example_losses = {}
        for task in self.task_specs:
            prediction = predictions[task.name]
            label = labels[task.name]
            if task.kind != "multiclass":
                label = tf.reshape(tf.cast(label, prediction.dtype), tf.shape(prediction))
            per_example_losses[task.name] = self.ranking_tasks[task.name](
                labels=label,
                predictions=prediction,
                sample_weight=sample_weights.get(task.name),
                training=training,
            )

        if self.retrieval_spec is not None:
            spec = self.retrieval_spec
            query = self.query_model(
                {name: features[name] for name in spec.query_features}, training=training
            )
            candidate = self.candidate_model(
                {name: features[name] for name in spec.candidate_features}, training=training
            )
            # Top-k over all candidates is slow, so it runs only in evaluation.
            per_example_losses[spec.name] = self.retrieval_task(
                query, candidate, compute_metrics=not training
            )

        # Each replica's value of a task loss is its estimate of the global batch loss, and
        # their mean over the replicas is that loss. The trackers are `Mean` metrics whose
        # totals and counts add up over the replicas, so they report that mean.
        losses = _average_over_global_batch(per_example_losses)
        for name, loss in losses.items():
            self.loss_trackers[name].update_state(loss)

        terms = losses
        if self.uncertainty_weighting is not None:
            terms = self.uncertainty_weighting(losses)
            for index, name in enumerate(self.uncertainty_weighting.task_names):
                self.log_variance_trackers[name].update_state(
                    self.uncertainty_weighting.log_variances[index]
                )
        total = tf.add_n([self.loss_weights[name] * terms[name] for name in terms])
        replicas = _num_replicas()
        if replicas > 1:
            # The total is affine in the task losses (also with uncertainty weighting), so
            # the replicas' shares total / R add up to the total of the global batch loss.
            total = total / replicas
        return total
