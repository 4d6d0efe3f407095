// The gated product of HyperGridDense, forward and backward, as TensorFlow ops.
//
// HyperGrid (Tay et al., "HyperGrid Transformers: Towards A Single Model for Multiple
// Tasks", ICLR 2021) gates a dense layer's kernel W (features x units) per example b with
// one value per block of a grid:
//
//   y_b = x_b (W * expand(gate_b))        x_b: (positions, features), gate_b: (R, C)
//
// where expand repeats gate_b[i, j] over the block of r = features / R rows and
// c = units / C columns. These ops compute that product with the multiply-adds of one
// dense layer and never write a gated kernel to memory. The forward op forms each
// example's gated kernel 32 columns at a time in a small buffer. The product with the
// example's positions reads that buffer from the core's cache, as in the packing step of
// a blocked matrix product, with the gate applied on the way. The gradient op computes
//
//   dx_b           = sum_j expand(gate_b[:, j]) * Z_bj,  Z_bj = dy_b[:, block j] W[:, block j]^T
//   dgate_b[i, j]  = sum over positions and the features of row block i of x_b * Z_bj
//   dW[block i, :] = sum_b x_b[:, block i]^T (dy_b * expand(gate_b[i, :]))
//
// keeping each Z_bj in registers and scaling dy once per row block. For column blocks
// narrower than 16 it forms each example's gated panels instead, and dW and dgate share
// each example's product x_b^T dy_b while it is in registers.
//
// The inner loops are written with GCC vector types of 16 floats; with -mavx512f they
// compile to one AVX-512 register each, with -mavx2 to two AVX registers.

#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

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
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

// 16 floats; unaligned loads and stores through this type are allowed.
typedef float Vector __attribute__((vector_size(64), aligned(4), may_alias));

constexpr int64_t kPanel = 32;     // columns of one packed panel: two vectors
constexpr int kRowsPerTile = 12;   // rows of one register tile: 12 x 32 accumulators
// Rows of a tile that keeps two sets of accumulators (a partial product and the gated total).
constexpr int kGatedRowsPerTile = 6;
// Column blocks narrower than this make the per-block gating of the gradient's partial
// products cost more than forming each example's gated kernel, so the gradient op does
// the latter for them.
constexpr int64_t kMinGatedColumns = 16;

inline Vector Load(const float* p) { return *reinterpret_cast<const Vector*>(p); }
inline void Store(float* p, Vector v) { *reinterpret_cast<Vector*>(p) = v; }

// The register tile: acc[i] (two vectors) = sum_k A(i, k) * B(k, 0:32), for i < ROWS.
// A(i, k) is a[i * row_stride + k * depth_stride]; B's row k starts at b + k * b_stride.
template <int ROWS>
struct Tile {
  Vector acc[ROWS][2];

  inline void Multiply(const float* a, int64_t row_stride, int64_t depth_stride,
                       const float* b, int64_t b_stride, int64_t depth) {
    for (int i = 0; i < ROWS; ++i) acc[i][0] = acc[i][1] = Vector{};
    for (int64_t k = 0; k < depth; ++k) {
      const Vector b0 = Load(b + k * b_stride), b1 = Load(b + k * b_stride + 16);
      const float* a_k = a + k * depth_stride;
#pragma GCC unroll 16
      for (int i = 0; i < ROWS; ++i) {
        const float value = a_k[i * row_stride];
        acc[i][0] += value * b0;
        acc[i][1] += value * b1;
      }
    }
  }

  inline void StoreTo(float* c, int64_t c_stride) const {
    for (int i = 0; i < ROWS; ++i) {
      Store(c + i * c_stride, acc[i][0]);
      Store(c + i * c_stride + 16, acc[i][1]);
    }
  }
};

// C (rows x 32, row stride c_stride) = A (rows x depth, row stride a_stride) times a packed
// panel (depth x 32, contiguous), in tiles of 12 rows and one smaller tile for the rest.
template <int ROWS>
void PanelProductRest(int64_t rows, const float* a, int64_t a_stride, const float* panel,
                      int64_t depth, float* c, int64_t c_stride) {
  if constexpr (ROWS > 0) {
    if (rows == ROWS) {
      Tile<ROWS> tile;
      tile.Multiply(a, a_stride, 1, panel, kPanel, depth);
      tile.StoreTo(c, c_stride);
      return;
    }
    PanelProductRest<ROWS - 1>(rows, a, a_stride, panel, depth, c, c_stride);
  }
}

void PanelProduct(int64_t rows, const float* a, int64_t a_stride, const float* panel,
                  int64_t depth, float* c, int64_t c_stride) {
  int64_t row = 0;
  for (; row + kRowsPerTile <= rows; row += kRowsPerTile) {
    Tile<kRowsPerTile> tile;
    tile.Multiply(a + row * a_stride, a_stride, 1, panel, kPanel, depth);
    tile.StoreTo(c + row * c_stride, c_stride);
  }
  PanelProductRest<kRowsPerTile - 1>(rows - row, a + row * a_stride, a_stride, panel, depth,
                                     c + row * c_stride, c_stride);
}

// Writes the 32 gate values of one panel: gate_row[block_of_column[j]] for j < 32. When
// the panel lies in one block (`uniform`), that is one value repeated.
inline void FillPanelGate(const float* gate_row, const int64_t* block_of_column, bool uniform,
                          float* out) {
  if (uniform) {
    const Vector value = Vector{} + gate_row[block_of_column[0]];
    Store(out, value);
    Store(out + 16, value);
    return;
  }
  for (int64_t j = 0; j < kPanel; ++j) out[j] = gate_row[block_of_column[j]];
}

// Sizes of one call: x (batch, positions, features), kernel (features, units),
// gate (batch, grid_rows, grid_cols).
struct Sizes {
  int64_t batch, positions, features, units, grid_rows, grid_cols;
  int64_t block_rows() const { return features / grid_rows; }
  int64_t block_cols() const { return units / grid_cols; }
};

Status CheckInputs(OpKernelContext* context, Sizes* sizes) {
  const Tensor& x = context->input(0);
  const Tensor& kernel = context->input(1);
  const Tensor& gate = context->input(2);

  if (x.dims() != 3) {
    return InvalidArgument("inputs must be (batch, positions, features). Received shape ",
                           x.shape().DebugString());
  }
  if (kernel.dims() != 2 || kernel.dim_size(0) != x.dim_size(2)) {
    return InvalidArgument("kernel must be (features, units) with features = ",
                           x.dim_size(2), ". Received shape ", kernel.shape().DebugString());
  }
  if (gate.dims() != 3 || gate.dim_size(0) != x.dim_size(0)) {
    return InvalidArgument("gate must be (batch, grid_rows, grid_cols) with batch = ",
                           x.dim_size(0), ". Received shape ", gate.shape().DebugString());
  }

  sizes->batch = x.dim_size(0);
  sizes->positions = x.dim_size(1);
  sizes->features = x.dim_size(2);
  sizes->units = kernel.dim_size(1);
  sizes->grid_rows = gate.dim_size(1);
  sizes->grid_cols = gate.dim_size(2);

  if (sizes->grid_rows < 1 || sizes->grid_cols < 1 ||
      sizes->features % sizes->grid_rows != 0 || sizes->units % sizes->grid_cols != 0) {
    return InvalidArgument("gate's grid (", sizes->grid_rows, ", ", sizes->grid_cols,
                           ") must divide the kernel (", sizes->features, ", ", sizes->units,
                           ") into whole blocks");
  }
  if (sizes->features % kPanel != 0 || sizes->units % kPanel != 0) {
    return InvalidArgument("features and units must be multiples of ", kPanel,
                           ". Received features = ", sizes->features,
                           ", units = ", sizes->units);
  }
  return Status();
}

void Parallel(OpKernelContext* context, int64_t items, int64_t cost_per_item,
              const std::function<void(int64_t, int64_t)>& work) {
  auto* workers = context->device()->tensorflow_cpu_worker_threads()->workers;
  ::tensorflow::Shard(workers->NumThreads(), workers, items, cost_per_item, work);
}

// y = x (W * expand(gate)), one item per (example, panel of 32 units).
class HyperGridMatmulOp : public OpKernel {
 public:
  explicit HyperGridMatmulOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    Sizes n;
    OP_REQUIRES_OK(context, CheckInputs(context, &n));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(
                                0, TensorShape({n.batch, n.positions, n.units}), &output));
    if (n.batch == 0 || n.positions == 0) return;
    const float* x = context->input(0).flat<float>().data();
    const float* kernel = context->input(1).flat<float>().data();
    const float* gate = context->input(2).flat<float>().data();
    float* y = output->flat<float>().data();
    const int64_t panels = n.units / kPanel;

    Parallel(context, n.batch * panels, 2 * n.positions * n.features * kPanel,
             [&](int64_t begin, int64_t end) {
      std::unique_ptr<float[]> panel(new float[n.features * kPanel]);
      float gate_row[kPanel];
      int64_t block_of_column[kPanel];
      const int64_t block_rows = n.block_rows();
      const bool uniform = n.block_cols() % kPanel == 0;
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item / panels, column = (item % panels) * kPanel;
        const float* gate_b = gate + b * n.grid_rows * n.grid_cols;
        for (int64_t j = 0; j < kPanel; ++j) block_of_column[j] = (column + j) / n.block_cols();

        // Pack the gated panel: W[f, column:column+32] * gate_b[f / r, (column + j) / c].
        for (int64_t i = 0; i < n.grid_rows; ++i) {
          FillPanelGate(gate_b + i * n.grid_cols, block_of_column, uniform, gate_row);
          const Vector g0 = Load(gate_row), g1 = Load(gate_row + 16);
          for (int64_t f = i * block_rows; f < (i + 1) * block_rows; ++f) {
            const float* w = kernel + f * n.units + column;
            Store(panel.get() + f * kPanel, Load(w) * g0);
            Store(panel.get() + f * kPanel + 16, Load(w + 16) * g1);
          }
        }

        // y_b[:, column:column+32] = x_b times the gated panel.
        PanelProduct(n.positions, x + b * n.positions * n.features, n.features,
                     panel.get(), n.features, y + b * n.positions * n.units + column,
                     n.units);
      }
    });
  }
};

// Gradients of y = x (W * expand(gate)) with respect to x, W and gate.
class HyperGridMatmulGradOp : public OpKernel {
 public:
  explicit HyperGridMatmulGradOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    Sizes n;
    OP_REQUIRES_OK(context, CheckInputs(context, &n));
    const Tensor& output_grad = context->input(3);
    OP_REQUIRES(context,
                output_grad.dims() == 3 && output_grad.dim_size(0) == n.batch &&
                    output_grad.dim_size(1) == n.positions && output_grad.dim_size(2) == n.units,
                InvalidArgument("output_grad must be (batch, positions, units) = (", n.batch,
                                ", ", n.positions, ", ", n.units, "). Received shape ",
                                output_grad.shape().DebugString()));
    Tensor *inputs_grad = nullptr, *kernel_grad = nullptr, *gate_grad = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, context->input(0).shape(), &inputs_grad));
    OP_REQUIRES_OK(context, context->allocate_output(1, context->input(1).shape(), &kernel_grad));
    OP_REQUIRES_OK(context, context->allocate_output(2, context->input(2).shape(), &gate_grad));
    const float* x = context->input(0).flat<float>().data();
    const float* kernel = context->input(1).flat<float>().data();
    const float* gate = context->input(2).flat<float>().data();
    const float* dy = output_grad.flat<float>().data();
    float* dx = inputs_grad->flat<float>().data();
    float* dkernel = kernel_grad->flat<float>().data();
    float* dgate = gate_grad->flat<float>().data();
    std::fill(dkernel, dkernel + n.features * n.units, 0.0f);
    std::fill(dgate, dgate + n.batch * n.grid_rows * n.grid_cols, 0.0f);
    if (n.batch == 0 || n.positions == 0) return;

    if (n.block_cols() >= kMinGatedColumns) {
      InputsAndGateGrad(context, n, x, kernel, gate, dy, dx, dgate);
      KernelGrad(context, n, x, gate, dy, dkernel);
    } else {
      InputsGrad(context, n, kernel, gate, dy, dx);
      KernelAndGateGrad(context, n, x, kernel, gate, dy, dkernel, dgate);
    }
  }

 private:
  // dx_b = sum_j expand(gate_b[:, j]) * (dy_b[:, block j] W[:, block j]^T), with
  // dgate_b[i, j] = sum over the positions and the features f of row block i of
  // x_b[:, f] * (dy_b[:, block j] W[f, block j]^T). One item per (example, panel of 32
  // features). The panels of W^T are packed once for all examples, and each column block's
  // partial product Z_j stays in registers while the gate scales it into dx and x meets it
  // for dgate, so no example's gated kernel is formed.
  static void InputsAndGateGrad(OpKernelContext* context, const Sizes& n, const float* x,
                                const float* kernel, const float* gate, const float* dy,
                                float* dx, float* dgate) {
    const int64_t panels = n.features / kPanel;
    const int64_t features = n.features, units = n.units;

    std::unique_ptr<float[]> packed = PackTransposedPanels(context, n, kernel);
    const float* packed_data = packed.get();

    // column_sums[b, j, f] = sum over positions of x_b[:, f] * Z_j[:, f].
    std::unique_ptr<float[]> column_sums(new float[n.batch * n.grid_cols * features]);
    Parallel(context, n.batch * panels, 2 * n.positions * units * kPanel,
             [&](int64_t begin, int64_t end) {
      std::unique_ptr<float[]> gate_cols(new float[n.grid_cols * kPanel]);
      std::unique_ptr<float[]> sums(new float[n.grid_cols * kPanel]);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item / panels, q = item % panels, row = q * kPanel;
        const float* gate_b = gate + b * n.grid_rows * n.grid_cols;

        // gate_cols[j, k] = gate_b[(row + k) / r, j], column block j's gate over the panel.
        for (int64_t k = 0; k < kPanel; ++k) {
          const int64_t block = (row + k) / n.block_rows();
          for (int64_t j = 0; j < n.grid_cols; ++j) {
            gate_cols[j * kPanel + k] = gate_b[block * n.grid_cols + j];
          }
        }
        std::fill(sums.get(), sums.get() + n.grid_cols * kPanel, 0.0f);

        GatedRows<kGatedRowsPerTile>::Run(
            n, n.positions, dy + b * n.positions * units, x + b * n.positions * features + row,
            packed_data + q * units * kPanel, gate_cols.get(),
            dx + b * n.positions * features + row, sums.get());
        for (int64_t j = 0; j < n.grid_cols; ++j) {
          std::memcpy(column_sums.get() + (b * n.grid_cols + j) * features + row,
                      sums.get() + j * kPanel, kPanel * sizeof(float));
        }
      }
    });

    // dgate_b[i, j] = the sum of column_sums[b, j, f] over the features f of row block i.
    for (int64_t b = 0; b < n.batch; ++b) {
      for (int64_t j = 0; j < n.grid_cols; ++j) {
        const float* column = column_sums.get() + (b * n.grid_cols + j) * features;
        for (int64_t i = 0; i < n.grid_rows; ++i) {
          float total = 0.0f;
          for (int64_t f = i * n.block_rows(); f < (i + 1) * n.block_rows(); ++f) total += column[f];
          dgate[(b * n.grid_rows + i) * n.grid_cols + j] = total;
        }
      }
    }
  }

  // The positions of one example for one panel of 32 features, in tiles of up to ROWS rows.
  template <int ROWS>
  struct GatedRows {
    static void Run(const Sizes& n, int64_t rows, const float* dy_b, const float* x_b,
                    const float* panel, const float* gate_cols, float* dx_b, float* sums) {
      int64_t t = 0;
      for (; t + ROWS <= rows; t += ROWS) {
        GatedTile<ROWS>(n, dy_b + t * n.units, x_b + t * n.features, panel, gate_cols,
                        dx_b + t * n.features, sums);
      }
      Rest<ROWS - 1>(n, rows - t, dy_b + t * n.units, x_b + t * n.features, panel, gate_cols,
                     dx_b + t * n.features, sums);
    }

    template <int LEFT>
    static void Rest(const Sizes& n, int64_t rows, const float* dy_b, const float* x_b,
                     const float* panel, const float* gate_cols, float* dx_b, float* sums) {
      if constexpr (LEFT > 0) {
        if (rows == LEFT) {
          GatedTile<LEFT>(n, dy_b, x_b, panel, gate_cols, dx_b, sums);
          return;
        }
        Rest<LEFT - 1>(n, rows, dy_b, x_b, panel, gate_cols, dx_b, sums);
      }
    }
  };

  // One tile of ROWS positions x 32 features: for each column block j,
  //   Z_j = dy[:, block j] W^T[block j, panel]      (in registers)
  //   dx += expand(gate[:, j]) * Z_j,  sums[j] += column sums of x * Z_j.
  template <int ROWS>
  static void GatedTile(const Sizes& n, const float* dy_rows, const float* x_rows,
                        const float* panel, const float* gate_cols, float* dx_rows,
                        float* sums) {
    const int64_t block_cols = n.block_cols();
    Vector total[ROWS][2];
    for (int r = 0; r < ROWS; ++r) total[r][0] = total[r][1] = Vector{};
    for (int64_t j = 0; j < n.grid_cols; ++j) {
      Vector z[ROWS][2];
      for (int r = 0; r < ROWS; ++r) z[r][0] = z[r][1] = Vector{};
      for (int64_t u = j * block_cols; u < (j + 1) * block_cols; ++u) {
        const Vector b0 = Load(panel + u * kPanel), b1 = Load(panel + u * kPanel + 16);
#pragma GCC unroll 8
        for (int r = 0; r < ROWS; ++r) {
          const float value = dy_rows[r * n.units + u];
          z[r][0] += value * b0;
          z[r][1] += value * b1;
        }
      }
      const Vector g0 = Load(gate_cols + j * kPanel), g1 = Load(gate_cols + j * kPanel + 16);
      Vector s0 = Vector{}, s1 = Vector{};
      for (int r = 0; r < ROWS; ++r) {
        total[r][0] += g0 * z[r][0];
        total[r][1] += g1 * z[r][1];
        s0 += Load(x_rows + r * n.features) * z[r][0];
        s1 += Load(x_rows + r * n.features + 16) * z[r][1];
      }
      Store(sums + j * kPanel, Load(sums + j * kPanel) + s0);
      Store(sums + j * kPanel + 16, Load(sums + j * kPanel + 16) + s1);
    }
    for (int r = 0; r < ROWS; ++r) {
      Store(dx_rows + r * n.features, total[r][0]);
      Store(dx_rows + r * n.features + 16, total[r][1]);
    }
  }

  // dW[rows, panel] = sum over examples and positions of x_b[:, rows]^T times
  // dy_b[:, panel] * gate_b[i, panel's blocks], one item per (row block i, panel). The
  // gated dy of the item is packed once, so the product runs over all examples at once.
  static void KernelGrad(OpKernelContext* context, const Sizes& n, const float* x,
                         const float* gate, const float* dy, float* dkernel) {
    const int64_t panels = n.units / kPanel;
    const int64_t tiles_per_block = (n.block_rows() + kRowsPerTile - 1) / kRowsPerTile;
    const int64_t tiles = n.grid_rows * tiles_per_block;
    const int64_t tile_floats = n.positions * kRowsPerTile;
    std::unique_ptr<float[]> packed = PackRowTiles(context, n, x, tiles_per_block);

    // Every (block row, panel) item runs on one group of examples before the next group.
    const int64_t group = ExampleGroup(n, tiles * tile_floats);
    for (int64_t first = 0; first < n.batch; first += group) {
      const int64_t last = std::min(n.batch, first + group);
      Parallel(context, n.grid_rows * panels,
               2 * (last - first) * n.positions * n.block_rows() * kPanel,
               [&](int64_t begin, int64_t end) {
      std::unique_ptr<float[]> gated(new float[(last - first) * n.positions * kPanel]);
      int64_t block_of_column[kPanel];
      float gate_panel[kPanel];
      const bool uniform = n.block_cols() % kPanel == 0;
      for (int64_t item = begin; item < end; ++item) {
        const int64_t i = item / panels, p = item % panels, column = p * kPanel;
        for (int64_t j = 0; j < kPanel; ++j) block_of_column[j] = (column + j) / n.block_cols();

        // gated[b - first, t] = dy_b[t, panel] * gate_b[i, panel's blocks]
        for (int64_t b = first; b < last; ++b) {
          FillPanelGate(gate + (b * n.grid_rows + i) * n.grid_cols, block_of_column, uniform,
                        gate_panel);
          const Vector g0 = Load(gate_panel), g1 = Load(gate_panel + 16);
          for (int64_t t = 0; t < n.positions; ++t) {
            const float* source = dy + (b * n.positions + t) * n.units + column;
            float* destination = gated.get() + ((b - first) * n.positions + t) * kPanel;
            Store(destination, Load(source) * g0);
            Store(destination + 16, Load(source + 16) * g1);
          }
        }

        for (int64_t part = 0; part < tiles_per_block; ++part) {
          const int64_t row = i * n.block_rows() + part * kRowsPerTile;
          const int64_t rows = std::min<int64_t>(kRowsPerTile, (i + 1) * n.block_rows() - row);
          KernelTile<kRowsPerTile>(rows, n, first, last, packed.get(), tiles,
                                   i * tiles_per_block + part, tile_floats, gated.get(),
                                   dkernel + row * n.units + column);
        }
      }
      });
    }
  }

  // One tile of the kernel gradient, summed over the positions of examples [first, last)
  // and added to what earlier groups of examples left in `dw`.
  template <int ROWS>
  static void KernelTile(int64_t rows, const Sizes& n, int64_t first, int64_t last,
                         const float* packed, int64_t tiles, int64_t tile, int64_t tile_floats,
                         const float* gated, float* dw) {
    if constexpr (ROWS > 0) {
      if (rows != ROWS) {
        KernelTile<ROWS - 1>(rows, n, first, last, packed, tiles, tile, tile_floats, gated, dw);
        return;
      }
      Vector acc[ROWS][2];
      for (int r = 0; r < ROWS; ++r) {
        acc[r][0] = first == 0 ? Vector{} : Load(dw + r * n.units);
        acc[r][1] = first == 0 ? Vector{} : Load(dw + r * n.units + 16);
      }
      for (int64_t b = first; b < last; ++b) {
        const float* a = packed + (b * tiles + tile) * tile_floats;
        const float* g = gated + (b - first) * n.positions * kPanel;
        for (int64_t t = 0; t < n.positions; ++t) {
          const Vector b0 = Load(g + t * kPanel), b1 = Load(g + t * kPanel + 16);
#pragma GCC unroll 16
          for (int r = 0; r < ROWS; ++r) {
            const float value = a[t * kRowsPerTile + r];
            acc[r][0] += value * b0;
            acc[r][1] += value * b1;
          }
        }
      }
      for (int r = 0; r < ROWS; ++r) {
        Store(dw + r * n.units, acc[r][0]);
        Store(dw + r * n.units + 16, acc[r][1]);
      }
    }
  }

  // Packs W^T in panels of 32 features: packed[(q * units + u) * 32 + k] = W[32 q + k, u].
  // Squares of 32 x 32 let reads and writes both use whole cache lines.
  static std::unique_ptr<float[]> PackTransposedPanels(OpKernelContext* context, const Sizes& n,
                                                       const float* kernel) {
    const int64_t features = n.features, units = n.units;
    std::unique_ptr<float[]> packed(new float[features * units]);
    float* packed_data = packed.get();
    Parallel(context, features / kPanel, 2 * units * kPanel, [=](int64_t begin, int64_t end) {
      for (int64_t q = begin; q < end; ++q) {
        for (int64_t u0 = 0; u0 < units; u0 += kPanel) {
          float square[kPanel][kPanel];
          for (int64_t f = 0; f < kPanel; ++f) {
            std::memcpy(square[f], kernel + (q * kPanel + f) * units + u0, sizeof(square[f]));
          }
          for (int64_t u = 0; u < kPanel; ++u) {
            float* destination = packed_data + (q * units + u0 + u) * kPanel;
            for (int64_t f = 0; f < kPanel; ++f) destination[f] = square[f][u];
          }
        }
      }
    });
    return packed;
  }

  // Returns how many examples go in one group: those whose packed x (`packed_floats` per
  // example) and dy fit in a core's cache together, about 1 MB.
  static int64_t ExampleGroup(const Sizes& n, int64_t packed_floats) {
    const int64_t example_bytes = (packed_floats + n.positions * n.units) * sizeof(float);
    return std::max<int64_t>(1, (int64_t{1} << 20) / example_bytes);
  }

  // Packs x by tile of kernel rows: packed[(b * tiles + tile) * positions * 12 + t * 12 + k]
  // = x[b, t, tile's first row + k]. Tiles of 12 rows never cross a row block.
  static std::unique_ptr<float[]> PackRowTiles(OpKernelContext* context, const Sizes& n,
                                               const float* x, int64_t tiles_per_block) {
    const int64_t tiles = n.grid_rows * tiles_per_block;
    const int64_t tile_floats = n.positions * kRowsPerTile;
    std::unique_ptr<float[]> packed(new float[tiles * n.batch * tile_floats]);
    std::vector<int64_t> tile_rows(tiles), tile_sizes(tiles);
    for (int64_t block = 0; block < n.grid_rows; ++block) {
      for (int64_t part = 0; part < tiles_per_block; ++part) {
        const int64_t row = block * n.block_rows() + part * kRowsPerTile;
        tile_rows[block * tiles_per_block + part] = row;
        tile_sizes[block * tiles_per_block + part] =
            std::min<int64_t>(kRowsPerTile, (block + 1) * n.block_rows() - row);
      }
    }
    float* packed_data = packed.get();
    Parallel(context, n.batch, n.positions * n.features, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        for (int64_t tile = 0; tile < tiles; ++tile) {
          const int64_t row = tile_rows[tile], rows = tile_sizes[tile];
          const float* source = x + b * n.positions * n.features + row;
          float* destination = packed_data + (b * tiles + tile) * tile_floats;
          for (int64_t t = 0; t < n.positions; ++t) {
            if (rows == kRowsPerTile) {
              std::memcpy(destination, source, kRowsPerTile * sizeof(float));  // inlined
            } else {
              for (int64_t k = 0; k < rows; ++k) destination[k] = source[k];
            }
            source += n.features;
            destination += kRowsPerTile;
          }
        }
      }
    });
    return packed;
  }

  // dx_b = dy_b (W * expand(gate_b))^T, one item per (example, panel of 32 features).
  static void InputsGrad(OpKernelContext* context, const Sizes& n, const float* kernel,
                         const float* gate, const float* dy, float* dx) {
    // W^T in panels of 32 features, so that each gated panel reads whole vectors.
    std::unique_ptr<float[]> transposed = PackTransposedPanels(context, n, kernel);
    const int64_t panels = n.features / kPanel;
    const int64_t block_cols = n.block_cols();
    Parallel(context, n.batch * panels, 2 * n.positions * n.units * kPanel,
             [&](int64_t begin, int64_t end) {
      std::unique_ptr<float[]> panel(new float[n.units * kPanel]);
      std::unique_ptr<float[]> gate_cols(new float[n.grid_cols * kPanel]);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item / panels, row = (item % panels) * kPanel;
        const float* gate_b = gate + b * n.grid_rows * n.grid_cols;

        // gate_cols[j, k] = gate_b[(row + k) / r, j], the gate of column block j over the panel.
        int64_t block_of_row[kPanel];
        for (int64_t k = 0; k < kPanel; ++k) block_of_row[k] = (row + k) / n.block_rows();
        if (n.block_rows() % kPanel == 0) {  // the panel lies in one row block
          for (int64_t j = 0; j < n.grid_cols; ++j) {
            const Vector value = Vector{} + gate_b[block_of_row[0] * n.grid_cols + j];
            Store(gate_cols.get() + j * kPanel, value);
            Store(gate_cols.get() + j * kPanel + 16, value);
          }
        } else {
          for (int64_t j = 0; j < n.grid_cols; ++j) {
            for (int64_t k = 0; k < kPanel; ++k) {
              gate_cols[j * kPanel + k] = gate_b[block_of_row[k] * n.grid_cols + j];
            }
          }
        }
        for (int64_t j = 0; j < n.grid_cols; ++j) {
          const Vector g0 = Load(gate_cols.get() + j * kPanel);
          const Vector g1 = Load(gate_cols.get() + j * kPanel + 16);
          for (int64_t u = j * block_cols; u < (j + 1) * block_cols; ++u) {
            const float* w = transposed.get() + ((row / kPanel) * n.units + u) * kPanel;
            Store(panel.get() + u * kPanel, Load(w) * g0);
            Store(panel.get() + u * kPanel + 16, Load(w + 16) * g1);
          }
        }

        PanelProduct(n.positions, dy + b * n.positions * n.units, n.units, panel.get(),
                     n.units, dx + b * n.positions * n.features + row, n.features);
      }
    });
  }

  // For each block row i and panel of 32 units, and each example b:
  //   P = x_b[:, rows]^T dy_b[:, panel]              (rows x 32, in registers)
  //   dW[rows, panel] += gate_b[i, panel's blocks] * P
  //   column sums of W[rows, panel] * P, added into dgate_b[i, panel's blocks]
  // Items are (block row, panel) pairs, so no two threads write the same values of dW or
  // of the per-column sums.
  static void KernelAndGateGrad(OpKernelContext* context, const Sizes& n, const float* x,
                                const float* kernel, const float* gate, const float* dy,
                                float* dkernel, float* dgate) {
    const int64_t panels = n.units / kPanel;
    const int64_t tiles_per_block = (n.block_rows() + kRowsPerTile - 1) / kRowsPerTile;
    const int64_t tiles = n.grid_rows * tiles_per_block;
    const int64_t tile_floats = n.positions * kRowsPerTile;  // one example's slice of a tile

    std::unique_ptr<float[]> packed = PackRowTiles(context, n, x, tiles_per_block);

    // Pack dy by panel: dy_packed[(panel * batch + b) * positions + t][0:32].
    std::unique_ptr<float[]> dy_packed(new float[n.batch * n.positions * n.units]);
    Parallel(context, n.batch, n.positions * n.units, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        for (int64_t t = 0; t < n.positions; ++t) {
          const float* dy_bt = dy + (b * n.positions + t) * n.units;
          for (int64_t p = 0; p < panels; ++p) {
            std::memcpy(dy_packed.get() + ((p * n.batch + b) * n.positions + t) * kPanel,
                        dy_bt + p * kPanel, kPanel * sizeof(float));
          }
        }
      }
    });

    // gate_sums[b, i, u]: sum over the rows of block i of W * (x_b^T dy_b), per unit.
    std::unique_ptr<float[]> gate_sums(new float[n.batch * n.grid_rows * n.units]);
    // Every (block row, panel) item runs on one group of examples before the next group.
    const int64_t group = ExampleGroup(n, tiles * tile_floats);
    for (int64_t first = 0; first < n.batch; first += group) {
      const int64_t last = std::min(n.batch, first + group);
      Parallel(context, n.grid_rows * panels,
               2 * (last - first) * n.positions * n.block_rows() * kPanel,
               [&](int64_t begin, int64_t end) {
        int64_t block_of_column[kPanel];
        float gate_panel[kPanel];
        const bool uniform = n.block_cols() % kPanel == 0;
        for (int64_t item = begin; item < end; ++item) {
          const int64_t i = item / panels, p = item % panels, column = p * kPanel;
          for (int64_t j = 0; j < kPanel; ++j) block_of_column[j] = (column + j) / n.block_cols();
          for (int64_t b = first; b < last; ++b) {
            const float* gate_bi = gate + (b * n.grid_rows + i) * n.grid_cols;
            FillPanelGate(gate_bi, block_of_column, uniform, gate_panel);
            const float* dy_b = dy_packed.get() + (p * n.batch + b) * n.positions * kPanel;
            float* sums = gate_sums.get() + (b * n.grid_rows + i) * n.units + column;
            Store(sums, Vector{});
            Store(sums + 16, Vector{});
            for (int64_t part = 0; part < tiles_per_block; ++part) {
              const int64_t row = i * n.block_rows() + part * kRowsPerTile;
              const int64_t rows = std::min<int64_t>(kRowsPerTile, (i + 1) * n.block_rows() - row);
              const float* x_b = packed.get() +
                  (b * tiles + i * tiles_per_block + part) * tile_floats;
              TileRest<kRowsPerTile>(rows, n, x_b, dy_b, kernel + row * n.units + column,
                                     gate_panel, dkernel + row * n.units + column, sums);
            }
          }
        }
      });
    }

    // dgate_b[i, j] = the sum of gate_sums[b, i, u] over the units u of column block j.
    for (int64_t bi = 0; bi < n.batch * n.grid_rows; ++bi) {
      const float* s = gate_sums.get() + bi * n.units;
      for (int64_t j = 0; j < n.grid_cols; ++j) {
        float total = 0.0f;
        for (int64_t u = j * n.block_cols(); u < (j + 1) * n.block_cols(); ++u) total += s[u];
        dgate[bi * n.grid_cols + j] = total;
      }
    }
  }

  // One example's share of one tile of the kernel gradient: `rows` kernel rows and 32
  // units. `x_b` is the tile's packed x of example b, `dy_b` its packed panel of dy.
  template <int ROWS>
  static void TileRest(int64_t rows, const Sizes& n, const float* x_b, const float* dy_b,
                       const float* w, const float* gate_panel, float* dw, float* sums) {
    if constexpr (ROWS > 0) {
      if (rows != ROWS) {
        TileRest<ROWS - 1>(rows, n, x_b, dy_b, w, gate_panel, dw, sums);
        return;
      }
      // P = x_b[:, rows]^T dy_b[:, panel]: the depth runs over positions.
      Tile<ROWS> tile;
      tile.Multiply(x_b, 1, kRowsPerTile, dy_b, kPanel, n.positions);
      // The product above needs 27 of the 32 vector registers. Without this barrier the
      // compiler keeps the gate and the sums below in registers through it and spills.
      asm volatile("" ::: "memory");
      const Vector g0 = Load(gate_panel), g1 = Load(gate_panel + 16);
      Vector s0 = Load(sums), s1 = Load(sums + 16);
      for (int r = 0; r < ROWS; ++r) {
        float* dw_r = dw + r * n.units;
        const float* w_r = w + r * n.units;
        // dW += expand(gate_b) * P
        Store(dw_r, Load(dw_r) + g0 * tile.acc[r][0]);
        Store(dw_r + 16, Load(dw_r + 16) + g1 * tile.acc[r][1]);
        // dgate_b[i, j] sums W * P over the block.
        s0 += Load(w_r) * tile.acc[r][0];
        s1 += Load(w_r + 16) * tile.acc[r][1];
      }
      Store(sums, s0);
      Store(sums + 16, s1);
    }
  }
};

REGISTER_OP("MtlLayersHyperGridMatmul")
    .Input("inputs: float")
    .Input("kernel: float")
    .Input("gate: float")
    .Output("outputs: float")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle inputs, kernel;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &inputs));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &kernel));
      c->set_output(0, c->MakeShape({c->Dim(inputs, 0), c->Dim(inputs, 1), c->Dim(kernel, 1)}));
      return Status();
    });

REGISTER_OP("MtlLayersHyperGridMatmulGrad")
    .Input("inputs: float")
    .Input("kernel: float")
    .Input("gate: float")
    .Input("output_grad: float")
    .Output("inputs_grad: float")
    .Output("kernel_grad: float")
    .Output("gate_grad: float")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(1));
      c->set_output(2, c->input(2));
      return Status();
    });

REGISTER_KERNEL_BUILDER(Name("MtlLayersHyperGridMatmul").Device(DEVICE_CPU), HyperGridMatmulOp);
REGISTER_KERNEL_BUILDER(Name("MtlLayersHyperGridMatmulGrad").Device(DEVICE_CPU),
                        HyperGridMatmulGradOp);

}  // namespace
}  // namespace mtl_layers
