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
// so every (i, j) position of all blocks of a row is scored in a few vector operations.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
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
};
template <> struct Vec<double> {
  typedef double type __attribute__((vector_size(kVectorBytes), aligned(8)));
  typedef int64_t ielem;
  typedef int64_t itype __attribute__((vector_size(kVectorBytes), aligned(8)));
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

template <typename T> inline T inf() { return std::numeric_limits<T>::infinity(); }

// The score of one pair without a_u, exactly as torch evaluates it.
template <typename T> inline T partial_score(T g, T wp, T vu, T bp) { return g * wp * vu + bp; }

int threads_for(int requested, int64_t work_items) {
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

constexpr int kGroup = 4;  // u per pass over a row's w and b
constexpr int kBlockU = 64;  // u whose rows of G serve the whole tile of rows before moving on

// Per-row patterns. Gpad: d x dpad (row stride dpad, zero padding). Outputs delta, u, p: (R,).
template <typename T>
void search_rows(const T* w, const T* c, const uint8_t* keep, const T* Gpad, const T* gdiag, int64_t R,
                 int64_t d, int64_t dpad, int64_t tile, int nthreads, T* out_delta, int64_t* out_u,
                 int64_t* out_p) {
  const int64_t ntiles = (R + tile - 1) / tile;
  const int nt = threads_for(nthreads, ntiles);
#pragma omp parallel num_threads(nt)
  {
    std::vector<T> wbuf(size_t(tile * dpad) + lanes<T>()), bbuf(size_t(tile * dpad) + lanes<T>());
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < ntiles; ++t) {
      const int64_t r0 = t * tile, nr = (r0 + tile <= R ? tile : R - r0);
      T best[64];
      int64_t bu[64], bp[64];
      for (int64_t i = 0; i < nr; ++i) {
        const T* wr = w + (r0 + i) * d;
        const T* cr = c + (r0 + i) * d;
        const uint8_t* kr = keep + (r0 + i) * d;
        T* wp = wbuf.data() + i * dpad;
        T* bp_ = bbuf.data() + i * dpad;
        for (int64_t p = 0; p < d; ++p) {
          const T wv = wr[p];
          wp[p] = wv;
          bp_[p] = kr[p] ? inf<T>() : wv * (wv * gdiag[p] - T(2) * cr[p]);
        }
        for (int64_t p = d; p < dpad; ++p) {
          wp[p] = T(0);
          bp_[p] = inf<T>();
        }
        best[i] = inf<T>();
        bu[i] = 0;
        bp[i] = 0;
      }
      for (int64_t u0 = 0; u0 < d; u0 += kBlockU) {
        const int64_t u1 = u0 + kBlockU < d ? u0 + kBlockU : d;
        for (int64_t i = 0; i < nr; ++i) {
          const int64_t row = (r0 + i) * d;
          int64_t kept[kBlockU];
          int n = 0;
          for (int64_t u = u0; u < u1; ++u) {  // the kept u of this block, ascending, without branches
            kept[n] = u;
            n += keep[row + u] != 0;
          }
          const T* wp = wbuf.data() + i * dpad;
          const T* b = bbuf.data() + i * dpad;
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
            row_min_n<T>(nk, Gs, wp, b, vu, dpad, mins);
            for (int k = 0; k < nk; ++k) {  // ascending u
              const T val = mins[k] + au[k];
              if (val < best[i]) {  // strict: an earlier u keeps a tie
                int64_t p = 0;
                while (p < d && !(partial_score<T>(Gs[k][p], wp[p], vu[k], b[p]) + au[k] == val)) ++p;
                best[i] = val;
                bu[i] = kept[k0 + k];
                bp[i] = p;
              }
            }
          }
        }
      }
      for (int64_t i = 0; i < nr; ++i) {
        out_delta[r0 + i] = best[i];
        out_u[r0 + i] = bu[i];
        out_p[r0 + i] = bp[i];
      }
    }
  }
}

// N:M patterns. GT: (m, m, nbp) with GT[i][j][k] = G[k*m + i, k*m + j], zero padding for k >= nb.
template <typename T>
void search_nm(const T* w, const T* c, const uint8_t* keep, const T* GT, const T* gdiag, int64_t R, int64_t d,
               int64_t m, int64_t nbp, int nthreads, T* out_delta, int64_t* out_u, int64_t* out_p) {
  using V = typename Vec<T>::type;
  using IV = typename Vec<T>::itype;
  using I = typename Vec<T>::ielem;
  constexpr int L = lanes<T>();
  const int64_t nb = d / m;
  const int nt = threads_for(nthreads, R);
#pragma omp parallel num_threads(nt)
  {
    std::vector<T> Wb(size_t(m * nbp)), Vb(size_t(m * nbp)), Ab(size_t(m * nbp)), Bb(size_t(m * nbp));
    std::vector<T> bestv(static_cast<size_t>(nbp));
    std::vector<I> besti(static_cast<size_t>(nbp));
#pragma omp for schedule(dynamic, 16)
    for (int64_t r = 0; r < R; ++r) {
      const T* wr = w + r * d;
      const T* cr = c + r * d;
      const uint8_t* kr = keep + r * d;
      for (int64_t i = 0; i < m; ++i) {
        T* Wi = Wb.data() + i * nbp;
        T* Vi = Vb.data() + i * nbp;
        T* Ai = Ab.data() + i * nbp;
        T* Bi = Bb.data() + i * nbp;
        for (int64_t k = 0; k < nb; ++k) {
          const int64_t x = k * m + i;
          const T wv = wr[x], wg = wv * gdiag[x];
          Wi[k] = wv;
          Vi[k] = T(-2) * wv;
          Ai[k] = kr[x] ? wv * (T(2) * cr[x] + wg) : inf<T>();
          Bi[k] = kr[x] ? inf<T>() : wv * (wg - T(2) * cr[x]);
        }
        for (int64_t k = nb; k < nbp; ++k) {
          Wi[k] = Vi[k] = T(0);
          Ai[k] = Bi[k] = inf<T>();
        }
      }
      for (int64_t k = 0; k < nbp; k += L) {
        store<T>(bestv.data() + k, splat<T>(inf<T>()));
        *reinterpret_cast<IV*>(besti.data() + k) = IV{};
      }
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < m; ++j) {
          if (i == j) continue;  // u == p is never feasible (a_u finite means b_u = +inf)
          const T* g = GT + (i * m + j) * nbp;
          const T* Wj = Wb.data() + j * nbp;
          const T* Vi = Vb.data() + i * nbp;
          const T* Bj = Bb.data() + j * nbp;
          const T* Ai = Ab.data() + i * nbp;
          const I ij = I(i * m + j);
          for (int64_t k = 0; k < nbp; k += L) {
            const V s = load<T>(g + k) * load<T>(Wj + k) * load<T>(Vi + k) + load<T>(Bj + k) + load<T>(Ai + k);
            const V bv = load<T>(bestv.data() + k);
            IV* bi = reinterpret_cast<IV*>(besti.data() + k);
            const IV better = s < bv;  // strict: an earlier (i, j) keeps a tie
            store<T>(bestv.data() + k, better ? s : bv);
            *bi = better ? (IV{} + ij) : *bi;
          }
        }
      }
      T best = inf<T>();
      int64_t bk = 0;
      for (int64_t k = 0; k < nb; ++k)
        if (bestv[k] < best) {  // strict: the lowest block keeps a tie
          best = bestv[k];
          bk = k;
        }
      const int64_t ij = int64_t(besti[bk]);
      out_delta[r] = best;
      out_u[r] = bk * m + ij / m;
      out_p[r] = bk * m + ij % m;
    }
  }
}

}  // namespace

extern "C" {

int swappass_cpu_abi_version() { return 1; }

int swappass_cpu_max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

void swappass_search_rows_f32(const float* w, const float* c, const uint8_t* keep, const float* Gpad,
                              const float* gdiag, int64_t R, int64_t d, int64_t dpad, int64_t tile, int nthreads,
                              float* delta, int64_t* u, int64_t* p) {
  search_rows<float>(w, c, keep, Gpad, gdiag, R, d, dpad, tile, nthreads, delta, u, p);
}

void swappass_search_rows_f64(const double* w, const double* c, const uint8_t* keep, const double* Gpad,
                              const double* gdiag, int64_t R, int64_t d, int64_t dpad, int64_t tile, int nthreads,
                              double* delta, int64_t* u, int64_t* p) {
  search_rows<double>(w, c, keep, Gpad, gdiag, R, d, dpad, tile, nthreads, delta, u, p);
}

void swappass_search_nm_f32(const float* w, const float* c, const uint8_t* keep, const float* GT,
                            const float* gdiag, int64_t R, int64_t d, int64_t m, int64_t nbp, int nthreads,
                            float* delta, int64_t* u, int64_t* p) {
  search_nm<float>(w, c, keep, GT, gdiag, R, d, m, nbp, nthreads, delta, u, p);
}

void swappass_search_nm_f64(const double* w, const double* c, const uint8_t* keep, const double* GT,
                            const double* gdiag, int64_t R, int64_t d, int64_t m, int64_t nbp, int nthreads,
                            double* delta, int64_t* u, int64_t* p) {
  search_nm<double>(w, c, keep, GT, gdiag, R, d, m, nbp, nthreads, delta, u, p);
}

}  // extern "C"
