// Compiled CPU kernels of the multiscale solver and the smoothing fields: the extension module
// otreg.native._kernels, built by the package build (setup.py); otreg/native/kernels.py holds
// its typed wrappers.
//
// Sparse kernels are CSR: row offsets, column indices int32, and per entry the cost
// C_ij = |x_i - y_j|^2 / 2 (float32) and the absorbed value exp(z_ij - max_j z_ij) (float32),
// with z_ij = h_j - C_ij / eps. Every function here sweeps rows independently, so that threads
// take rows (or chunks of rows) from a shared counter: no OpenMP, whose runtime would be a
// second one beside torch's.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

namespace {

// Runs body(0 .. tasks - 1) on `threads` threads. An exception thrown by a task (bad_alloc
// above all) stops the others from taking new tasks and is rethrown here, on the caller's
// thread, once all have joined: one escaping a std::thread would terminate the interpreter.
template <class Body>
void parallel_for(int64_t tasks, int threads, Body&& body) {
  std::atomic<int64_t> next(0);
  std::exception_ptr failure;
  std::mutex failure_lock;
  auto worker = [&]() {
    try {
      for (int64_t t; (t = next.fetch_add(1)) < tasks;) body(t);
    } catch (...) {
      std::lock_guard<std::mutex> guard(failure_lock);
      if (!failure) failure = std::current_exception();
      next = tasks;
    }
  };
  int64_t extra = std::min<int64_t>(threads, tasks) - 1;
  std::vector<std::thread> pool;
  try {
    for (int64_t k = 0; k < extra; ++k) pool.emplace_back(worker);
  } catch (...) {  // no thread to start (resources): the threads started and this one do all
  }
  worker();
  for (auto& t : pool) t.join();
  if (failure) std::rethrow_exception(failure);
}

// A growable array of trivially copyable values that, unlike std::vector, does not zero what
// it grows into: rows are written whole, then cut back to what they keep.
template <class T>
struct Buffer {
  T* data = nullptr;
  int64_t size = 0, capacity = 0;
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer(Buffer&& other) noexcept : data(other.data), size(other.size), capacity(other.capacity) {
    other.data = nullptr;
  }
  ~Buffer() { std::free(data); }
  T* extend(int64_t extra) {  // room for `extra` more values at the end; returns where
    if (size + extra > capacity) {
      capacity = std::max(2 * capacity, size + extra);
      T* grown = static_cast<T*>(std::realloc(data, capacity * sizeof(T)));
      if (grown == nullptr) throw std::bad_alloc();
      data = grown;
    }
    return data + size;
  }
};

// Kept entries of a contiguous run of rows, in row order.
template <class T>
struct Chunk {
  Buffer<int32_t> col;
  Buffer<T> cost, val;
};

template <class T>
struct Entries {
  std::vector<Chunk<T>> chunks;
  int64_t size() const {
    int64_t total = 0;
    for (const Chunk<T>& chunk : chunks) total += chunk.col.size;
    return total;
  }
};

// Boundaries of about `parts` runs of [0, n) of equal total `work`.
std::vector<int64_t> balanced_cuts(const std::vector<double>& work, int64_t parts) {
  double total = 0;
  for (double w : work) total += w;
  std::vector<int64_t> cuts{0};
  double step = total / std::max<int64_t>(parts, 1), acc = 0;
  for (int64_t i = 0; i < (int64_t)work.size(); ++i) {
    acc += work[i];
    if (acc >= step * cuts.size() && i + 1 < (int64_t)work.size()) cuts.push_back(i + 1);
  }
  cuts.push_back((int64_t)work.size());
  return cuts;
}

// The max of v[0 .. count-1] (-inf if empty), over 16 lanes so that it vectorises (a plain
// std::max loop does not, for the NaN rules).
template <class T>
inline T max_of(const T* v, int64_t count) {
  constexpr int kLanes = 16;
  T lanes[kLanes];
  for (int l = 0; l < kLanes; ++l) lanes[l] = -std::numeric_limits<T>::infinity();
  int64_t k = 0;
  for (; k + kLanes <= count; k += kLanes)
    for (int l = 0; l < kLanes; ++l) lanes[l] = lanes[l] > v[k + l] ? lanes[l] : v[k + l];
  T top = -std::numeric_limits<T>::infinity();
  for (int l = 0; l < kLanes; ++l) top = std::max(top, lanes[l]);
  for (; k < count; ++k) top = std::max(top, v[k]);
  return top;
}

// Append the entries of one row within `truncation` of its max z to `out`; z and cost hold
// the row's candidates, cols their columns. Returns the row max (-inf for a row without
// mass: it keeps nothing). kValues: also their values exp(z - max) (kernel_pair computes
// those only for the union of two truncations).
template <class T, bool kValues = true>
inline T keep_row(const T* z, const T* cost, const int32_t* cols, int64_t count, T truncation,
                  Chunk<T>& out, int64_t* kept) {
  T top = max_of(z, count);
  *kept = 0;
  if (!(top > -std::numeric_limits<T>::infinity())) return top;
  const T threshold = top - truncation;
  int32_t* out_col = out.col.extend(count);
  T* out_cost = out.cost.extend(count);
  T* out_val = kValues ? out.val.extend(count) : nullptr;
  int64_t n = 0;
  for (int64_t k = 0; k < count; ++k) {  // branch-free compaction
    out_col[n] = cols[k];
    out_cost[n] = cost[k];
    if constexpr (kValues) out_val[n] = z[k] - top;
    n += z[k] >= threshold;
  }
  if constexpr (kValues) {
    for (int64_t k = 0; k < n; ++k) out_val[k] = std::exp(out_val[k]);
    out.val.size += n;
  }
  out.col.size += n, out.cost.size += n;
  *kept = n;
  return top;
}

// A binary tree over runs of the columns y (given transposed, (dim, m)), sorted along a
// space-filling curve so
// that runs are compact, with for each node the bounding box of its columns and an affine
// bound of their h: h_j <= offset + slope . (y_j - center). The slope is the least-squares fit
// of h over the node (any slope gives a valid bound; a good one, a tight bound): within a
// node, h = log b + g / eps is close to affine, and a bound by max h alone was off by ~12 (in
// units of z) on nodes of 16 columns at blur 1 % (estimated: |grad g| L / eps).
template <class T>
struct ColumnTree {
  static constexpr int64_t kLeaf = 32;
  struct Node {
    int64_t lo, hi, left;  // columns lo .. hi - 1; children left, left + 1 (-1: a leaf)
  };
  int64_t m, dim;
  const T* y;  // (dim, m): coordinate d of column j at y[d * m + j]
  const T* h;
  std::vector<Node> nodes;
  std::vector<double> low, high, center, slope, offset;  // dim, dim, dim, dim, 1 per node
  std::vector<int64_t> leaf_of;  // leaf_of[lo]: the leaf whose columns start at lo

  ColumnTree(const T* y_t, const T* h_, int64_t m_, int64_t dim_) : m(m_), dim(dim_), y(y_t), h(h_) {
    nodes.push_back({0, m, -1});
    for (size_t k = 0; k < nodes.size(); ++k) {  // top-down by halving
      if (nodes[k].hi - nodes[k].lo <= kLeaf) continue;
      int64_t lo = nodes[k].lo, hi = nodes[k].hi, mid = (lo + hi) / 2;
      nodes[k].left = nodes.size();
      nodes.push_back({lo, mid, -1});
      nodes.push_back({mid, hi, -1});
    }
    size_t count = nodes.size();
    leaf_of.assign(m + 1, -1);
    for (size_t k = 0; k < count; ++k)
      if (nodes[k].left < 0) leaf_of[nodes[k].lo] = k;
    low.resize(dim * count), high.resize(dim * count), center.resize(dim * count);
    slope.resize(dim * count), offset.resize(count);
    for (size_t k = 0; k < count; ++k) fit(k);
  }

  void fit(size_t k) {
    const Node& node = nodes[k];
    double* lo = &low[dim * k];
    double* hi = &high[dim * k];
    double* c = &center[dim * k];
    double* w = &slope[dim * k];
    std::vector<double> cov(dim * dim, 0.0), cross(dim, 0.0);
    double mean_h = 0;
    int64_t finite = 0;
    for (int64_t d = 0; d < dim; ++d) lo[d] = INFINITY, hi[d] = -INFINITY, c[d] = 0, w[d] = 0;
    for (int64_t j = node.lo; j < node.hi; ++j) {
      for (int64_t d = 0; d < dim; ++d)
        lo[d] = std::min<double>(lo[d], y[d * m + j]), hi[d] = std::max<double>(hi[d], y[d * m + j]);
      if (!std::isfinite((double)h[j])) continue;  // no mass: never kept
      ++finite;
      mean_h += h[j];
      for (int64_t d = 0; d < dim; ++d) c[d] += y[d * m + j];
    }
    offset[k] = -INFINITY;
    if (finite == 0) return;
    mean_h /= finite;
    for (int64_t d = 0; d < dim; ++d) c[d] /= finite;
    for (int64_t j = node.lo; j < node.hi; ++j) {
      if (!std::isfinite((double)h[j])) continue;
      for (int64_t d = 0; d < dim; ++d) {
        double u = y[d * m + j] - c[d];
        cross[d] += (h[j] - mean_h) * u;
        for (int64_t e = 0; e < dim; ++e) cov[dim * d + e] += u * (y[e * m + j] - c[e]);
      }
    }
    double trace = 0;
    for (int64_t d = 0; d < dim; ++d) trace += cov[dim * d + d];
    for (int64_t d = 0; d < dim; ++d) cov[dim * d + d] += 1e-9 * trace + 1e-300;  // flat nodes
    solve(cov, cross, w);
    for (int64_t j = node.lo; j < node.hi; ++j) {
      if (!std::isfinite((double)h[j])) continue;
      double v = h[j];
      for (int64_t d = 0; d < dim; ++d) v -= w[d] * (y[d * m + j] - c[d]);
      offset[k] = std::max(offset[k], v);
    }
  }

  // Solves a x = b (a: dim x dim, symmetric positive definite) by Gaussian elimination.
  void solve(std::vector<double>& a, std::vector<double>& b, double* x) const {
    for (int64_t p = 0; p < dim; ++p) {
      for (int64_t r = p + 1; r < dim; ++r) {
        double factor = a[dim * r + p] / a[dim * p + p];
        for (int64_t e = p; e < dim; ++e) a[dim * r + e] -= factor * a[dim * p + e];
        b[r] -= factor * b[p];
      }
    }
    for (int64_t p = dim - 1; p >= 0; --p) {
      double v = b[p];
      for (int64_t e = p + 1; e < dim; ++e) v -= a[dim * p + e] * x[e];
      x[p] = std::isfinite(v / a[dim * p + p]) ? v / a[dim * p + p] : 0.0;
    }
  }

  // An upper bound of z_j = h_j - |x - y_j|^2 * half_inv_eps over the columns of node k: the
  // affine bound of h minus the cost, maximised over the node's box (separable per axis).
  double bound(int64_t k, const T* x, double half_inv_eps) const {
    return box_bound(k, x, x, half_inv_eps);
  }

  // The same bound for every x of the box [x_lo, x_hi]: the cost from y to the box's nearest
  // point, per axis; the best y then lies past the box's side that the slope points to.
  double box_bound(int64_t k, const T* x_lo, const T* x_hi, double half_inv_eps) const {
    const double* lo = &low[dim * k];
    const double* hi = &high[dim * k];
    const double* c = &center[dim * k];
    const double* w = &slope[dim * k];
    const double eps = 0.5 / half_inv_eps;
    double value = offset[k];
    for (int64_t d = 0; d < dim; ++d) {
      double best = std::clamp(w[d] >= 0 ? x_hi[d] + w[d] * eps : x_lo[d] + w[d] * eps, lo[d], hi[d]);
      double gap = std::max({(double)x_lo[d] - best, best - (double)x_hi[d], 0.0});
      value += w[d] * (best - c[d]) - gap * gap * half_inv_eps;
    }
    return value;
  }
};

// Visit the leaves of `tree` whose `bound(node)` is >= (the largest z found so far, from
// `start`) - truncation, the more promising ones first: `leaf(lo, hi)` takes a leaf's columns
// and returns their largest z. Returns the largest z found.
template <class T, class Bound, class Leaf>
double search(const ColumnTree<T>& tree, Bound&& bound, double truncation, double start,
              std::vector<std::pair<double, int64_t>>& stack, Leaf&& leaf) {
  double best = start;
  stack.assign(1, {INFINITY, 0});
  while (!stack.empty()) {
    auto [upper, k] = stack.back();
    stack.pop_back();
    if (upper < best - truncation) continue;
    const auto& node = tree.nodes[k];
    if (node.left < 0) {
      best = std::max<double>(best, leaf(node.lo, node.hi));
      continue;
    }
    double near = bound(node.left), far = bound(node.left + 1);
    int64_t near_k = node.left, far_k = node.left + 1;
    if (near < far) std::swap(near, far), std::swap(near_k, far_k);
    if (far >= best - truncation) stack.push_back({far, far_k});
    if (near >= best - truncation) stack.push_back({near, near_k});  // popped first
  }
  return best;
}

// The truncated kernel between rows x (n, dim) and columns y_t (dim, m, i.e. y transposed):
// per row, the columns with z_ij = h_j - |x_i - y_j|^2 / (2 eps) >= max_j z_ij - truncation,
// ALL of them (branch and bound over a tree of y: no column is missed, however the potentials
// moved). Rows and columns sorted along a space-filling curve make it fast: rows are taken in
// blocks of consecutive (nearby) rows that share one search for candidate leaves, from a
// guess `lse` (n,) of each row's log sum_j exp z_ij (from the row potential: -f / eps); each
// row then evaluates the leaves its own bound keeps. A guess above a row's max is caught (the
// max found is then below it) and that row searched again on its own. Writes row_max (n,) and
// row_count (n,); the entries wait in the returned handle for take.
template <class T, bool kValues = true>
std::unique_ptr<Entries<T>> truncate(int64_t n, const T* x, int64_t m, const T* y_t, int64_t dim, const T* h,
               const T* lse, T inv_eps, T truncation, T* row_max, int64_t* row_count, int threads) {
  ColumnTree<T> tree(y_t, h, m, dim);
  const double half_inv_eps = 0.5 * inv_eps;
  // log sum exp - max <= log(columns of weight): the guess of the max lies this far below the
  // guess of the log-sum-exp (a row of about e^4 ~ 50 columns of equal z)
  constexpr double kLseAboveMax = 4.0;
  constexpr int64_t kBlock = 8, kBlocksPerTask = 32;
  int64_t blocks = (n + kBlock - 1) / kBlock;
  int64_t tasks = (blocks + kBlocksPerTask - 1) / kBlocksPerTask;
  auto entries = std::make_unique<Entries<T>>(Entries<T>{std::vector<Chunk<T>>(tasks)});
  parallel_for(tasks, threads, [&](int64_t task) {
    Chunk<T>& out = entries->chunks[task];
    std::vector<std::pair<double, int64_t>> stack;
    std::vector<int64_t> leaves;  // the block's candidate leaves (node indices), by column
    std::vector<double> bounds;
    std::vector<T> z(m), cost(m), x_lo(dim), x_hi(dim);
    std::vector<int32_t> cols(m);
    // z and cost of row xi for the columns lo..hi-1: those with z >= floor are appended at
    // `at` (branch free); returns their max z and how many
    std::vector<T> scratch_cost(m), scratch_z(m);
    auto evaluate = [&](const T* xi, int64_t lo, int64_t hi, int64_t at, double floor) {
      const int64_t count = hi - lo;
      T* c = scratch_cost.data();
      T* v = scratch_z.data();
      for (int64_t k = 0; k < count; ++k) c[k] = T(0);
      for (int64_t d = 0; d < dim; ++d) {
        const T xd = xi[d];
        const T* yd = y_t + d * m + lo;
        for (int64_t k = 0; k < count; ++k) c[k] += (xd - yd[k]) * (xd - yd[k]);
      }
      for (int64_t k = 0; k < count; ++k) {
        c[k] *= T(0.5);
        v[k] = h[lo + k] - c[k] * inv_eps;
      }
      const T below = (T)floor;
      int64_t n = 0;
      for (int64_t k = 0; k < count; ++k) {
        cols[at + n] = (int32_t)(lo + k), cost[at + n] = c[k], z[at + n] = v[k];
        n += v[k] >= below;
      }
      return std::make_pair((double)max_of(v, count), n);
    };
    // every leaf of row xi within `truncation` of the best z, found from `floor` up
    auto search_row = [&](const T* xi, double floor) {
      int64_t count = 0;
      double best = floor;
      auto leaf = [&](int64_t lo, int64_t hi) {
        auto [top, kept] = evaluate(xi, lo, hi, count, best - truncation);
        count += kept;
        best = std::max(best, top);
        return top;
      };
      search(tree, [&](int64_t k) { return tree.bound(k, xi, half_inv_eps); }, (double)truncation,
             floor, stack, leaf);
      return count;
    };
    for (int64_t block = task * kBlocksPerTask; block < std::min(blocks, (task + 1) * kBlocksPerTask); ++block) {
      int64_t first = block * kBlock, last = std::min(n, first + kBlock);
      // 1. the leaves that may hold an entry of some row of the block (by the guesses)
      double floor = INFINITY;
      std::fill(x_lo.begin(), x_lo.end(), std::numeric_limits<T>::infinity());
      std::fill(x_hi.begin(), x_hi.end(), -std::numeric_limits<T>::infinity());
      for (int64_t i = first; i < last; ++i) {
        for (int64_t d = 0; d < dim; ++d)
          x_lo[d] = std::min(x_lo[d], x[dim * i + d]), x_hi[d] = std::max(x_hi[d], x[dim * i + d]);
        floor = std::min(floor, (double)lse[i] - kLseAboveMax);
      }
      leaves.clear();
      if (std::isfinite(floor)) {
        auto collect = [&](int64_t lo, int64_t) {
          leaves.push_back(tree.leaf_of[lo]);
          return -std::numeric_limits<double>::infinity();  // keeps the floor as it is
        };
        search(tree, [&](int64_t k) { return tree.box_bound(k, x_lo.data(), x_hi.data(), half_inv_eps); },
               (double)truncation, floor, stack, collect);
      }
      std::sort(leaves.begin(), leaves.end(),
                [&](int64_t a, int64_t b) { return tree.nodes[a].lo < tree.nodes[b].lo; });
      // 2. each row: its own bound of every candidate leaf; the leaves within reach of its
      // guess are evaluated, adjacent ones as one run
      for (int64_t i = first; i < last; ++i) {
        const T* xi = x + dim * i;
        double guess = (double)lse[i] - kLseAboveMax, best = -INFINITY;
        int64_t count = 0;
        if (std::isfinite(guess)) {
          bounds.resize(leaves.size());
          for (size_t l = 0; l < leaves.size(); ++l) bounds[l] = tree.bound(leaves[l], xi, half_inv_eps);
          for (size_t l = 0; l < leaves.size();) {
            if (bounds[l] < guess - truncation) {
              ++l;
              continue;
            }
            int64_t lo = tree.nodes[leaves[l]].lo, hi = tree.nodes[leaves[l]].hi;
            for (++l; l < leaves.size() && bounds[l] >= guess - truncation && tree.nodes[leaves[l]].lo == hi; ++l)
              hi = tree.nodes[leaves[l]].hi;
            auto [top, kept] = evaluate(xi, lo, hi, count, guess - truncation);
            best = std::max(best, top);
            count += kept;
          }
        }
        // every column left out has z < guess - truncation: if the best is >= guess, those
        // are neither the max nor kept; else search this row on its own
        if (!(best >= guess)) count = search_row(xi, best);
        row_max[i] = keep_row<T, kValues>(z.data(), cost.data(), cols.data(), count, truncation, out,
                                          &row_count[i]);
      }
    }
  });
  return entries;
}

// The entries of an existing kernel (crow, col, cost) within `truncation` of their row's max
// of z = h[col] - cost * inv_eps (an infinite truncation keeps them all: re-absorbs h).
// Same outputs as expand.
template <class T>
std::unique_ptr<Entries<T>> select(int64_t n, const int64_t* crow, const int32_t* col, const T* cost, const T* h,
             T inv_eps, T truncation, T* row_max, int64_t* row_count, int threads) {
  std::vector<double> work(n);
  for (int64_t i = 0; i < n; ++i) work[i] = crow[i + 1] - crow[i] + 1;
  std::vector<int64_t> cuts = balanced_cuts(work, 16 * std::max(threads, 1));
  auto entries = std::make_unique<Entries<T>>(Entries<T>{std::vector<Chunk<T>>(cuts.size() - 1)});
  parallel_for((int64_t)cuts.size() - 1, threads, [&](int64_t c) {
    Chunk<T>& out = entries->chunks[c];
    std::vector<T> z;
    for (int64_t i = cuts[c]; i < cuts[c + 1]; ++i) {
      int64_t start = crow[i], count = crow[i + 1] - crow[i];
      z.resize(count);
      for (int64_t k = 0; k < count; ++k) z[k] = h[col[start + k]] - cost[start + k] * inv_eps;
      row_max[i] = keep_row(z.data(), cost + start, col + start, count, truncation, out,
                            &row_count[i]);
    }
  });
  return entries;
}

// A CSR matrix of costs.
template <class T>
struct Sparse {
  std::vector<int64_t> crow;
  std::vector<int32_t> col;
  std::vector<T> cost;
};

// One row of a sparse matrix: its columns and costs.
template <class T>
struct Row {
  int32_t* col;
  T* cost;
  int64_t count;
};

// The rows of a handle of truncate where they lie, in its chunks (a copy of 20M entries took
// 0.1 s, measured); the handle is freed with them.
template <class T>
struct Rows {
  std::unique_ptr<Entries<T>> entries;
  std::vector<Row<T>> rows;
  Row<T> operator()(int64_t i) const { return rows[i]; }
};

template <class T>
Rows<T> rows_of(std::unique_ptr<Entries<T>> handle, const int64_t* row_count, int64_t n) {
  Rows<T> out{std::move(handle), std::vector<Row<T>>(n)};
  std::vector<Chunk<T>>& chunks = out.entries->chunks;
  size_t c = 0;
  int64_t at = 0;
  for (int64_t i = 0; i < n; ++i) {  // the chunks hold the rows in order, each row whole
    while (c < chunks.size() && at == chunks[c].col.size) ++c, at = 0;
    if (c == chunks.size()) {  // rows without entries at the end
      out.rows[i] = {nullptr, nullptr, 0};
      continue;
    }
    out.rows[i] = {chunks[c].col.data + at, chunks[c].cost.data + at, row_count[i]};
    at += row_count[i];
  }
  return out;
}

// The transpose (m x n) of the n x m matrix whose row i is row(i), columns sorted in each
// row, into t_crow (m + 1), t_col, t_cost; threads take runs of rows, each with its own
// column counts.
template <class T, class Index, class RowOf>
void transpose_into(const RowOf& row, int64_t n, int64_t m, Index* t_crow, int32_t* t_col, T* t_cost,
                    int threads) {
  int parts = std::max(threads, 1);
  std::vector<std::vector<int64_t>> next(parts, std::vector<int64_t>(m + 1, 0));
  parallel_for(parts, threads, [&](int64_t p) {
    for (int64_t i = n * p / parts; i < n * (p + 1) / parts; ++i) {
      Row<T> r = row(i);
      for (int64_t k = 0; k < r.count; ++k) ++next[p][r.col[k]];
    }
  });
  int64_t at = 0;
  for (int64_t j = 0; j < m; ++j) {  // part p's entries of column j follow those of parts < p
    t_crow[j] = (Index)at;
    for (int p = 0; p < parts; ++p) std::swap(next[p][j], at), at += next[p][j];
  }
  t_crow[m] = (Index)at;
  parallel_for(parts, threads, [&](int64_t p) {
    for (int64_t i = n * p / parts; i < n * (p + 1) / parts; ++i) {
      Row<T> r = row(i);
      for (int64_t k = 0; k < r.count; ++k) {
        int64_t to = next[p][r.col[k]]++;
        t_col[to] = (int32_t)i, t_cost[to] = r.cost[k];
      }
    }
  });
}

// The values of the entries (crow, col, cost) of n rows for h: val = exp(z - row max),
// z = h[col] - cost * inv_eps, and the row maxima.
template <class T, class Index>
void absorb(const Index* crow, const int32_t* col, const T* cost, int64_t n, const T* h, T inv_eps, T* val,
            T* row_max, int threads) {
  int64_t tasks = std::max<int64_t>(1, std::min<int64_t>(n, 64 * std::max(threads, 1)));
  parallel_for(tasks, threads, [&](int64_t task) {
    for (int64_t i = n * task / tasks; i < n * (task + 1) / tasks; ++i) {
      T* z = val + crow[i];
      int64_t count = crow[i + 1] - crow[i];
      for (int64_t k = 0; k < count; ++k) z[k] = h[col[crow[i] + k]] - cost[crow[i] + k] * inv_eps;
      T top = max_of(z, count);
      for (int64_t k = 0; k < count; ++k) z[k] = std::exp(z[k] - top);
      row_max[i] = top;
    }
  });
}

// The kernels x -> y and y -> x on ONE support: U = R + C^T (the union), where R (n x m) and
// C (m x n) are the row truncations of truncate. With two different supports the f- and
// g-updates use two different matrices: no longer Sinkhorn, and on vessel-like trees the
// iterations diverged (measured); on U both use one matrix. kernel_pair finds R and C and
// counts U's rows; take_pair writes U and its transpose straight into the caller's arrays
// (a copy of kernels of 20M entries took 0.2-0.7 s, mostly fresh pages, measured).
template <class T>
struct Pair {
  int64_t n, m;
  Rows<T> r;       // R, in place in truncate's chunks
  Sparse<T> ct;    // C^T
  std::vector<int64_t> u_crow;
  const T *h_y, *h_x;
  T inv_eps;
  int threads;
};

// Row i of R merged with that of C^T, in column order: emit(column, cost) per entry of U.
template <class T, class Emit>
void merge_row(const Row<T>& r, const Sparse<T>& ct, int64_t i, Emit&& emit) {
  int64_t a = 0, b = ct.crow[i], b_end = ct.crow[i + 1];
  while (a < r.count || b < b_end) {
    int32_t ja = a < r.count ? r.col[a] : std::numeric_limits<int32_t>::max();
    int32_t jb = b < b_end ? ct.col[b] : std::numeric_limits<int32_t>::max();
    if (ja <= jb) {
      emit(ja, r.cost[a++]);
      b += ja == jb;
    } else {
      emit(jb, ct.cost[b++]);
    }
  }
}

// rows_only: U = R alone (its transpose for y -> x): one support still, without the columns'
// own search (to_points matches points to clusters: the clusters' rows were 60 % of the time).
template <class T>
std::unique_ptr<Pair<T>> kernel_pair(int64_t n, const T* x, const T* x_t, int64_t m, const T* y, const T* y_t,
                  int64_t dim, const T* h_y, const T* h_x, const T* lse_x, const T* lse_y,
                  T inv_eps, T truncation, bool rows_only, int64_t* nnz, int threads) {
  std::vector<T> row_max(std::max(n, m));
  std::vector<int64_t> counts(std::max(n, m));
  auto pair = std::make_unique<Pair<T>>(Pair<T>{n, m, {}, {}, {}, h_y, h_x, inv_eps, threads});
  pair->r = rows_of<T>(truncate<T, false>(n, x, m, y_t, dim, h_y, lse_x, inv_eps, truncation, row_max.data(),
                                          counts.data(), threads),
                       counts.data(), n);
  if (rows_only) {
    pair->ct.crow.assign(n + 1, 0);
  } else {
    Rows<T> c = rows_of<T>(truncate<T, false>(m, y, n, x_t, dim, h_x, lse_y, inv_eps, truncation,
                                              row_max.data(), counts.data(), threads),
                           counts.data(), m);
    Sparse<T>& ct = pair->ct;  // sorted rows
    ct.crow.resize(n + 1);
    ct.col.resize(c.entries->size()), ct.cost.resize(c.entries->size());
    transpose_into<T>(c, m, n, ct.crow.data(), ct.col.data(), ct.cost.data(), threads);
  }
  int64_t tasks = std::max<int64_t>(1, std::min<int64_t>(n, 64 * std::max(threads, 1)));
  // truncate's rows come sorted by column, but for the rows it searched on their own
  parallel_for(tasks, threads, [&](int64_t task) {
    std::vector<std::pair<int32_t, T>> sorted;
    for (int64_t i = n * task / tasks; i < n * (task + 1) / tasks; ++i) {
      Row<T> row = pair->r(i);
      if (std::is_sorted(row.col, row.col + row.count)) continue;
      sorted.clear();
      for (int64_t k = 0; k < row.count; ++k) sorted.emplace_back(row.col[k], row.cost[k]);
      std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
      for (int64_t k = 0; k < row.count; ++k) row.col[k] = sorted[k].first, row.cost[k] = sorted[k].second;
    }
  });
  std::vector<int64_t>& u_crow = pair->u_crow;
  u_crow.assign(n + 1, 0);
  parallel_for(tasks, threads, [&](int64_t task) {
    for (int64_t i = n * task / tasks; i < n * (task + 1) / tasks; ++i)
      merge_row(pair->r(i), pair->ct, i, [&](int32_t, T) { ++u_crow[i + 1]; });
  });
  for (int64_t i = 0; i < n; ++i) u_crow[i + 1] += u_crow[i];
  *nnz = u_crow[n];
  return pair;
}

// Write a kernel_pair's kernels (x -> y, then y -> x; each crow (rows + 1), col, cost, val
// (nnz), row max (rows)) and free what the pair held.
template <class T>
void take_pair(Pair<T>* pair, int32_t* crow_xy, int32_t* col_xy, T* cost_xy, T* val_xy,
               T* max_xy, int32_t* crow_yx, int32_t* col_yx, T* cost_yx, T* val_yx, T* max_yx) {
  const int64_t n = pair->n, m = pair->m;
  const int threads = pair->threads;
  const std::vector<int64_t>& u_crow = pair->u_crow;
  int64_t tasks = std::max<int64_t>(1, std::min<int64_t>(n, 64 * std::max(threads, 1)));
  parallel_for(tasks, threads, [&](int64_t task) {
    for (int64_t i = n * task / tasks; i < n * (task + 1) / tasks; ++i) {
      int64_t at = u_crow[i];
      crow_xy[i] = (int32_t)at;
      merge_row(pair->r(i), pair->ct, i, [&](int32_t j, T c) { col_xy[at] = j, cost_xy[at++] = c; });
    }
  });
  crow_xy[n] = (int32_t)u_crow[n];
  pair->r = Rows<T>(), pair->ct = Sparse<T>();  // free what is merged
  auto u_row = [&](int64_t i) { return Row<T>{col_xy + crow_xy[i], cost_xy + crow_xy[i], crow_xy[i + 1] - crow_xy[i]}; };
  transpose_into<T>(u_row, n, m, crow_yx, col_yx, cost_yx, threads);
  absorb(crow_xy, col_xy, cost_xy, n, pair->h_y, pair->inv_eps, val_xy, max_xy, threads);
  absorb(crow_yx, col_yx, cost_yx, m, pair->h_x, pair->inv_eps, val_yx, max_yx, threads);
}

// The largest spread max - min of v over the columns of a row of the matrix (crow, col): how
// much a change v of the column potentials can have reordered a row's entries (non-finite v
// count as 0).
template <class T>
T row_spread(int64_t n, const int32_t* crow, const int32_t* col, const T* v, int threads) {
  int64_t tasks = std::max<int64_t>(1, std::min<int64_t>(n, 64 * std::max(threads, 1)));
  std::vector<T> spread(tasks, T(0));
  parallel_for(tasks, threads, [&](int64_t task) {
    for (int64_t i = n * task / tasks; i < n * (task + 1) / tasks; ++i) {
      T lo = std::numeric_limits<T>::infinity(), hi = -lo;
      for (int64_t k = crow[i]; k < crow[i + 1]; ++k) {
        T value = std::isfinite(v[col[k]]) ? v[col[k]] : T(0);
        lo = std::min(lo, value), hi = std::max(hi, value);
      }
      if (hi >= lo) spread[task] = std::max(spread[task], hi - lo);
    }
  });
  return *std::max_element(spread.begin(), spread.end());
}

// Copy the entries into col, cost, val (each of the entries' total length), in row order,
// and free them.
template <class T>
void take(Entries<T>* entries, int32_t* col, T* cost, T* val) {
  int64_t at = 0;
  for (Chunk<T>& chunk : entries->chunks) {
    std::copy(chunk.col.data, chunk.col.data + chunk.col.size, col + at);
    std::copy(chunk.cost.data, chunk.cost.data + chunk.cost.size, cost + at);
    std::copy(chunk.val.data, chunk.val.data + chunk.val.size, val + at);
    at += chunk.col.size;
  }
  entries->chunks.clear();
}

// out (m,) = K^T v for the CSR matrix (crow, col, val) of n rows: column sums, in double.
template <class V>
void transpose_matvec(int64_t n, const int64_t* crow, const int32_t* col, const V* val, const double* v,
                      int64_t m, double* out, int threads) {
  int parts = std::max(threads, 1);
  std::vector<std::vector<double>> partial(parts, std::vector<double>(m, 0.0));
  parallel_for(parts, threads, [&](int64_t p) {
    std::vector<double>& acc = partial[p];
    for (int64_t i = n * p / parts; i < n * (p + 1) / parts; ++i)
      for (int64_t k = crow[i]; k < crow[i + 1]; ++k) acc[col[k]] += val[k] * v[i];
  });
  for (int64_t j = 0; j < m; ++j) {
    double s = 0;
    for (int p = 0; p < parts; ++p) s += partial[p][j];
    out[j] = s;
  }
}

// Exact c-transform: out_i = min_j |x_i - y_j|^2 / 2 - g_j over ALL j (x (n, dim), y_t
// (dim, m), double; y sorted along a space-filling curve): minus the row max of
// z_ij = g_j - C_ij, found by the branch and bound of truncate.
void c_transform(int64_t n, const double* x, int64_t m, const double* y_t, int64_t dim,
                 const double* g, double* out, int threads) {
  ColumnTree<double> tree(y_t, g, m, dim);
  int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(n, 64 * std::max(threads, 1)));
  parallel_for(blocks, threads, [&](int64_t block) {
    std::vector<std::pair<double, int64_t>> stack;
    int64_t guess = 0;
    for (int64_t i = n * block / blocks; i < n * (block + 1) / blocks; ++i) {
      const double* xi = x + dim * i;
      auto z = [&](int64_t j) {
        double sq = 0;
        for (int64_t d = 0; d < dim; ++d) sq += (xi[d] - y_t[d * m + j]) * (xi[d] - y_t[d * m + j]);
        return g[j] - sq / 2;
      };
      auto leaf = [&](int64_t lo, int64_t hi) {
        double top = -INFINITY;
        for (int64_t j = lo; j < hi; ++j)
          if (z(j) > top) top = z(j), guess = j;
        return top;
      };
      out[i] = -search(tree, [&](int64_t k) { return tree.bound(k, xi, 0.5); }, 0.0, z(guess),
                       stack, leaf);
    }
  });
}

// Cost of the plan P~_ij = a_i b_j exp((f_i + g_j - C_ij) / eps) on the entries (crow, col),
// rounded onto the marginals a (n,), b (m,) exactly (Altschuler, Weed & Rigollet 2017): rows
// scaled to at most a, columns to at most b, the missing mass added as the rank-one plan
// err_a err_b^T / |err_a|_1. Any plan with these marginals costs at least the exact OT, so
// this is an upper bound on it. C_ij = |x_i - y_j|^2 / 2, all in double.
double rounded_plan_cost(int64_t n, const int64_t* crow, const int32_t* col, const double* x,
                         int64_t m, const double* y, int64_t dim, const double* a, const double* b,
                         const double* f, const double* g, double eps, int threads) {
  auto cost = [&](int64_t i, int64_t j) {
    double sq = 0;
    for (int64_t d = 0; d < dim; ++d) sq += (x[dim * i + d] - y[dim * j + d]) * (x[dim * i + d] - y[dim * j + d]);
    return sq / 2;
  };
  int64_t nnz = crow[n];
  // The plan's entries in float, relative to their row's largest (P_ij = scale_i plan_ij, the
  // scale in double: no float overflow for potentials far from converged): any nonnegative
  // entries rounded onto the marginals make a plan, and float halves the memory and the time
  // of this pass (0.3 s for 22M entries in double, measured). row_factor_i = alpha_i scale_i.
  std::vector<float> plan(nnz);
  std::vector<double> row_factor(n), beta(m), log_b(m);
  for (int64_t j = 0; j < m; ++j) log_b[j] = std::log(b[j]) + g[j] / eps;
  int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(n, 64 * std::max(threads, 1)));
  parallel_for(blocks, threads, [&](int64_t block) {
    std::vector<double> z;
    for (int64_t i = n * block / blocks; i < n * (block + 1) / blocks; ++i) {
      const double log_a = std::log(a[i]) + f[i] / eps;
      z.resize(crow[i + 1] - crow[i]);
      double top = -std::numeric_limits<double>::infinity();
      for (int64_t k = crow[i]; k < crow[i + 1]; ++k) {
        z[k - crow[i]] = log_a + log_b[col[k]] - cost(i, col[k]) / eps;
        top = std::max(top, z[k - crow[i]]);
      }
      double rows = 0;
      for (int64_t k = crow[i]; k < crow[i + 1]; ++k) {
        plan[k] = std::exp((float)(z[k - crow[i]] - top));
        rows += plan[k];
      }
      const double scale = std::isfinite(top) ? std::exp(top) : 0.0;
      rows *= scale;
      row_factor[i] = (rows > a[i] ? a[i] / rows : 1.0) * scale;
    }
  });
  std::vector<double> cols(m);  // column sums of diag(alpha) P, then of diag(alpha) P diag(beta)
  transpose_matvec(n, crow, col, plan.data(), row_factor.data(), m, cols.data(), threads);
  for (int64_t j = 0; j < m; ++j) beta[j] = cols[j] > b[j] ? b[j] / cols[j] : 1.0, cols[j] *= beta[j];
  std::vector<double> err_a(n), scaled_cost(n);
  parallel_for(blocks, threads, [&](int64_t block) {
    for (int64_t i = n * block / blocks; i < n * (block + 1) / blocks; ++i) {
      double rows = 0, c = 0;
      for (int64_t k = crow[i]; k < crow[i + 1]; ++k) {
        double q = row_factor[i] * plan[k] * beta[col[k]];
        rows += q;
        c += q * cost(i, col[k]);
      }
      err_a[i] = std::max(a[i] - rows, 0.0);
      scaled_cost[i] = c;
    }
  });
  double total = 0, mass = 0;
  for (int64_t i = 0; i < n; ++i) total += scaled_cost[i], mass += err_a[i];
  if (mass <= 0) return total;
  // sum_ij err_a_i err_b_j C_ij / mass, by moments: no n x m sum
  double sum_b = 0, sq_a = 0, sq_b = 0;
  std::vector<double> mean_a(dim, 0.0), mean_b(dim, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t d = 0; d < dim; ++d)
      sq_a += err_a[i] * x[dim * i + d] * x[dim * i + d] / 2, mean_a[d] += err_a[i] * x[dim * i + d];
  for (int64_t j = 0; j < m; ++j) {
    double e = std::max(b[j] - cols[j], 0.0);
    sum_b += e;
    for (int64_t d = 0; d < dim; ++d)
      sq_b += e * y[dim * j + d] * y[dim * j + d] / 2, mean_b[d] += e * y[dim * j + d];
  }
  double cross = 0;
  for (int64_t d = 0; d < dim; ++d) cross += mean_a[d] * mean_b[d];
  return total + (sq_a * sum_b + mass * sq_b - cross) / mass;
}


// Trilinear interpolation on a regular grid, with the semantics of torch's grid_sample
// (align_corners=True, padding_mode="border") that the SVF fields used before (and use without
// the extension): each fractional node index is clamped to [0, size - 1] per axis, then
// interpolated between its cell's 8 nodes. A NaN index lands on the last node, as it does
// there (std::min(hi, std::max(NaN, 0)) is hi).
struct Grid {
  int64_t size[3], channels;
  int64_t stride[3];  // elements between neighbouring nodes along each axis (C-contiguous)
  Grid(int64_t x, int64_t y, int64_t z, int64_t c) : size{x, y, z}, channels(c), stride{y * z * c, z * c, c} {}
};

// The cell of a fractional index along one axis: its first node, the offset (in elements) to
// the second (0 on an axis of one node) and the fraction of the way to it.
inline void axis_cell(double index, int64_t size, int64_t stride, int64_t* base, int64_t* step,
                      double* frac) {
  index = std::min<double>((double)(size - 1), std::max(index, 0.0));
  int64_t lo = std::min<int64_t>((int64_t)index, std::max<int64_t>(size - 2, 0));
  *base = lo * stride;
  *step = size > 1 ? stride : 0;
  *frac = index - (double)lo;
}

// out[c] = the trilinear value of channel c at (x, y, z) (fractional node indices). kChannels:
// the grid's channels if known at compile time (then the loops unroll), else 0.
template <class T, int kChannels = 0>
inline void trilinear_at(const T* values, const Grid& grid, double x, double y, double z, T* out) {
  int64_t bx, by, bz, sx, sy, sz;
  double fx, fy, fz;
  axis_cell(x, grid.size[0], grid.stride[0], &bx, &sx, &fx);
  axis_cell(y, grid.size[1], grid.stride[1], &by, &sy, &fy);
  axis_cell(z, grid.size[2], grid.stride[2], &bz, &sz, &fz);
  const T* v = values + bx + by + bz;
  const double w[8] = {(1 - fx) * (1 - fy) * (1 - fz), (1 - fx) * (1 - fy) * fz,
                       (1 - fx) * fy * (1 - fz),       (1 - fx) * fy * fz,
                       fx * (1 - fy) * (1 - fz),       fx * (1 - fy) * fz,
                       fx * fy * (1 - fz),             fx * fy * fz};
  const int64_t offset[8] = {0, sz, sy, sy + sz, sx, sx + sz, sx + sy, sx + sy + sz};
  const int64_t channels = kChannels > 0 ? kChannels : grid.channels;
  for (int64_t c = 0; c < channels; ++c) {
    double s = 0;
    for (int k = 0; k < 8; ++k) s += w[k] * (double)v[offset[k] + c];
    out[c] = (T)s;
  }
}

// Blocks of about kBlockItems points or nodes, at most 64 per thread: a small call stays on
// one thread (starting threads costs more than it saves).
int64_t item_blocks(int64_t n, int threads) {
  constexpr int64_t kBlockItems = 4096;
  return std::max<int64_t>(1, std::min<int64_t>((n + kBlockItems - 1) / kBlockItems,
                                                64 * std::max(threads, 1)));
}

// out (n, channels): the values (X, Y, Z, channels) at the fractional node indices (n, 3).
template <class T, int kChannels = 0>
void trilinear(const T* values, const Grid& grid, int64_t n, const double* index, T* out,
               int threads) {
  if constexpr (kChannels == 0) {  // the usual channel counts (displacements, + confidence)
    if (grid.channels == 3) return trilinear<T, 3>(values, grid, n, index, out, threads);
    if (grid.channels == 4) return trilinear<T, 4>(values, grid, n, index, out, threads);
  }
  const int64_t blocks = item_blocks(n, threads);
  parallel_for(blocks, threads, [&](int64_t block) {
    for (int64_t i = n * block / blocks; i < n * (block + 1) / blocks; ++i)
      trilinear_at<T, kChannels>(values, grid, index[3 * i], index[3 * i + 1], index[3 * i + 2],
                                 out + grid.channels * i);
  });
}

// One squaring of scaling and squaring: out(p) = u(p) + u(p + u(p) / spacing) at every node p
// of the displacement u (X, Y, Z, 3) in mm, on a grid of `spacing` mm (u o (id + u), trilinear
// between the nodes, border values beyond them).
template <class T>
void squaring_step(const T* u, const Grid& grid, double spacing, T* out, int threads) {
  const int64_t ny = grid.size[1], nz = grid.size[2], rows = grid.size[0] * ny;
  const double inv = 1.0 / spacing;
  const int64_t blocks = item_blocks(rows * nz, threads);
  parallel_for(blocks, threads, [&](int64_t block) {
    T moved[3];
    for (int64_t row = rows * block / blocks; row < rows * (block + 1) / blocks; ++row) {
      const double i = (double)(row / ny), j = (double)(row % ny);
      for (int64_t k = 0; k < nz; ++k) {  // node (i, j, k)
        const int64_t p = row * nz + k;
        const T* up = u + 3 * p;
        trilinear_at<T, 3>(u, grid, i + up[0] * inv, j + up[1] * inv, k + up[2] * inv, moved);
        for (int d = 0; d < 3; ++d) out[3 * p + d] = up[d] + moved[d];
      }
    }
  });
}

}  // namespace

// The Python module: every function takes and returns C-contiguous numpy arrays of the exact
// dtype (no silent copies: an output written into a converted copy would be lost), checks
// their shapes, and runs without the GIL. Exceptions become Python errors (std::bad_alloc and
// std::length_error: MemoryError; overflow_error: OverflowError; others: RuntimeError), which
// otreg/native/kernels.py turns into otreg's own.

namespace py = pybind11;

#ifndef OTREG_BUILD_FLAGS
#define OTREG_BUILD_FLAGS "unknown"
#endif
#ifndef OTREG_VERSION
#define OTREG_VERSION "unknown"
#endif
#ifndef OTREG_SOURCE_SHA256
#define OTREG_SOURCE_SHA256 "unknown"
#endif
#if defined(__GNUC__) && !defined(__clang__)
#define OTREG_COMPILER "GCC " __VERSION__
#elif defined(__VERSION__)
#define OTREG_COMPILER __VERSION__
#elif defined(_MSC_FULL_VER)
#define OTREG_COMPILER "MSVC " PYBIND11_TOSTRING(_MSC_FULL_VER)
#else
#define OTREG_COMPILER "unknown"
#endif

namespace {

template <class T>
using Array = py::array_t<T, py::array::c_style>;

// A new (n,) array in memory of the extension's own (malloc), freed with the array. Not
// numpy's allocator: numpy asks the kernel for transparent huge pages on every large array,
// and where THP is "madvise" (the Linux default) each first touch then zeroes 2 MB; with the
// kernels' buffers reusing that memory, building them took 1.5x longer
// (benchmarks/README.md, "the extension's arrays").
// new_array(shape): the same, C-contiguous, of any number of dimensions.
template <class T>
Array<T> new_array(const std::vector<py::ssize_t>& shape) {
  int64_t n = 1;
  for (py::ssize_t size : shape) n *= size;
  void* data = std::malloc(sizeof(T) * std::max<int64_t>(n, 1));
  if (!data) throw std::bad_alloc();
  py::capsule owner(data, [](void* p) { std::free(p); });
  std::vector<py::ssize_t> strides(shape.size());
  py::ssize_t stride = sizeof(T);
  for (size_t d = shape.size(); d-- > 0;) strides[d] = stride, stride *= shape[d];
  return Array<T>(shape, strides, static_cast<T*>(data), owner);
}

template <class T>
Array<T> new_array(int64_t n) {
  return new_array<T>(std::vector<py::ssize_t>{(py::ssize_t)n});
}

// Check that `a` has the sizes `shape` (-1: any size) and return its extents.
template <class T>
void check_shape(const Array<T>& a, const char* name, std::initializer_list<int64_t> shape) {
  bool ok = a.ndim() == (py::ssize_t)shape.size();
  int k = 0;
  for (int64_t size : shape) {
    if (ok && size >= 0 && a.shape(k) != size) ok = false;
    ++k;
  }
  if (!ok) {
    std::string got;
    for (py::ssize_t d = 0; d < a.ndim(); ++d) got += (d ? ", " : "") + std::to_string(a.shape(d));
    throw std::invalid_argument(std::string("otreg.native._kernels: ") + name +
                                " has the wrong shape (" + got + ")");
  }
}

constexpr int64_t kMaxIndex = std::numeric_limits<int32_t>::max();

void check_int32_entries(int64_t nnz) {
  if (nnz > kMaxIndex)
    throw std::overflow_error("the truncated kernels would hold " + std::to_string(nnz) +
                              " entries (int32 indices)");
}

// The entries of truncate or select as CSR arrays (crow int32 (n + 1), col int32, cost, val),
// with row_max (n,).
template <class T>
py::tuple collect(std::unique_ptr<Entries<T>> entries, const Array<int64_t>& counts,
                  Array<T> row_max) {
  const int64_t n = counts.shape(0), nnz = entries->size();
  check_int32_entries(nnz);
  auto crow = new_array<int32_t>(n + 1), col = new_array<int32_t>(nnz);
  auto cost = new_array<T>(nnz), val = new_array<T>(nnz);
  int32_t *crow_p = crow.mutable_data(), *col_p = col.mutable_data();
  T *cost_p = cost.mutable_data(), *val_p = val.mutable_data();
  const int64_t* count_p = counts.data();
  {
    py::gil_scoped_release release;
    crow_p[0] = 0;
    for (int64_t i = 0; i < n; ++i) crow_p[i + 1] = crow_p[i] + (int32_t)count_p[i];
    take<T>(entries.get(), col_p, cost_p, val_p);
  }
  return py::make_tuple(crow, col, cost, val, row_max);
}

// Allocates row_max (n,) and the row counts, runs search(row_max, counts) without the GIL
// (truncate or select: entries, per row max and count), and collects its entries.
template <class T, class Search>
py::tuple search_entries(int64_t n, Search&& search) {
  auto row_max = new_array<T>(n);
  auto counts = new_array<int64_t>(n);
  T* row_max_p = row_max.mutable_data();
  int64_t* counts_p = counts.mutable_data();
  std::unique_ptr<Entries<T>> entries;
  {
    py::gil_scoped_release release;
    entries = search(row_max_p, counts_p);
  }
  return collect<T>(std::move(entries), counts, row_max);
}

template <class T>
py::tuple py_truncate(const Array<T>& x, const Array<T>& y_t, const Array<T>& h,
                      const Array<T>& lse, T inv_eps, T truncation, int threads) {
  check_shape(x, "x", {-1, -1});
  const int64_t n = x.shape(0), dim = x.shape(1);
  check_shape(y_t, "y_t", {dim, -1});
  const int64_t m = y_t.shape(1);
  check_shape(h, "h", {m});
  check_shape(lse, "lse", {n});
  return search_entries<T>(n, [&](T* row_max, int64_t* counts) {
    return truncate<T>(n, x.data(), m, y_t.data(), dim, h.data(), lse.data(), inv_eps,
                       truncation, row_max, counts, threads);
  });
}

template <class T>
py::tuple py_select(const Array<int64_t>& crow, const Array<int32_t>& col, const Array<T>& cost,
                    const Array<T>& h, T inv_eps, T truncation, int threads) {
  check_shape(crow, "crow", {-1});
  const int64_t n = crow.shape(0) - 1;
  if (n < 0) throw std::invalid_argument("otreg.native._kernels: crow is empty");
  const int64_t nnz = crow.data()[n];
  check_shape(col, "col", {nnz});
  check_shape(cost, "cost", {nnz});
  check_shape(h, "h", {-1});
  return search_entries<T>(n, [&](T* row_max, int64_t* counts) {
    return select<T>(n, crow.data(), col.data(), cost.data(), h.data(), inv_eps, truncation,
                     row_max, counts, threads);
  });
}

template <class T>
py::tuple py_kernel_pair(const Array<T>& x, const Array<T>& x_t, const Array<T>& y,
                         const Array<T>& y_t, const Array<T>& h_y, const Array<T>& h_x,
                         const Array<T>& lse_x, const Array<T>& lse_y, T inv_eps, T truncation,
                         bool rows_only, int threads) {
  check_shape(x, "x", {-1, -1});
  const int64_t n = x.shape(0), dim = x.shape(1);
  check_shape(y, "y", {-1, dim});
  const int64_t m = y.shape(0);
  check_shape(x_t, "x_t", {dim, n});
  check_shape(y_t, "y_t", {dim, m});
  check_shape(h_y, "h_y", {m});
  check_shape(h_x, "h_x", {n});
  check_shape(lse_x, "lse_x", {n});
  check_shape(lse_y, "lse_y", {m});
  int64_t nnz = 0;
  std::unique_ptr<Pair<T>> pair;
  {
    py::gil_scoped_release release;
    pair = kernel_pair<T>(n, x.data(), x_t.data(), m, y.data(), y_t.data(), dim, h_y.data(),
                          h_x.data(), lse_x.data(), lse_y.data(), inv_eps, truncation, rows_only,
                          &nnz, threads);
  }
  check_int32_entries(nnz);
  auto crow_xy = new_array<int32_t>(n + 1), col_xy = new_array<int32_t>(nnz),
       crow_yx = new_array<int32_t>(m + 1), col_yx = new_array<int32_t>(nnz);
  auto cost_xy = new_array<T>(nnz), val_xy = new_array<T>(nnz), max_xy = new_array<T>(n),
       cost_yx = new_array<T>(nnz), val_yx = new_array<T>(nnz), max_yx = new_array<T>(m);
  int32_t *p_crow_xy = crow_xy.mutable_data(), *p_col_xy = col_xy.mutable_data(),
          *p_crow_yx = crow_yx.mutable_data(), *p_col_yx = col_yx.mutable_data();
  T *p_cost_xy = cost_xy.mutable_data(), *p_val_xy = val_xy.mutable_data(),
    *p_max_xy = max_xy.mutable_data(), *p_cost_yx = cost_yx.mutable_data(),
    *p_val_yx = val_yx.mutable_data(), *p_max_yx = max_yx.mutable_data();
  {
    py::gil_scoped_release release;
    take_pair<T>(pair.get(), p_crow_xy, p_col_xy, p_cost_xy, p_val_xy, p_max_xy, p_crow_yx,
                 p_col_yx, p_cost_yx, p_val_yx, p_max_yx);
  }
  return py::make_tuple(py::make_tuple(crow_xy, col_xy, cost_xy, val_xy, max_xy),
                        py::make_tuple(crow_yx, col_yx, cost_yx, val_yx, max_yx));
}

template <class T>
T py_row_spread(const Array<int32_t>& crow, const Array<int32_t>& col, const Array<T>& v,
                int threads) {
  check_shape(crow, "crow", {-1});
  const int64_t n = crow.shape(0) - 1;
  if (n < 0) throw std::invalid_argument("otreg.native._kernels: crow is empty");
  check_shape(col, "col", {(int64_t)crow.data()[n]});
  check_shape(v, "v", {-1});
  py::gil_scoped_release release;
  return row_spread<T>(n, crow.data(), col.data(), v.data(), threads);
}

Array<double> py_c_transform(const Array<double>& x, const Array<double>& y_t,
                             const Array<double>& g, int threads) {
  check_shape(x, "x", {-1, -1});
  const int64_t n = x.shape(0), dim = x.shape(1);
  check_shape(y_t, "y_t", {dim, -1});
  const int64_t m = y_t.shape(1);
  check_shape(g, "g", {m});
  auto out = new_array<double>(n);
  double* out_p = out.mutable_data();
  {
    py::gil_scoped_release release;
    c_transform(n, x.data(), m, y_t.data(), dim, g.data(), out_p, threads);
  }
  return out;
}

double py_rounded_plan_cost(const Array<int64_t>& crow, const Array<int32_t>& col,
                            const Array<double>& x, const Array<double>& y,
                            const Array<double>& a, const Array<double>& b,
                            const Array<double>& f, const Array<double>& g, double eps,
                            int threads) {
  check_shape(x, "x", {-1, -1});
  const int64_t n = x.shape(0), dim = x.shape(1);
  check_shape(y, "y", {-1, dim});
  const int64_t m = y.shape(0);
  check_shape(crow, "crow", {n + 1});
  check_shape(col, "col", {crow.data()[n]});
  check_shape(a, "a", {n});
  check_shape(f, "f", {n});
  check_shape(b, "b", {m});
  check_shape(g, "g", {m});
  py::gil_scoped_release release;
  return rounded_plan_cost(n, crow.data(), col.data(), x.data(), m, y.data(), dim, a.data(),
                           b.data(), f.data(), g.data(), eps, threads);
}

// The grid of a (X, Y, Z, C) array of values; X, Y, Z >= 1.
template <class T>
Grid grid_of(const Array<T>& values, const char* name, int64_t channels) {
  check_shape(values, name, {-1, -1, -1, channels});
  if (values.shape(0) < 1 || values.shape(1) < 1 || values.shape(2) < 1)
    throw std::invalid_argument(std::string("otreg.native._kernels: ") + name + " has no nodes");
  return Grid(values.shape(0), values.shape(1), values.shape(2), values.shape(3));
}

template <class T>
Array<T> py_trilinear(const Array<T>& values, const Array<double>& index, int threads) {
  const Grid grid = grid_of(values, "values", -1);
  check_shape(index, "index", {-1, 3});
  const int64_t n = index.shape(0);
  auto out = new_array<T>({(py::ssize_t)n, (py::ssize_t)grid.channels});
  T* out_p = out.mutable_data();
  {
    py::gil_scoped_release release;
    trilinear<T>(values.data(), grid, n, index.data(), out_p, threads);
  }
  return out;
}

template <class T>
Array<T> py_squaring_step(const Array<T>& u, double spacing, int threads) {
  const Grid grid = grid_of(u, "u", 3);
  if (!(spacing > 0) || !std::isfinite(spacing))
    throw std::invalid_argument("otreg.native._kernels: spacing must be positive and finite");
  auto out = new_array<T>({u.shape(0), u.shape(1), u.shape(2), 3});
  T* out_p = out.mutable_data();
  {
    py::gil_scoped_release release;
    squaring_step<T>(u.data(), grid, spacing, out_p, threads);
  }
  return out;
}

template <class T>
void bind_typed(py::module_& m) {
  m.def("truncate", &py_truncate<T>, py::arg("x").noconvert(), py::arg("y_t").noconvert(),
        py::arg("h").noconvert(), py::arg("lse").noconvert(), py::arg("inv_eps"),
        py::arg("truncation"), py::arg("threads"),
        "Entries of the rows of x (n, dim) over the columns y_t (dim, m) within `truncation` of "
        "their row's max of z = h - |x - y|^2 / 2 * inv_eps: (crow, col, cost, val, row_max).");
  m.def("select", &py_select<T>, py::arg("crow").noconvert(), py::arg("col").noconvert(),
        py::arg("cost").noconvert(), py::arg("h").noconvert(), py::arg("inv_eps"),
        py::arg("truncation"), py::arg("threads"),
        "The entries of the CSR kernel (crow int64, col, cost) within `truncation` of their "
        "row's max: (crow, col, cost, val, row_max).");
  m.def("kernel_pair", &py_kernel_pair<T>, py::arg("x").noconvert(), py::arg("x_t").noconvert(),
        py::arg("y").noconvert(), py::arg("y_t").noconvert(), py::arg("h_y").noconvert(),
        py::arg("h_x").noconvert(), py::arg("lse_x").noconvert(), py::arg("lse_y").noconvert(),
        py::arg("inv_eps"), py::arg("truncation"), py::arg("rows_only"), py::arg("threads"),
        "The truncated kernels x -> y and y -> x on one support: two (crow, col, cost, val, "
        "row_max).");
  m.def("row_spread", &py_row_spread<T>, py::arg("crow").noconvert(), py::arg("col").noconvert(),
        py::arg("v").noconvert(), py::arg("threads"),
        "The largest spread max - min of v over the columns of a row.");
  m.def("trilinear", &py_trilinear<T>, py::arg("values").noconvert(), py::arg("index").noconvert(),
        py::arg("threads"),
        "(n, C) trilinear values of the grid values (X, Y, Z, C) at the fractional node indices "
        "index (n, 3, float64), each clamped to [0, size - 1] (grid_sample, align_corners=True, "
        "padding_mode='border').");
  m.def("squaring_step", &py_squaring_step<T>, py::arg("u").noconvert(), py::arg("spacing"),
        py::arg("threads"),
        "(X, Y, Z, 3) u(p) + u(p + u(p) / spacing) at every node p of the displacement u "
        "(X, Y, Z, 3, mm) on a grid of `spacing` mm: one squaring of scaling and squaring.");
}

}  // namespace

PYBIND11_MODULE(_kernels, m) {
  m.doc() = "otreg's compiled CPU kernels (see otreg/native/kernels.py)";
  py::register_local_exception_translator([](std::exception_ptr failure) {
    try {
      if (failure) std::rethrow_exception(failure);
    } catch (const std::length_error& err) {  // a std::vector larger than memory can hold
      PyErr_SetString(PyExc_MemoryError, err.what());
    }
  });
  bind_typed<float>(m);
  bind_typed<double>(m);
  m.def("c_transform", &py_c_transform, py::arg("x").noconvert(), py::arg("y_t").noconvert(),
        py::arg("g").noconvert(), py::arg("threads"),
        "min_j |x_i - y_j|^2 / 2 - g_j over all j, by branch and bound (float64).");
  m.def("rounded_plan_cost", &py_rounded_plan_cost, py::arg("crow").noconvert(),
        py::arg("col").noconvert(), py::arg("x").noconvert(), py::arg("y").noconvert(),
        py::arg("a").noconvert(), py::arg("b").noconvert(), py::arg("f").noconvert(),
        py::arg("g").noconvert(), py::arg("eps"), py::arg("threads"),
        "Cost of the truncated Sinkhorn plan rounded onto the marginals (float64).");
  m.attr("BUILD_FLAGS") = OTREG_BUILD_FLAGS;
  m.attr("SOURCE_SHA256") = OTREG_SOURCE_SHA256;
  m.attr("VERSION") = OTREG_VERSION;
  m.attr("COMPILER") = OTREG_COMPILER;
}
