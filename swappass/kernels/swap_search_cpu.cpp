// Exact best-1-swap search on the CPU (swappass.kernels.cpu builds this file at first use).
//
// Contract (swappass/search.py): for every row r of w, c, keep (R x d, row-major, contiguous) return the
// minimum over feasible pairs (u kept, p pruned; N:M: same block of m inputs) of
//
//     dL(u, p) = a_u + b_p - 2 w_u w_p G_up,  a_u = w_u (2 c_u + w_u G_uu),  b_p = w_p (w_p G_pp - 2 c_p)
//
// and its (u, p); ties go to the lowest u, then the lowest p; rows without a feasible pair give
// (+inf, 0, 0). Every score is computed with exactly the operations, in exactly the order, of the torch
// implementation, ((G_up * w_p) * v_u + b_p) + a_u with v_u = -2 w_u, each rounded on its own (the build
// uses -ffp-contract=off), so the choice is bit-for-bit that of search_rows_torch / search_nm_torch.
//
// Per-row kernel: rows are processed in tiles; for each block of 32 u the tile's rows take turns on those
// rows of G while they are in cache. Per row, the kept u of the block are listed (branch-free) and scored four
// at a time, so each vector of w and b feeds four u. The loop over p is branch-free (b_p = +inf for kept p and
// the padding) and only reduces to the minimum; the index of a minimum is recovered by a scalar rescan only
// when it improves the row's best (rare). Four vector operations per 16 (float) pairs: this is at the
// floating-point instruction floor of the exact formula; an FMA would save one operation but change the
// rounding, and with it the bit-identity with the torch search.
// N:M kernel: blocks are laid out across vector lanes (G's diagonal blocks transposed to (i, j, block)),
// so every (i, j) position of all blocks of a row is scored in a few vector operations. For M in {2, 4, 8}
// (a block inside one vector) each lane keeps its best (score, u, p) in registers across the whole row and the
// lanes are reduced once per search; the fused loop computes a row's pair terms (G_up * w_p) * (-2 w_u), which
// depend on w and G alone, once per row and call instead of in every iteration (the same roundings).
//
// refine_rows / refine_nm run refine.py's loop (search, accept if dL < -rtol * L_row, c += w_u G[u] - w_p G[p],
// L_row += dL) for a number of iterations without returning to Python, with torch's roundings; the exact
// re-derivation of c every `resync_every` iterations stays in Python (a torch matmul, as in refine.py).
// refine_rows_bounded is refine_rows with a bound-pruned search that makes the same choices (see its comment);
// it is what backend="cpu" runs for per-row patterns.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

constexpr int kVectorBytes = 64;

template <typename T> struct Vec;
template <> struct Vec<float> {
  typedef float type __attribute__((vector_size(kVectorBytes), aligned(4)));
  typedef int32_t ielem;
  typedef int32_t itype __attribute__((vector_size(kVectorBytes), aligned(4)));
  typedef uint8_t btype __attribute__((vector_size(kVectorBytes / 4), aligned(1)));
};
template <> struct Vec<double> {
  typedef double type __attribute__((vector_size(kVectorBytes), aligned(8)));
  typedef int64_t ielem;
  typedef int64_t itype __attribute__((vector_size(kVectorBytes), aligned(8)));
  typedef uint8_t btype __attribute__((vector_size(kVectorBytes / 8), aligned(1)));
};

template <typename T> constexpr int lanes() { return kVectorBytes / int(sizeof(T)); }

template <typename T> inline typename Vec<T>::type load(const T* p) {
  return *reinterpret_cast<const typename Vec<T>::type*>(p);
}
template <typename T> inline void store(T* p, typename Vec<T>::type v) {
  *reinterpret_cast<typename Vec<T>::type*>(p) = v;
}
template <typename T> inline typename Vec<T>::type splat(T x) {
  typename Vec<T>::type v;
  for (int i = 0; i < lanes<T>(); ++i) v[i] = x;
  return v;
}
template <typename V> inline V vmin(V x, V m) { return x < m ? x : m; }  // lane-wise, as MINPS/MINPD

// Lane l of the result is lane (l / M) * M + J of v: the J-th entry of l's block of M lanes, for every lane.
template <typename T, int M, int J, size_t... Ls>
inline typename Vec<T>::type block_pick(typename Vec<T>::type v, std::index_sequence<Ls...>) {
#if defined(__clang__)
  return __builtin_shufflevector(v, v, int((Ls / M) * M + J)...);
#else
  return __builtin_shuffle(v, typename Vec<T>::itype{typename Vec<T>::ielem((Ls / M) * M + J)...});
#endif
}
template <typename T, int M, int J> inline typename Vec<T>::type block_pick(typename Vec<T>::type v) {
  return block_pick<T, M, J>(v, std::make_index_sequence<size_t(kVectorBytes / sizeof(T))>{});
}

template <typename T> inline T inf() { return std::numeric_limits<T>::infinity(); }

// The score of one pair without a_u, exactly as torch evaluates it.
template <typename T> inline T partial_score(T g, T wp, T vu, T bp) { return g * wp * vu + bp; }

inline int threads_for(int requested, int64_t work_items) {
  int n = requested > 0 ? requested : 1;
  if (work_items < n) n = work_items > 0 ? int(work_items) : 1;
  return n;
}

// out[k] = min over p < dpad of ((G_k[p] * w[p]) * v[k] + b[p]) for K rows G_k of G at once, so that w and b
// are loaded once for K kept u; dpad is a multiple of 4 vectors.
template <typename T, int K>
inline void row_min(const T* const* __restrict Gs, const T* __restrict w, const T* __restrict b,
                    const T* __restrict v, int64_t dpad, T* __restrict out) {
  using V = typename Vec<T>::type;
  constexpr int L = lanes<T>();
  constexpr int A = K == 1 ? 4 : (K == 2 ? 2 : 1);  // independent accumulators per u (latency of min)
  V vv[K], m[K][A];
  for (int k = 0; k < K; ++k) {
    vv[k] = splat<T>(v[k]);
    for (int a = 0; a < A; ++a) m[k][a] = splat<T>(inf<T>());
  }
  for (int64_t p = 0; p < dpad; p += A * L) {
    for (int a = 0; a < A; ++a) {
      const V wv = load<T>(w + p + a * L), bv = load<T>(b + p + a * L);
      for (int k = 0; k < K; ++k) m[k][a] = vmin<V>(load<T>(Gs[k] + p + a * L) * wv * vv[k] + bv, m[k][a]);
    }
  }
  for (int k = 0; k < K; ++k) {
    V mk = m[k][0];
    for (int a = 1; a < A; ++a) mk = vmin<V>(m[k][a], mk);
    T best = mk[0];
    for (int i = 1; i < L; ++i) best = mk[i] < best ? mk[i] : best;
    out[k] = best;
  }
}

template <typename T>
inline void row_min_n(int n, const T* const* Gs, const T* w, const T* b, const T* v, int64_t dpad, T* out) {
  switch (n) {
    case 1: row_min<T, 1>(Gs, w, b, v, dpad, out); break;
    case 2: row_min<T, 2>(Gs, w, b, v, dpad, out); break;
    case 3: row_min<T, 3>(Gs, w, b, v, dpad, out); break;
    default: row_min<T, 4>(Gs, w, b, v, dpad, out); break;
  }
}

constexpr int kGroup = 4;    // u per pass over a row's w and b
constexpr int kBlockU = 32;  // u whose rows of G serve the whole tile of rows before moving on
constexpr int kMaxTile = 64; // rows per tile (bounds the per-tile arrays)

template <typename T> struct Choice {
  T delta;
  int64_t u, p;
};

// ------------------------------------------------------------------------------------------ per-row patterns
// Best pair of each of the nr rows listed in rows[] (indices into w, c, keep: R x d). Gpad: d x dpad, zero
// padding; wbuf, bbuf: nr x dpad scratch.
template <typename T>
void search_tile(const int64_t* rows, int64_t nr, const T* w, const T* c, const uint8_t* keep, const T* Gpad,
                 const T* gdiag, int64_t d, int64_t dpad, T* wbuf, T* bbuf, Choice<T>* out) {
  for (int64_t i = 0; i < nr; ++i) {
    const T* wr = w + rows[i] * d;
    const T* cr = c + rows[i] * d;
    const uint8_t* kr = keep + rows[i] * d;
    T* wi = wbuf + i * dpad;
    T* bi = bbuf + i * dpad;
    for (int64_t p = 0; p < d; ++p) {
      const T wv = wr[p];
      wi[p] = wv;
      bi[p] = kr[p] ? inf<T>() : wv * (wv * gdiag[p] - T(2) * cr[p]);
    }
    for (int64_t p = d; p < dpad; ++p) {
      wi[p] = T(0);
      bi[p] = inf<T>();
    }
    out[i] = Choice<T>{inf<T>(), 0, 0};
  }
  for (int64_t u0 = 0; u0 < d; u0 += kBlockU) {
    const int64_t u1 = u0 + kBlockU < d ? u0 + kBlockU : d;
    for (int64_t i = 0; i < nr; ++i) {
      const int64_t row = rows[i] * d;
      int64_t kept[kBlockU];
      int n = 0;
      for (int64_t u = u0; u < u1; ++u) {  // the kept u of this block, ascending, without branches
        kept[n] = u;
        n += keep[row + u] != 0;
      }
      const T* wi = wbuf + i * dpad;
      const T* b = bbuf + i * dpad;
      for (int k0 = 0; k0 < n; k0 += kGroup) {
        const int nk = n - k0 < kGroup ? n - k0 : kGroup;
        const T* Gs[kGroup];
        T au[kGroup], vu[kGroup], mins[kGroup];
        for (int k = 0; k < nk; ++k) {
          const int64_t u = kept[k0 + k];
          const T wu = w[row + u];
          Gs[k] = Gpad + u * dpad;
          au[k] = wu * (T(2) * c[row + u] + wu * gdiag[u]);
          vu[k] = T(-2) * wu;
        }
        row_min_n<T>(nk, Gs, wi, b, vu, dpad, mins);
        for (int k = 0; k < nk; ++k) {  // ascending u
          const T val = mins[k] + au[k];
          if (val < out[i].delta) {  // strict: an earlier u keeps a tie
            int64_t p = 0;
            while (p < d && !(partial_score<T>(Gs[k][p], wi[p], vu[k], b[p]) + au[k] == val)) ++p;
            out[i] = Choice<T>{val, kept[k0 + k], p};
          }
        }
      }
    }
  }
}

// Accept the row's best swap if it lowers the row error by more than rtol (relative), as refine.py does:
// ok = delta < -rtol * loss; then keep, c += w_u G[u] - w_p G[p], loss += delta (same roundings as torch).
template <typename T>
bool accept(int64_t r, const Choice<T>& ch, const T* w, T* c, uint8_t* keep, T* loss, const T* G, int64_t ldg,
            int64_t d, double rtol, int64_t* swaps, int64_t* searches) {
  searches[r] += 1;
  if (!(ch.delta < T(-rtol) * loss[r])) return false;
  const int64_t row = r * d;
  keep[row + ch.u] = 0;
  keep[row + ch.p] = 1;
  const T wu = w[row + ch.u], wp = w[row + ch.p];
  const T* Gu = G + ch.u * ldg;
  const T* Gp = G + ch.p * ldg;
  T* cr = c + row;
  for (int64_t j = 0; j < d; ++j) cr[j] = cr[j] + (wu * Gu[j] - wp * Gp[j]);
  loss[r] = loss[r] + ch.delta;
  swaps[r] += 1;
  return true;
}

template <typename T> struct TileScratch {
  std::vector<T> w, b;
  std::vector<Choice<T>> out;
  std::vector<int64_t> rows;
  TileScratch(int64_t tile, int64_t dpad)
      : w(static_cast<size_t>(tile * dpad)), b(static_cast<size_t>(tile * dpad)), out(static_cast<size_t>(tile)),
        rows(static_cast<size_t>(tile)) {}
};

template <typename T>
void search_rows(const T* w, const T* c, const uint8_t* keep, const T* Gpad, const T* gdiag, int64_t R,
                 int64_t d, int64_t dpad, int64_t tile, int nthreads, T* out_delta, int64_t* out_u,
                 int64_t* out_p) {
  tile = tile < 1 ? 1 : (tile > kMaxTile ? kMaxTile : tile);
  const int64_t ntiles = (R + tile - 1) / tile;
#pragma omp parallel num_threads(threads_for(nthreads, ntiles))
  {
    TileScratch<T> s(tile, dpad);
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < ntiles; ++t) {
      const int64_t r0 = t * tile, nr = (r0 + tile <= R ? tile : R - r0);
      for (int64_t i = 0; i < nr; ++i) s.rows[i] = r0 + i;
      search_tile<T>(s.rows.data(), nr, w, c, keep, Gpad, gdiag, d, dpad, s.w.data(), s.b.data(), s.out.data());
      for (int64_t i = 0; i < nr; ++i) {
        out_delta[r0 + i] = s.out[i].delta;
        out_u[r0 + i] = s.out[i].u;
        out_p[r0 + i] = s.out[i].p;
      }
    }
  }
}

// Up to `iters` iterations of search + accept for the rows with active[r] != 0 (refine.py's loop between two
// exact re-derivations of c). Tiles of rows advance together; a row whose best swap is rejected stops.
template <typename T>
void refine_rows(const T* w, T* c, uint8_t* keep, T* loss, const T* Gpad, const T* gdiag, int64_t R, int64_t d,
                 int64_t dpad, int64_t tile, int64_t iters, double rtol, int nthreads, int64_t* swaps,
                 int64_t* searches, uint8_t* active) {
  tile = tile < 1 ? 1 : (tile > kMaxTile ? kMaxTile : tile);
  const int64_t ntiles = (R + tile - 1) / tile;
#pragma omp parallel num_threads(threads_for(nthreads, ntiles))
  {
    TileScratch<T> s(tile, dpad);
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < ntiles; ++t) {
      const int64_t r0 = t * tile, r1 = (r0 + tile <= R ? r0 + tile : R);
      for (int64_t it = 0; it < iters; ++it) {
        int64_t nr = 0;
        for (int64_t r = r0; r < r1; ++r)
          if (active[r]) s.rows[nr++] = r;
        if (nr == 0) break;
        search_tile<T>(s.rows.data(), nr, w, c, keep, Gpad, gdiag, d, dpad, s.w.data(), s.b.data(), s.out.data());
        for (int64_t i = 0; i < nr; ++i) {
          const int64_t r = s.rows[i];
          if (!accept<T>(r, s.out[i], w, c, keep, loss, Gpad, dpad, d, rtol, swaps, searches)) active[r] = 0;
        }
      }
    }
  }
}

// ------------------------------------------------------------------------------- bound-pruned refinement
// For one row with kept set U and pruned set P, search_tile scores dL(u, p) = (t_up + b_p) + a_u with
// t_up = (G_up * w_p) * v_u. t depends on w and G alone, so mu_u = min over p in P of t_up changes only when P
// does; with bmin = min over P of b_p,
//     lb_u = (mu_u + bmin) + a_u  <=  dL(u, p)  for every p in P        (rounding is monotone)
// A kept u whose bound exceeds the best score found so far cannot hold the row's best pair and is skipped; the
// others are scored exactly as search_tile scores them, the u with the lowest bound first and then ascending u,
// so the choice (ties: lowest u, then lowest p) is the exhaustive search's, bit for bit. After a swap (u*, p*),
// for every kept u: mu_u = min(mu_u, t_{u u*}), except where t_{u p*} == mu_u (the minimum may have left with
// p*): there, and for p* itself, mu is recomputed over the new P. mu (R x d) persists between calls; rows with
// mu_ok[r] == 0 get it computed first (one pass over U x P, as one exhaustive search). Gcol (ldc) holds the
// columns of G as rows, Gcol[p][u] = G[u][p] (G itself when it is exactly symmetric), so that the update reads
// t_{u p*} and t_{u u*} for all u from two contiguous rows.
// The minimum of x[0..n), n a multiple of the vector width.
template <typename T> inline T array_min(const T* x, int64_t n) {
  using V = typename Vec<T>::type;
  constexpr int L = lanes<T>();
  V m = splat<T>(inf<T>());
  for (int64_t i = 0; i < n; i += L) m = vmin<V>(load<T>(x + i), m);
  T out = m[0];
  for (int i = 1; i < L; ++i) out = m[i] < out ? m[i] : out;
  return out;
}

template <typename T> struct BoundScratch {
  std::vector<T> w, v, b, z, lb;    // the row's w, v = -2 w, b and z (+inf where kept; z = 0 where pruned), bounds
  std::vector<int64_t> cand, redo;  // kept u to score; kept u whose mu must be recomputed
  std::vector<uint8_t> flag;
  int64_t passes = 0;               // passes over one row of G (scoring a u, or recomputing its mu)
  BoundScratch(int64_t d, int64_t dpad)
      : w(static_cast<size_t>(dpad)), v(static_cast<size_t>(dpad)), b(static_cast<size_t>(dpad)),
        z(static_cast<size_t>(dpad)), lb(static_cast<size_t>(d)), cand(static_cast<size_t>(d)),
        redo(static_cast<size_t>(d)), flag(static_cast<size_t>(d)) {}
};

// mu[u] = min over pruned p of t_up for the n kept u listed, four at a time (z carries the pruned set).
template <typename T>
void pruned_minima(const int64_t* us, int64_t n, const T* Gpad, int64_t dpad, BoundScratch<T>& s, T* mu) {
  s.passes += n;
  for (int64_t k0 = 0; k0 < n; k0 += kGroup) {
    const int nk = int(n - k0 < kGroup ? n - k0 : kGroup);
    const T* Gs[kGroup];
    T vu[kGroup], mins[kGroup];
    for (int k = 0; k < nk; ++k) {
      Gs[k] = Gpad + us[k0 + k] * dpad;
      vu[k] = s.v[us[k0 + k]];
    }
    row_min_n<T>(nk, Gs, s.w.data(), s.z.data(), vu, dpad, mins);
    for (int k = 0; k < nk; ++k) mu[us[k0 + k]] = mins[k];
  }
}

// The row's best pair, skipping the kept u whose bound exceeds the best score found so far.
template <typename T>
Choice<T> bounded_search(const T* cr, const uint8_t* kr, const T* mu, const T* Gpad, const T* gdiag, int64_t d,
                         int64_t dpad, BoundScratch<T>& s) {
  const T* w = s.w.data();
  T* b = s.b.data();
  T* lb = s.lb.data();
  for (int64_t p = 0; p < d; ++p) b[p] = kr[p] ? inf<T>() : w[p] * (w[p] * gdiag[p] - T(2) * cr[p]);  // as search_tile
  const T bmin = array_min<T>(b, dpad);  // b is +inf past d
  Choice<T> best{inf<T>(), 0, 0};
  if (!(bmin < inf<T>())) return best;  // nothing pruned: no feasible pair
  for (int64_t u = 0; u < d; ++u) lb[u] = kr[u] ? (mu[u] + bmin) + w[u] * (T(2) * cr[u] + w[u] * gdiag[u]) : inf<T>();
  auto score = [&](const int64_t* us, int nk) {  // exact scores of up to kGroup kept u, ascending
    const T* Gs[kGroup];
    T au[kGroup], vu[kGroup], mins[kGroup];
    for (int k = 0; k < nk; ++k) {
      Gs[k] = Gpad + us[k] * dpad;
      au[k] = w[us[k]] * (T(2) * cr[us[k]] + w[us[k]] * gdiag[us[k]]);
      vu[k] = s.v[us[k]];
    }
    row_min_n<T>(nk, Gs, w, b, vu, dpad, mins);
    s.passes += nk;
    for (int k = 0; k < nk; ++k) {
      const T val = mins[k] + au[k];
      if (val < best.delta || (val == best.delta && us[k] < best.u)) {
        int64_t p = 0;
        while (p < d && !(partial_score<T>(Gs[k][p], w[p], vu[k], b[p]) + au[k] == val)) ++p;
        best = Choice<T>{val, us[k], p};
      }
    }
  };
  int64_t first = 0;
  for (int64_t u = 1; u < d; ++u) first = lb[u] < lb[first] ? u : first;
  if (!kr[first]) return best;  // nothing kept
  score(&first, 1);
  int64_t* cand = s.cand.data();  // the other u that may still win, ascending (pruned u have lb = +inf)
  int64_t n = 0;
  for (int64_t u = 0; u < d; ++u) {  // without branches
    cand[n] = u;
    n += (lb[u] <= best.delta) & (u != first);
  }
  int64_t group[kGroup];
  int ng = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!(lb[cand[i]] <= best.delta)) continue;  // the best score found meanwhile rules it out
    group[ng++] = cand[i];
    if (ng == kGroup) {
      score(group, ng);
      ng = 0;
    }
  }
  if (ng) score(group, ng);
  return best;
}

// Keep mu exact for the row after the accepted swap (u* = ch.u now pruned, p* = ch.p now kept).
template <typename T>
void update_minima(const Choice<T>& ch, const uint8_t* kr, const T* Gpad, int64_t dpad, const T* Gcol, int64_t ldc,
                   int64_t d, BoundScratch<T>& s, T* mu) {
  s.z[ch.u] = T(0);
  s.z[ch.p] = inf<T>();
  const T *gp = Gcol + ch.p * ldc, *gu = Gcol + ch.u * ldc, *v = s.v.data();
  const T wp = s.w[ch.p], wu = s.w[ch.u];
  uint8_t* flag = s.flag.data();
  for (int64_t u = 0; u < d; ++u) {  // t_{u p*} == mu_u: recompute; else mu_u = min(mu_u, t_{u u*})
    const T t_old = gp[u] * wp * v[u] + T(0), t_new = gu[u] * wu * v[u] + T(0);
    const bool redo = kr[u] && (t_old == mu[u] || u == ch.p);
    flag[u] = redo;
    mu[u] = kr[u] && !redo && t_new < mu[u] ? t_new : mu[u];
  }
  int64_t n = 0;
  for (int64_t u = 0; u < d; ++u) {  // without branches
    s.redo[n] = u;
    n += flag[u];
  }
  pruned_minima<T>(s.redo.data(), n, Gpad, dpad, s, mu);
}

// refine_rows with the bound-pruned search: the same decisions, bit for bit, usually with far fewer pairs scored.
// passes[r] += the row's passes over a row of G (the exhaustive search makes one per kept u per iteration).
template <typename T>
void refine_rows_bounded(const T* w, T* c, uint8_t* keep, T* loss, const T* Gpad, const T* Gcol, int64_t ldc,
                         const T* gdiag, int64_t R, int64_t d, int64_t dpad, int64_t iters, double rtol,
                         int nthreads, int64_t* swaps, int64_t* searches, uint8_t* active, T* mu, uint8_t* mu_ok,
                         int64_t* passes) {
#pragma omp parallel num_threads(threads_for(nthreads, R))
  {
    BoundScratch<T> s(d, dpad);
#pragma omp for schedule(dynamic, 1)
    for (int64_t r = 0; r < R; ++r) {
      if (!active[r]) continue;
      const T* wr = w + r * d;
      const uint8_t* kr = keep + r * d;
      T* mr = mu + r * d;
      s.passes = 0;
      for (int64_t p = 0; p < dpad; ++p) {
        s.w[p] = p < d ? wr[p] : T(0);
        s.v[p] = T(-2) * s.w[p];
        s.z[p] = p < d && !kr[p] ? T(0) : inf<T>();
        s.b[p] = inf<T>();
      }
      if (!mu_ok[r]) {
        int64_t n = 0;
        for (int64_t u = 0; u < d; ++u)
          if (kr[u]) s.redo[n++] = u;
        pruned_minima<T>(s.redo.data(), n, Gpad, dpad, s, mr);
        mu_ok[r] = 1;
      }
      for (int64_t it = 0; it < iters; ++it) {
        const Choice<T> ch = bounded_search<T>(c + r * d, kr, mr, Gpad, gdiag, d, dpad, s);
        if (!accept<T>(r, ch, w, c, keep, loss, Gpad, dpad, d, rtol, swaps, searches)) {
          active[r] = 0;
          break;
        }
        update_minima<T>(ch, kr, Gpad, dpad, Gcol, ldc, d, s, mr);
      }
      passes[r] += s.passes;
    }
  }
}

// ---------------------------------------------------------------------------------------------- N:M patterns
template <typename T> struct NMScratch {
  std::vector<T> W, V, A, B;
  NMScratch(int64_t m, int64_t nbp)
      : W(static_cast<size_t>(m * nbp)), V(static_cast<size_t>(m * nbp)), A(static_cast<size_t>(m * nbp)),
        B(static_cast<size_t>(m * nbp)) {}
};

// Lay the row out by position inside the block: W[i][k] = w[k*m + i], V = -2 W, A = a (+inf where pruned),
// B = b (+inf where kept); lanes k >= nb are padding (scores +inf).
template <typename T>
void deinterleave(const T* wr, const T* cr, const uint8_t* kr, const T* gdiag, int64_t nb, int64_t m,
                  int64_t nbp, NMScratch<T>& s) {
  T *W = s.W.data(), *V = s.V.data(), *A = s.A.data(), *B = s.B.data();
  for (int64_t k = 0; k < nb; ++k) {
    for (int64_t i = 0; i < m; ++i) {
      const int64_t x = k * m + i, y = i * nbp + k;
      const T wv = wr[x], wg = wv * gdiag[x], c2 = T(2) * cr[x];
      const bool kept = kr[x] != 0;
      W[y] = wv;
      V[y] = T(-2) * wv;
      A[y] = kept ? wv * (c2 + wg) : inf<T>();
      B[y] = kept ? inf<T>() : wv * (wg - c2);
    }
  }
  for (int64_t i = 0; i < m; ++i)
    for (int64_t k = nb; k < nbp; ++k) {
      const int64_t y = i * nbp + k;
      W[y] = V[y] = T(0);
      A[y] = B[y] = inf<T>();
    }
}

// The best pair over all blocks from the de-interleaved row: a vector of L blocks at a time, every (i, j)
// position scored with the running best kept in registers; ties go to the lowest (block, i, j).
template <typename T>
Choice<T> scan_blocks(const T* GT, int64_t nb, int64_t m, int64_t nbp, const NMScratch<T>& s) {
  using V = typename Vec<T>::type;
  using IV = typename Vec<T>::itype;
  using I = typename Vec<T>::ielem;
  constexpr int L = lanes<T>();
  const T *W = s.W.data(), *Vv = s.V.data(), *A = s.A.data(), *B = s.B.data();
  Choice<T> best{inf<T>(), 0, 0};
  for (int64_t k = 0; k < nbp; k += L) {
    V bv = splat<T>(inf<T>());
    IV bi = IV{};
    for (int64_t i = 0; i < m; ++i) {
      const V vi = load<T>(Vv + i * nbp + k), ai = load<T>(A + i * nbp + k);
      for (int64_t j = 0; j < m; ++j) {
        if (i == j) continue;  // u == p is never feasible (a_u finite means b_u = +inf)
        const V sc = load<T>(GT + (i * m + j) * nbp + k) * load<T>(W + j * nbp + k) * vi + load<T>(B + j * nbp + k) + ai;
        const IV better = sc < bv;  // strict: an earlier (i, j) keeps a tie
        bv = better ? sc : bv;
        bi = better ? (IV{} + I(i * m + j)) : bi;
      }
    }
    for (int l = 0; l < L && k + l < nb; ++l)
      if (bv[l] < best.delta) {  // strict: the lowest block keeps a tie
        const int64_t blk = k + l, ij = int64_t(bi[l]);
        best = Choice<T>{bv[l], blk * m + ij / m, blk * m + ij % m};
      }
  }
  return best;
}

// Per-lane running best of a row scanned vector by vector: lane l holds the best (score, u, j) over the u of
// lane l seen so far (u ascending, so a strict comparison keeps the lowest u of a tie).
template <typename T> struct LaneBest {
  typename Vec<T>::type v;
  typename Vec<T>::itype u, j;
};

// One vector of L inputs (L / M whole blocks): lane x scores u = x against every p = J-th input of its block,
// J ascending (the lane's partners are picked by an in-register shuffle); u == p scores +inf. Each lane's best
// is merged into acc without leaving the registers (no per-lane branch); ties keep the lower p, then the lower u.
// Pre: Gj holds the pair terms t_x(j) = (G[x, partner] * w_partner) * (-2 w_x) of pair_terms instead of G (they
// depend on w and G alone: a row's refinement computes them once); the scores are the same, bit for bit.
template <typename T, int M, bool Pre, size_t... Js>
inline void scan_lanes(const T* w, const T* c, const uint8_t* k, const T* g, const T* Gj, int64_t ldg,
                       typename Vec<T>::itype uv, LaneBest<T>& acc, std::index_sequence<Js...>) {
  using V = typename Vec<T>::type;
  using IV = typename Vec<T>::itype;
  using I = typename Vec<T>::ielem;
  typename Vec<T>::btype kb;
  std::memcpy(&kb, k, sizeof(kb));
  const IV kept = __builtin_convertvector(kb, IV) != 0;
  const V wv = load<T>(w), wg = wv * load<T>(g), c2 = splat<T>(T(2)) * load<T>(c), infv = splat<T>(inf<T>());
  const V a = kept ? wv * (c2 + wg) : infv;
  const V b = kept ? infv : wv * (wg - c2);
  const V v = splat<T>(T(-2)) * wv;
  V bv = infv;
  IV bj = IV{};
  auto step = [&](auto J) {
    constexpr int j = decltype(J)::value;
    V t;
    if constexpr (Pre) t = load<T>(Gj + j * ldg);
    else t = load<T>(Gj + j * ldg) * block_pick<T, M, j>(wv) * v;
    const V sc = t + block_pick<T, M, j>(b) + a;
    const IV better = sc < bv;  // strict: a lower p keeps a tie
    bv = better ? sc : bv;
    bj = better ? (IV{} + I(j)) : bj;
  };
  (step(std::integral_constant<int, int(Js)>{}), ...);
  const IV better = bv < acc.v;  // strict: an earlier vector (a lower u of the lane) keeps a tie
  acc.v = better ? bv : acc.v;
  acc.u = better ? uv : acc.u;
  acc.j = better ? bj : acc.j;
}

// Best pair of one row when a block never straddles two vectors (L % M == 0). Gj: (M, ldg) with
// Gj[j][x] = G[x, (x / M) * M + j], zero padding for x >= d. The lanes' bests are reduced once at the end:
// the lowest score, among equal scores the lowest u (and that u's lowest p) -- the choice of a scan of every
// pair in ascending (u, p) order that keeps the first minimum.
template <typename T, int M, bool Pre>
Choice<T> scan_row_in_lanes(const T* wr, const T* cr, const uint8_t* kr, const T* gdiag, const T* Gj, int64_t d,
                            int64_t ldg) {
  using IV = typename Vec<T>::itype;
  using I = typename Vec<T>::ielem;
  constexpr int L = lanes<T>();
  static_assert(L % M == 0, "a block must fit in one vector");
  IV uv;
  for (int l = 0; l < L; ++l) uv[l] = I(l);
  LaneBest<T> acc{splat<T>(inf<T>()), IV{}, IV{}};
  int64_t x0 = 0;
  for (; x0 + L <= d; x0 += L, uv += I(L))
    scan_lanes<T, M, Pre>(wr + x0, cr + x0, kr + x0, gdiag + x0, Gj + x0, ldg, uv, acc, std::make_index_sequence<M>{});
  if (x0 < d) {  // the last, partial vector: padding lanes are pruned zeros (a = +inf, whole blocks)
    T w[L] = {}, c[L] = {}, g[L] = {};
    uint8_t k[L] = {};
    for (int64_t x = x0; x < d; ++x) {
      w[x - x0] = wr[x];
      c[x - x0] = cr[x];
      g[x - x0] = gdiag[x];
      k[x - x0] = kr[x];
    }
    scan_lanes<T, M, Pre>(w, c, k, g, Gj + x0, ldg, uv, acc, std::make_index_sequence<M>{});
  }
  Choice<T> best{inf<T>(), 0, 0};
  for (int l = 0; l < L; ++l) {
    const T val = acc.v[l];
    const int64_t u = int64_t(acc.u[l]);
    if (val < best.delta || (val == best.delta && val < inf<T>() && u < best.u))
      best = Choice<T>{val, u, u / M * M + int64_t(acc.j[l])};
  }
  return best;
}

// The pair terms of row wr for scan_lanes<Pre = true>: out[j][x] = (Gj[j][x] * w[(x / M) * M + j]) * (-2 w[x]),
// (M, ldg) like Gj; zero in the padding (x >= d).
template <typename T, int M, size_t... Js>
void pair_terms(const T* wr, const T* Gj, int64_t d, int64_t ldg, T* out, std::index_sequence<Js...>) {
  using V = typename Vec<T>::type;
  constexpr int L = lanes<T>();
  for (int64_t x0 = 0; x0 < ldg; x0 += L) {
    T w[L] = {};
    for (int l = 0; l < L && x0 + l < d; ++l) w[l] = wr[x0 + l];
    const V wv = load<T>(w), v = splat<T>(T(-2)) * wv;
    auto step = [&](auto J) {
      constexpr int j = decltype(J)::value;
      store<T>(out + j * ldg + x0, load<T>(Gj + j * ldg + x0) * block_pick<T, M, j>(wv) * v);
    };
    (step(std::integral_constant<int, int(Js)>{}), ...);
  }
}

// Best pair of row r inside its blocks of m. For m in {2, 4, 8}: GT is (m, nbp) as scan_row_in_lanes takes it
// (nbp >= d); otherwise GT is (m, m, nbp), GT[i][j][k] = G[k*m + i, k*m + j], zero padding for k >= nb = d / m.
template <typename T>
Choice<T> search_nm_row(int64_t r, const T* w, const T* c, const uint8_t* keep, const T* GT, const T* gdiag,
                        int64_t d, int64_t m, int64_t nbp, NMScratch<T>& s) {
  const int64_t nb = d / m;
  const T* wr = w + r * d;
  const T* cr = c + r * d;
  const uint8_t* kr = keep + r * d;
  switch (m) {  // blocks inside one vector: no de-interleaving
    case 2: return scan_row_in_lanes<T, 2, false>(wr, cr, kr, gdiag, GT, d, nbp);
    case 4: return scan_row_in_lanes<T, 4, false>(wr, cr, kr, gdiag, GT, d, nbp);
    case 8: return scan_row_in_lanes<T, 8, false>(wr, cr, kr, gdiag, GT, d, nbp);
    default:
      deinterleave<T>(wr, cr, kr, gdiag, nb, m, nbp, s);
      return scan_blocks<T>(GT, nb, m, nbp, s);
  }
}

template <typename T>
void search_nm(const T* w, const T* c, const uint8_t* keep, const T* GT, const T* gdiag, int64_t R, int64_t d,
               int64_t m, int64_t nbp, int nthreads, T* out_delta, int64_t* out_u, int64_t* out_p) {
#pragma omp parallel num_threads(threads_for(nthreads, R))
  {
    NMScratch<T> s(m, nbp);
#pragma omp for schedule(dynamic, 16)
    for (int64_t r = 0; r < R; ++r) {
      const Choice<T> ch = search_nm_row<T>(r, w, c, keep, GT, gdiag, d, m, nbp, s);
      out_delta[r] = ch.delta;
      out_u[r] = ch.u;
      out_p[r] = ch.p;
    }
  }
}

// refine_nm's iterations of row r for m in {2, 4, 8}: the pair terms computed once into Tt (m x nbp).
template <typename T, int M>
void refine_nm_row_m(int64_t r, const T* w, T* c, uint8_t* keep, T* loss, const T* GT, const T* G, const T* gdiag,
                     int64_t d, int64_t nbp, int64_t iters, double rtol, int64_t* swaps, int64_t* searches,
                     uint8_t* active, T* Tt) {
  const T* wr = w + r * d;
  pair_terms<T, M>(wr, GT, d, nbp, Tt, std::make_index_sequence<M>{});
  for (int64_t it = 0; it < iters && active[r]; ++it) {
    const Choice<T> ch = scan_row_in_lanes<T, M, true>(wr, c + r * d, keep + r * d, gdiag, Tt, d, nbp);
    if (!accept<T>(r, ch, w, c, keep, loss, G, d, d, rtol, swaps, searches)) active[r] = 0;
  }
}

template <typename T>
void refine_nm_row_in_lanes(int64_t r, const T* w, T* c, uint8_t* keep, T* loss, const T* GT, const T* G,
                            const T* gdiag, int64_t d, int64_t m, int64_t nbp, int64_t iters, double rtol,
                            int64_t* swaps, int64_t* searches, uint8_t* active, T* Tt) {
  auto run = [&](auto M) {
    refine_nm_row_m<T, decltype(M)::value>(r, w, c, keep, loss, GT, G, gdiag, d, nbp, iters, rtol, swaps, searches,
                                          active, Tt);
  };
  switch (m) {
    case 2: return run(std::integral_constant<int, 2>{});
    case 4: return run(std::integral_constant<int, 4>{});
    default: return run(std::integral_constant<int, 8>{});
  }
}

// N:M counterpart of refine_rows; G: the full d x d matrix (its rows update c).
template <typename T>
void refine_nm(const T* w, T* c, uint8_t* keep, T* loss, const T* GT, const T* G, const T* gdiag, int64_t R,
               int64_t d, int64_t m, int64_t nbp, int64_t iters, double rtol, int nthreads, int64_t* swaps,
               int64_t* searches, uint8_t* active) {
#pragma omp parallel num_threads(threads_for(nthreads, R))
  {
    NMScratch<T> s(m, nbp);
#pragma omp for schedule(dynamic, 4)
    for (int64_t r = 0; r < R; ++r) {
      if (!active[r]) continue;
      if (m == 2 || m == 4 || m == 8) {  // the pair terms once per row (s.W is (m, nbp)), then every iteration
        refine_nm_row_in_lanes<T>(r, w, c, keep, loss, GT, G, gdiag, d, m, nbp, iters, rtol, swaps, searches,
                                  active, s.W.data());
        continue;
      }
      for (int64_t it = 0; it < iters && active[r]; ++it) {
        const Choice<T> ch = search_nm_row<T>(r, w, c, keep, GT, gdiag, d, m, nbp, s);
        if (!accept<T>(r, ch, w, c, keep, loss, G, d, d, rtol, swaps, searches)) active[r] = 0;
      }
    }
  }
}

}  // namespace

extern "C" {

int swappass_cpu_abi_version() { return 4; }

#define SWAPPASS_DEFINE(T, SFX)                                                                                  \
  void swappass_search_rows_##SFX(const T* w, const T* c, const uint8_t* keep, const T* Gpad, const T* gdiag,    \
                                  int64_t R, int64_t d, int64_t dpad, int64_t tile, int nthreads, T* delta,      \
                                  int64_t* u, int64_t* p) {                                                      \
    search_rows<T>(w, c, keep, Gpad, gdiag, R, d, dpad, tile, nthreads, delta, u, p);                           \
  }                                                                                                              \
  void swappass_search_nm_##SFX(const T* w, const T* c, const uint8_t* keep, const T* GT, const T* gdiag,        \
                                int64_t R, int64_t d, int64_t m, int64_t nbp, int nthreads, T* delta, int64_t* u, \
                                int64_t* p) {                                                                    \
    search_nm<T>(w, c, keep, GT, gdiag, R, d, m, nbp, nthreads, delta, u, p);                                   \
  }                                                                                                              \
  void swappass_refine_rows_##SFX(const T* w, T* c, uint8_t* keep, T* loss, const T* Gpad, const T* gdiag,       \
                                  int64_t R, int64_t d, int64_t dpad, int64_t tile, int64_t iters, double rtol,  \
                                  int nthreads, int64_t* swaps, int64_t* searches, uint8_t* active) {            \
    refine_rows<T>(w, c, keep, loss, Gpad, gdiag, R, d, dpad, tile, iters, rtol, nthreads, swaps, searches,     \
                   active);                                                                                      \
  }                                                                                                              \
  void swappass_refine_rows_bounded_##SFX(const T* w, T* c, uint8_t* keep, T* loss, const T* Gpad,                \
                                          const T* Gcol, int64_t ldc, const T* gdiag, int64_t R, int64_t d,       \
                                          int64_t dpad, int64_t iters, double rtol, int nthreads, int64_t* swaps, \
                                          int64_t* searches, uint8_t* active, T* mu, uint8_t* mu_ok,              \
                                          int64_t* passes) {                                                      \
    refine_rows_bounded<T>(w, c, keep, loss, Gpad, Gcol, ldc, gdiag, R, d, dpad, iters, rtol, nthreads, swaps,    \
                           searches, active, mu, mu_ok, passes);                                                   \
  }                                                                                                              \
  void swappass_refine_nm_##SFX(const T* w, T* c, uint8_t* keep, T* loss, const T* GT, const T* G,               \
                                const T* gdiag, int64_t R, int64_t d, int64_t m, int64_t nbp, int64_t iters,     \
                                double rtol, int nthreads, int64_t* swaps, int64_t* searches, uint8_t* active) { \
    refine_nm<T>(w, c, keep, loss, GT, G, gdiag, R, d, m, nbp, iters, rtol, nthreads, swaps, searches, active);  \
  }

SWAPPASS_DEFINE(float, f32)
SWAPPASS_DEFINE(double, f64)

}  // extern "C"
