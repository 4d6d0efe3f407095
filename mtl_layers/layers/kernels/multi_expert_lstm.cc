// One TensorFlow op that runs K LSTM experts over the same sequence, forward and backward.
//
// `SequentialExpert` (MoSE, Qin et al., KDD 2020) advances K LSTM experts over the same
// sequence. This op computes all of them together, one chunk of rows at a time: for each
// step, one matrix product x_t W + b gives every expert's input gates, one product per
// expert adds h_{t-1} U_e, and the gate arithmetic follows while the chunk's values are
// still in the core's cache. The backward pass does the same in reverse and sums the
// weight gradients in the same pass, so the gate gradients never go to memory. Rows must
// come sorted by their number of valid steps, longest first. At step t the op works only
// on the rows that still have steps, which are a prefix of each chunk.
//
// Masks: the op reads each row's valid steps where they are (`step_positions`) and runs
// over them only. At a padded step the output repeats the last valid step's output, and
// it is zeros before the first valid step, as keras.layers.RNN does with a mask.
//
// Gate order in every kernel: input, forget, cell candidate, output (as keras.layers.LSTM).
//
// Forward, for each expert e and step t (Hochreiter and Schmidhuber, 1997):
//   z_t = x_t W_e + b_e + h_{t-1} U_e
//   i = sigmoid(z_i), f = sigmoid(z_f), c~ = tanh(z_c), o = sigmoid(z_o)
//   c_t = f * c_{t-1} + i * c~
//   h_t = o * tanh(c_t)
// with h_{-1} = c_{-1} = 0.

#include <algorithm>
#include <cstring>
#include <vector>

#include "Eigen/Core"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/util/work_sharder.h"

namespace mtl_layers {
namespace {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Status;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::errors::InvalidArgument;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Strided = Eigen::Map<Matrix, 0, Eigen::OuterStride<>>;
using ConstStrided = Eigen::Map<const Matrix, 0, Eigen::OuterStride<>>;
using MatrixMap = Eigen::Map<Matrix>;
using ConstMatrixMap = Eigen::Map<const Matrix>;
using RowVector = Eigen::Matrix<float, 1, Eigen::Dynamic>;

// Number of rows with more than `step` steps. `row_steps` is non-increasing.
int64_t ActiveRows(const int32_t* row_steps, int64_t batch, int64_t step) {
  int64_t low = 0, high = batch;
  while (low < high) {
    const int64_t middle = (low + high) / 2;
    if (row_steps[middle] > step) {
      low = middle + 1;
    } else {
      high = middle;
    }
  }
  return low;
}

// Sizes of one call, read from the inputs that both ops share.
struct Sizes {
  int64_t time, batch, features, experts, units;
  int64_t gate_units() const { return 4 * units; }
  int64_t state_row() const { return experts * units; }  // floats of one row's states
  int64_t gate_row() const { return experts * 4 * units; }  // floats of one row's gates
};

// Checks the inputs shared by both ops and that the rows are sorted by length.
Status CheckInputs(OpKernelContext* context, Sizes* sizes) {
  const Tensor& inputs = context->input(0);
  const Tensor& kernel = context->input(1);
  const Tensor& bias = context->input(2);
  const Tensor& recurrent_kernel = context->input(3);
  const Tensor& row_steps = context->input(4);
  const Tensor& source_rows = context->input(5);
  const Tensor& step_positions = context->input(6);

  // Shapes of the inputs and weights.
  if (inputs.dims() != 3) {
    return InvalidArgument("inputs must be (batch, time, features). Received shape ",
                           inputs.shape().DebugString());
  }
  if (recurrent_kernel.dims() != 3 ||
      recurrent_kernel.dim_size(2) != 4 * recurrent_kernel.dim_size(1)) {
    return InvalidArgument("recurrent_kernel must be (experts, units, 4 * units). Received "
                           "shape ",
                           recurrent_kernel.shape().DebugString());
  }
  sizes->batch = inputs.dim_size(0);
  sizes->time = inputs.dim_size(1);
  sizes->features = inputs.dim_size(2);
  sizes->experts = recurrent_kernel.dim_size(0);
  sizes->units = recurrent_kernel.dim_size(1);
  if (kernel.dims() != 2 || kernel.dim_size(0) != sizes->features ||
      kernel.dim_size(1) != sizes->gate_row()) {
    return InvalidArgument("kernel must be (features, experts * 4 * units) = (",
                           sizes->features, ", ", sizes->gate_row(), "). Received shape ",
                           kernel.shape().DebugString());
  }
  if (bias.dims() != 1 || bias.dim_size(0) != sizes->gate_row()) {
    return InvalidArgument("bias must be (experts * 4 * units,) = (", sizes->gate_row(),
                           ",). Received shape ", bias.shape().DebugString());
  }

  // The row order that the layer derives from the mask.
  if (row_steps.shape() != TensorShape({sizes->batch}) ||
      source_rows.shape() != TensorShape({sizes->batch}) ||
      step_positions.shape() != TensorShape({sizes->batch, sizes->time})) {
    // The layer derives these from the mask, so a mismatch means the mask's shape.
    return InvalidArgument("The mask must be (batch, time) = (", sizes->batch, ", ",
                           sizes->time, "), the first two dimensions of the inputs, but "
                           "the row order derived from it has shapes ",
                           row_steps.shape().DebugString(), ", ",
                           source_rows.shape().DebugString(), " and ",
                           step_positions.shape().DebugString(),
                           ". Pass a mask of the inputs' batch size and length.");
  }

  const int32_t* steps = row_steps.flat<int32_t>().data();
  const int32_t* rows = source_rows.flat<int32_t>().data();
  const int32_t* positions = step_positions.flat<int32_t>().data();
  std::vector<bool> seen(sizes->batch, false);
  for (int64_t row = 0; row < sizes->batch; ++row) {
    if (steps[row] < 0 || steps[row] > sizes->time) {
      return InvalidArgument("row_steps must be in [0, ", sizes->time, "]. Received ",
                             steps[row], " for row ", row);
    }
    if (row > 0 && steps[row] > steps[row - 1]) {
      return InvalidArgument("row_steps must be sorted longest first. Received ",
                             steps[row - 1], " then ", steps[row], " at row ", row);
    }
    if (rows[row] < 0 || rows[row] >= sizes->batch || seen[rows[row]]) {
      return InvalidArgument("source_rows must be a permutation of the batch. Received ",
                             rows[row], " at row ", row);
    }
    seen[rows[row]] = true;
    for (int64_t step = 0; step < steps[row]; ++step) {
      const int32_t position = positions[row * sizes->time + step];
      if (position < 0 || position >= sizes->time ||
          (step > 0 && position <= positions[row * sizes->time + step - 1])) {
        return InvalidArgument("step_positions must increase within [0, ", sizes->time,
                               ") over each row's steps. Received ", position, " at row ",
                               row, ", step ", step);
      }
    }
  }
  return Status();
}

// Rows per chunk. Chunks run their steps independently, on TensorFlow's threads, and a
// chunk keeps one step's inputs, states and gates in the core's cache. The forward pass
// uses 64 rows. The backward pass also keeps the chunk's gate gradients, so it uses fewer
// rows for wide rows. With 8 experts of 32 units, 32 rows took 9-13% less CPU time than
// 64 rows. With 4 experts, 64 rows stayed best (2 cores, TensorFlow 2.21).
constexpr int64_t kForwardRows = 64;
constexpr int64_t kBackwardFloats = 32 * 1024;

int64_t BackwardRows(int64_t gate_row) {
  return std::max<int64_t>(16, std::min<int64_t>(64, kBackwardFloats / std::max<int64_t>(1, gate_row)));
}

int64_t NumChunks(int64_t batch, int64_t rows_per_chunk) {
  return (batch + rows_per_chunk - 1) / rows_per_chunk;
}

// Calls `run_chunk(index, first, last)` for every chunk of rows, in parallel.
template <typename Function>
void RunChunks(OpKernelContext* context, int64_t batch, int64_t rows_per_chunk,
               int64_t cost_per_chunk, const Function& run_chunk) {
  auto* workers = context->device()->tensorflow_cpu_worker_threads()->workers;
  ::tensorflow::Shard(workers->NumThreads(), workers, NumChunks(batch, rows_per_chunk),
                      cost_per_chunk, [&](int64_t begin, int64_t end) {
                        for (int64_t index = begin; index < end; ++index) {
                          const int64_t first = index * rows_per_chunk;
                          run_chunk(index, first, std::min(batch, first + rows_per_chunk));
                        }
                      });
}

// Rows of the chunk [first, first + chunk) that have step t.
int64_t ChunkRows(const int32_t* steps, int64_t batch, int64_t t, int64_t first,
                  int64_t chunk) {
  return std::min(chunk, std::max<int64_t>(0, ActiveRows(steps, batch, t) - first));
}

// Locations of the sorted rows' values in the caller's (batch, time, ...) tensors.
struct RowMap {
  const int32_t* steps;      // (batch,) valid steps per sorted row
  const int32_t* rows;       // (batch,) original row of each sorted row
  const int32_t* positions;  // (batch, time) original step of each valid step
  int64_t time;

  // Reads inputs 4-6 of either op: row_steps, source_rows and step_positions.
  static RowMap FromInputs(OpKernelContext* context, int64_t time) {
    return RowMap{context->input(4).flat<int32_t>().data(),
                  context->input(5).flat<int32_t>().data(),
                  context->input(6).flat<int32_t>().data(), time};
  }

  // Offset of (sorted row, valid step) in a (batch, time, width) tensor.
  int64_t Offset(int64_t row, int64_t step, int64_t width) const {
    return (rows[row] * time + positions[row * time + step]) * width;
  }
  // First original step after valid step `step` that belongs to the next valid step.
  int64_t NextPosition(int64_t row, int64_t step) const {
    return step + 1 < steps[row] ? positions[row * time + step + 1] : time;
  }
};

// Copies the inputs of valid step t of rows [first, first + rows) into `buffer`.
void GatherInputs(const RowMap& map, const float* inputs, int64_t features, int64_t first,
                  int64_t rows, int64_t t, Matrix* buffer) {
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(buffer->data() + r * features, inputs + map.Offset(first + r, t, features),
                sizeof(float) * features);
  }
}

// Base of both ops: the `return_sequences` attribute and the shape of the layer's outputs.
class MultiExpertLstmBase : public OpKernel {
 public:
  explicit MultiExpertLstmBase(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("return_sequences", &return_sequences_));
  }

 protected:
  TensorShape OutputShape(const Sizes& n) const {
    return return_sequences_ ? TensorShape({n.batch, n.time, n.experts, n.units})
                             : TensorShape({n.batch, n.experts, n.units});
  }

  bool return_sequences_;
};

class MultiExpertLstmOp : public MultiExpertLstmBase {
 public:
  using MultiExpertLstmBase::MultiExpertLstmBase;

  void Compute(OpKernelContext* context) override {
    Sizes n;
    OP_REQUIRES_OK(context, CheckInputs(context, &n));
    const RowMap map = RowMap::FromInputs(context, n.time);

    Tensor *outputs = nullptr, *hidden = nullptr, *cell = nullptr, *gates = nullptr;
    const TensorShape output_shape = OutputShape(n);
    OP_REQUIRES_OK(context, context->allocate_output(0, output_shape, &outputs));
    OP_REQUIRES_OK(context, context->allocate_output(
                                1, TensorShape({n.time, n.batch, n.experts, n.units}), &hidden));
    OP_REQUIRES_OK(context, context->allocate_output(2, hidden->shape(), &cell));
    OP_REQUIRES_OK(context, context->allocate_output(
                                3, TensorShape({n.time, n.batch, n.experts, n.gate_units()}),
                                &gates));
    // Where a row has no step, `hidden`, `cell` and `gates` get zeros below. Nothing reads
    // them there, but tools such as tf.debugging.enable_check_numerics check every value.
    if (n.time == 0 || n.batch == 0 || n.experts == 0 || n.units == 0) {
      outputs->flat<float>().setZero();
      return;
    }

    const float* input_data = context->input(0).flat<float>().data();
    const ConstMatrixMap input_kernel(context->input(1).flat<float>().data(), n.features,
                                      n.gate_row());
    const Eigen::Map<const RowVector> input_bias(context->input(2).flat<float>().data(),
                                                 n.gate_row());
    const float* kernel_data = context->input(3).flat<float>().data();
    float* output_data = outputs->flat<float>().data();
    float* hidden_data = hidden->flat<float>().data();
    float* cell_data = cell->flat<float>().data();
    float* gates_data = gates->flat<float>().data();
    const int64_t units = n.units, gate_units = n.gate_units();
    const int64_t state_row = n.state_row(), gate_row = n.gate_row();

    auto run_chunk = [&](int64_t, int64_t first, int64_t last) {
      const int64_t chunk = last - first;
      Matrix step_inputs(chunk, n.features);
      for (int64_t t = 0; t < n.time; ++t) {
        const int64_t rows = ChunkRows(map.steps, n.batch, t, first, chunk);
        const int64_t step_state = (t * n.batch + first) * state_row;
        const int64_t previous_state = step_state - n.batch * state_row;
        float* step_hidden = hidden_data + step_state;
        float* step_cell = cell_data + step_state;
        std::memset(step_hidden + rows * state_row, 0, sizeof(float) * (chunk - rows) * state_row);
        std::memset(step_cell + rows * state_row, 0, sizeof(float) * (chunk - rows) * state_row);
        std::memset(gates_data + ((t * n.batch + first) + rows) * gate_row, 0,
                    sizeof(float) * (chunk - rows) * gate_row);
        if (rows == 0) continue;

        // x_t W + b for every expert and gate: one product for the chunk.
        GatherInputs(map, input_data, n.features, first, rows, t, &step_inputs);
        auto z = MatrixMap(gates_data + (t * n.batch + first) * gate_row, rows, gate_row);
        z.noalias() = step_inputs.topRows(rows) * input_kernel;
        z.rowwise() += input_bias;

        for (int64_t e = 0; e < n.experts; ++e) {
          // z_t = x_t W_e + b_e + h_{t-1} U_e, in the gates output.
          auto z_rows = z.middleCols(e * gate_units, gate_units);
          if (t > 0) {
            const ConstStrided previous_hidden(hidden_data + previous_state + e * units, rows,
                                               units, Eigen::OuterStride<>(state_row));
            z_rows.noalias() +=
                previous_hidden * ConstMatrixMap(kernel_data + e * units * gate_units, units,
                                                 gate_units);
          }

          // Activations, in place: i = sigmoid(z_i), f = sigmoid(z_f), c~ = tanh(z_c),
          // o = sigmoid(z_o).
          z_rows.leftCols(2 * units).array() = z_rows.leftCols(2 * units).array().logistic();
          z_rows.middleCols(2 * units, units).array() =
              z_rows.middleCols(2 * units, units).array().tanh();
          z_rows.rightCols(units).array() = z_rows.rightCols(units).array().logistic();
          const auto input_gate = z_rows.leftCols(units).array();
          const auto forget_gate = z_rows.middleCols(units, units).array();
          const auto candidate = z_rows.middleCols(2 * units, units).array();
          const auto output_gate = z_rows.rightCols(units).array();

          Strided cell_values(step_cell + e * units, rows, units,
                              Eigen::OuterStride<>(state_row));
          if (t > 0) {
            const ConstStrided previous_cell(cell_data + previous_state + e * units, rows,
                                             units, Eigen::OuterStride<>(state_row));
            // c_t = f * c_{t-1} + i * c~
            cell_values.array() = forget_gate * previous_cell.array() + input_gate * candidate;
          } else {
            cell_values.array() = input_gate * candidate;
          }
          // h_t = o * tanh(c_t)
          Strided(step_hidden + e * units, rows, units, Eigen::OuterStride<>(state_row))
              .array() = output_gate * cell_values.array().tanh();
        }
      }

      // The layer's outputs, in the caller's row and step order.
      for (int64_t row = first; row < last; ++row) {
        const int64_t row_steps = map.steps[row];
        float* row_outputs =
            output_data + map.rows[row] * (return_sequences_ ? n.time : 1) * state_row;
        // Zeros before the first valid step, and for a row without any.
        const int64_t zero_steps =
            return_sequences_ ? (row_steps ? map.positions[row * n.time] : n.time)
                              : (row_steps ? 0 : 1);
        std::memset(row_outputs, 0, sizeof(float) * zero_steps * state_row);
        if (row_steps == 0) continue;
        if (!return_sequences_) {
          std::memcpy(output_data + map.rows[row] * state_row,
                      hidden_data + ((row_steps - 1) * n.batch + row) * state_row,
                      sizeof(float) * state_row);
          continue;
        }
        for (int64_t step = 0; step < row_steps; ++step) {
          // Valid step `step` and the padded steps after it show h of that valid step.
          const float* source = hidden_data + (step * n.batch + row) * state_row;
          for (int64_t t = map.positions[row * n.time + step]; t < map.NextPosition(row, step);
               ++t) {
            std::memcpy(output_data + (map.rows[row] * n.time + t) * state_row, source,
                        sizeof(float) * state_row);
          }
        }
      }
    };
    RunChunks(context, n.batch, kForwardRows,
              kForwardRows * n.time * n.gate_row() * (2 * n.features + 2 * units + 30),
              run_chunk);
  }
};

class MultiExpertLstmGradOp : public MultiExpertLstmBase {
 public:
  using MultiExpertLstmBase::MultiExpertLstmBase;

  void Compute(OpKernelContext* context) override {
    Sizes n;
    OP_REQUIRES_OK(context, CheckInputs(context, &n));
    const RowMap map = RowMap::FromInputs(context, n.time);
    const Tensor& hidden = context->input(7);  // (time, batch, experts, units)
    const Tensor& cell = context->input(8);  // (time, batch, experts, units)
    const Tensor& gates = context->input(9);  // (time, batch, experts, 4 * units)
    const Tensor& outputs_grad = context->input(10);  // the shape of the op's outputs
    const TensorShape state_shape({n.time, n.batch, n.experts, n.units});
    const TensorShape output_shape = OutputShape(n);
    OP_REQUIRES(context,
                hidden.shape() == state_shape && cell.shape() == state_shape &&
                    gates.shape() ==
                        TensorShape({n.time, n.batch, n.experts, n.gate_units()}) &&
                    outputs_grad.shape() == output_shape,
                InvalidArgument("hidden, cell, gates and outputs_grad do not match the "
                                "inputs. Received ",
                                hidden.shape().DebugString(), ", ", cell.shape().DebugString(),
                                ", ", gates.shape().DebugString(), " and ",
                                outputs_grad.shape().DebugString()));

    Tensor *inputs_grad = nullptr, *kernel_grad = nullptr, *bias_grad = nullptr,
           *recurrent_kernel_grad = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, context->input(0).shape(), &inputs_grad));
    OP_REQUIRES_OK(context, context->allocate_output(1, context->input(1).shape(), &kernel_grad));
    OP_REQUIRES_OK(context, context->allocate_output(2, context->input(2).shape(), &bias_grad));
    OP_REQUIRES_OK(context, context->allocate_output(3, context->input(3).shape(),
                                                     &recurrent_kernel_grad));
    inputs_grad->flat<float>().setZero();  // Padded steps get zeros.
    kernel_grad->flat<float>().setZero();
    bias_grad->flat<float>().setZero();
    recurrent_kernel_grad->flat<float>().setZero();
    if (n.time == 0 || n.batch == 0 || n.experts == 0 || n.units == 0) return;

    const float* input_data = context->input(0).flat<float>().data();
    const ConstMatrixMap input_kernel(context->input(1).flat<float>().data(), n.features,
                                      n.gate_row());
    const float* kernel_data = context->input(3).flat<float>().data();
    const float* hidden_data = hidden.flat<float>().data();
    const float* cell_data = cell.flat<float>().data();
    const float* gates_data = gates.flat<float>().data();
    const float* outputs_grad_data = outputs_grad.flat<float>().data();
    float* inputs_grad_data = inputs_grad->flat<float>().data();
    const int64_t units = n.units, gate_units = n.gate_units();
    const int64_t state_row = n.state_row(), gate_row = n.gate_row();

    // Each chunk sums its own weight gradients, so that chunks can run at the same time.
    const int64_t rows_per_chunk = BackwardRows(gate_row);
    const int64_t chunks = NumChunks(n.batch, rows_per_chunk);
    std::vector<Matrix> chunk_kernel_grads(chunks), chunk_recurrent_grads(chunks);
    std::vector<RowVector> chunk_bias_grads(chunks);

    auto run_chunk = [&](int64_t index, int64_t first, int64_t last) {
      const int64_t chunk = last - first;
      Matrix& dW = chunk_kernel_grads[index];
      Matrix& dU = chunk_recurrent_grads[index];
      RowVector& db = chunk_bias_grads[index];
      dW = Matrix::Zero(n.features, gate_row);
      dU = Matrix::Zero(n.experts * units, gate_units);
      db = RowVector::Zero(gate_row);
      // Gradients that step t + 1 sends back to h_t and c_t. Rows that have no step t + 1
      // keep zeros, because their h_t and c_t feed nothing later.
      Matrix hidden_carry = Matrix::Zero(chunk, state_row);
      Matrix cell_carry = Matrix::Zero(chunk, state_row);
      Matrix incoming(chunk, state_row);
      Matrix dz(chunk, gate_row);
      Matrix dh(chunk, units), dc(chunk, units), cell_tanh(chunk, units);
      Matrix step_inputs(chunk, n.features), step_inputs_grad(chunk, n.features);

      for (int64_t t = n.time - 1; t >= 0; --t) {
        const int64_t rows = ChunkRows(map.steps, n.batch, t, first, chunk);
        if (rows == 0) continue;
        const int64_t step_state = (t * n.batch + first) * state_row;
        const float* step_gates = gates_data + (t * n.batch + first) * gate_row;

        // dL/dh_t from the layer's outputs: the sum over the original steps that show h_t.
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t row = first + r;
          auto target = incoming.row(r);
          if (return_sequences_) {
            target.setZero();
            for (int64_t step = map.positions[row * n.time + t]; step < map.NextPosition(row, t);
                 ++step) {
              target += Eigen::Map<const RowVector>(
                  outputs_grad_data + (map.rows[row] * n.time + step) * state_row, state_row);
            }
          } else if (t == map.steps[row] - 1) {
            target = Eigen::Map<const RowVector>(outputs_grad_data + map.rows[row] * state_row,
                                                 state_row);
          } else {
            target.setZero();
          }
        }

        for (int64_t e = 0; e < n.experts; ++e) {
          const int64_t state_offset = step_state + e * units;
          const ConstStrided gate_values(step_gates + e * gate_units, rows, gate_units,
                                         Eigen::OuterStride<>(gate_row));
          const auto input_gate = gate_values.leftCols(units).array();
          const auto forget_gate = gate_values.middleCols(units, units).array();
          const auto candidate = gate_values.middleCols(2 * units, units).array();
          const auto output_gate = gate_values.rightCols(units).array();
          const ConstStrided cell_values(cell_data + state_offset, rows, units,
                                         Eigen::OuterStride<>(state_row));
          Strided hidden_from_next(hidden_carry.data() + e * units, rows, units,
                                   Eigen::OuterStride<>(state_row));
          Strided cell_from_next(cell_carry.data() + e * units, rows, units,
                                 Eigen::OuterStride<>(state_row));
          auto dz_rows = dz.block(0, e * gate_units, rows, gate_units);

          cell_tanh.topRows(rows).array() = cell_values.array().tanh();
          const auto tanh_c = cell_tanh.topRows(rows).array();
          // dL/dh_t: from the layer's outputs and from step t + 1.
          dh.topRows(rows).array() =
              incoming.block(0, e * units, rows, units).array() + hidden_from_next.array();
          const auto dh_rows = dh.topRows(rows).array();
          // dL/dc_t = dL/dc_t (from t + 1) + dh * o * (1 - tanh(c_t)^2)
          dc.topRows(rows).array() =
              cell_from_next.array() + dh_rows * output_gate * (1.0f - tanh_c.square());
          const auto dc_rows = dc.topRows(rows).array();
          // Pre-activation gradients: sigmoid' = s (1 - s), tanh' = 1 - tanh^2.
          dz_rows.leftCols(units).array() =
              dc_rows * candidate * input_gate * (1.0f - input_gate);
          if (t > 0) {
            const ConstStrided previous_cell(cell_data + state_offset - n.batch * state_row,
                                             rows, units, Eigen::OuterStride<>(state_row));
            dz_rows.middleCols(units, units).array() =
                dc_rows * previous_cell.array() * forget_gate * (1.0f - forget_gate);
          } else {
            dz_rows.middleCols(units, units).setZero();
          }
          dz_rows.middleCols(2 * units, units).array() =
              dc_rows * input_gate * (1.0f - candidate.square());
          dz_rows.rightCols(units).array() =
              dh_rows * tanh_c * output_gate * (1.0f - output_gate);
          // dL/dc_{t-1} through c_t = f * c_{t-1} + ...
          cell_from_next.array() = dc_rows * forget_gate;

          const ConstMatrixMap expert_kernel(kernel_data + e * units * gate_units, units,
                                             gate_units);
          // dL/dh_{t-1} = dz_t U_e^T
          hidden_from_next.noalias() = dz_rows * expert_kernel.transpose();
          if (t > 0) {
            // dL/dU_e += h_{t-1}^T dz_t
            const ConstStrided previous_hidden(hidden_data + state_offset - n.batch * state_row,
                                               rows, units, Eigen::OuterStride<>(state_row));
            dU.middleRows(e * units, units).noalias() += previous_hidden.transpose() * dz_rows;
          }
        }

        // The input side, for every expert at once, while dz is in the cache:
        // dL/dx_t = dz_t W^T, dL/dW += x_t^T dz_t, dL/db += sum over rows of dz_t.
        const auto dz_step = dz.topRows(rows);
        GatherInputs(map, input_data, n.features, first, rows, t, &step_inputs);
        step_inputs_grad.topRows(rows).noalias() = dz_step * input_kernel.transpose();
        for (int64_t r = 0; r < rows; ++r) {
          std::memcpy(inputs_grad_data + map.Offset(first + r, t, n.features),
                      step_inputs_grad.data() + r * n.features, sizeof(float) * n.features);
        }
        dW.noalias() += step_inputs.topRows(rows).transpose() * dz_step;
        db += dz_step.colwise().sum();
      }
    };
    RunChunks(context, n.batch, rows_per_chunk,
              rows_per_chunk * n.time * n.gate_row() * (4 * n.features + 4 * units + 40),
              run_chunk);

    MatrixMap total_kernel(kernel_grad->flat<float>().data(), n.features, gate_row);
    MatrixMap total_recurrent(recurrent_kernel_grad->flat<float>().data(), n.experts * units,
                              gate_units);
    Eigen::Map<RowVector> total_bias(bias_grad->flat<float>().data(), gate_row);
    for (int64_t index = 0; index < chunks; ++index) {
      total_kernel += chunk_kernel_grads[index];
      total_recurrent += chunk_recurrent_grads[index];
      total_bias += chunk_bias_grads[index];
    }
  }
};

}  // namespace

REGISTER_OP("MtlLayersMultiExpertLstm")
    .Input("inputs: float")
    .Input("kernel: float")
    .Input("bias: float")
    .Input("recurrent_kernel: float")
    .Input("row_steps: int32")
    .Input("source_rows: int32")
    .Input("step_positions: int32")
    .Attr("return_sequences: bool")
    .Output("outputs: float")
    .Output("hidden: float")
    .Output("cell: float")
    .Output("gates: float")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle inputs, recurrent_kernel;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &inputs));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 3, &recurrent_kernel));
      bool return_sequences;
      TF_RETURN_IF_ERROR(c->GetAttr("return_sequences", &return_sequences));
      const DimensionHandle batch = c->Dim(inputs, 0), time = c->Dim(inputs, 1);
      const DimensionHandle experts = c->Dim(recurrent_kernel, 0);
      const DimensionHandle units = c->Dim(recurrent_kernel, 1);
      c->set_output(0, return_sequences ? c->MakeShape({batch, time, experts, units})
                                        : c->MakeShape({batch, experts, units}));
      c->set_output(1, c->MakeShape({time, batch, experts, units}));
      c->set_output(2, c->MakeShape({time, batch, experts, units}));
      c->set_output(3, c->MakeShape({time, batch, experts, c->Dim(recurrent_kernel, 2)}));
      return Status();
    })
    .Doc("Runs several LSTM experts over one sequence; see multi_expert_lstm.cc.");

REGISTER_OP("MtlLayersMultiExpertLstmGrad")
    .Input("inputs: float")
    .Input("kernel: float")
    .Input("bias: float")
    .Input("recurrent_kernel: float")
    .Input("row_steps: int32")
    .Input("source_rows: int32")
    .Input("step_positions: int32")
    .Input("hidden: float")
    .Input("cell: float")
    .Input("gates: float")
    .Input("outputs_grad: float")
    .Attr("return_sequences: bool")
    .Output("inputs_grad: float")
    .Output("kernel_grad: float")
    .Output("bias_grad: float")
    .Output("recurrent_kernel_grad: float")
    .SetShapeFn([](InferenceContext* c) {
      for (int index = 0; index < 4; ++index) c->set_output(index, c->input(index));
      return Status();
    })
    .Doc("Gradients of MtlLayersMultiExpertLstm.");

REGISTER_KERNEL_BUILDER(Name("MtlLayersMultiExpertLstm").Device(DEVICE_CPU),
                        MultiExpertLstmOp);
REGISTER_KERNEL_BUILDER(Name("MtlLayersMultiExpertLstmGrad").Device(DEVICE_CPU),
                        MultiExpertLstmGradOp);

}  // namespace mtl_layers
