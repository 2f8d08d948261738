"""The compiled CPU backend of the best-1-swap search (``backend="cpu"``).

``swap_search_cpu.cpp`` (next to this file) is compiled at first use with the system C++ compiler
(``$SWAPPASS_CXX``, else ``$CXX``, else ``g++``/``c++``/``clang++``) into a plain shared library and called
through :mod:`ctypes` on the tensors' data pointers — no Python headers, no torch headers, no ``ninja``, so a
build takes about a second and does not depend on the torch version. The library is cached under
``$SWAPPASS_CACHE/kernels`` (default ``~/.cache/swappass/kernels``), named by a hash of the source, the
compiler, the flags and the CPU (``-march=native``); builds write a private temporary file and publish it
with an atomic rename, so concurrent processes never see a partial library.

If no compiler is found or the build fails, :func:`make_search` warns once and returns the plain torch search
(same results, slower). The kernel's choices are bit-for-bit those of
:func:`swappass.kernels.torch_search.search_rows_torch` and :func:`~swappass.kernels.torch_search.search_nm_torch`
(same operations in the same order, no FMA contraction).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

from ..core.errors import InputError, SwappassError
from ..core.patterns import NMSparsity, RowSparsity, SparsityPattern
from ..core.rowtiles import resync_rows, row_errors
from .torch_search import SearchFn, SwapChoice, make_torch_search, nm_diag_blocks

__all__ = ["available", "make_search", "load_library", "library_error", "reset_loader", "find_compiler",
           "open_library", "CPUKernelUnavailable", "RowSearch", "NMSearch"]

SOURCE = Path(__file__).with_name("swap_search_cpu.cpp")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-ffp-contract=off", "-fPIC", "-shared", "-std=c++17")
ABI_VERSION = 4
_VECTOR_BYTES = 64  # kVectorBytes in the source: padding of G rows and N:M block lanes
_MAX_TILE = 64  # rows per tile, bounded by the kernel's per-tile arrays
_IN_LANE_M = (2, 4, 8)  # N:M block sizes the kernel scores inside one vector (its switch in search_nm_row)
_TILE = 16  # rows that share each block of G rows while it is in cache (a choice: 4-64 all time alike here)

class CPUKernelUnavailable(SwappassError, RuntimeError):
    """The compiled CPU kernel could not be built or loaded; the message says why."""


# ------------------------------------------------------------------------------------------------- build
def find_compiler() -> str | None:
    """``$SWAPPASS_CXX`` or ``$CXX`` if set (used as given), else the first of g++, c++, clang++ on PATH."""
    for var in ("SWAPPASS_CXX", "CXX"):
        if os.environ.get(var):
            return shutil.which(os.environ[var]) or os.environ[var]
    for cand in ("g++", "c++", "clang++"):
        found = shutil.which(cand)
        if found:
            return found
    return None


def _compiler_id(cxx: str) -> str:
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise CPUKernelUnavailable(f"C++ compiler {cxx!r} cannot be run: {exc}") from None
    if out.returncode != 0:
        raise CPUKernelUnavailable(f"C++ compiler {cxx!r} cannot be run: {out.stderr.strip()[-500:]}")
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else cxx


def _cpu_id() -> str:
    """What ``-march=native`` depends on: the machine, the CPU model and its feature flags."""
    parts = [platform.machine()]
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key = line.split(":", 1)[0].strip()
                if key in ("model name", "flags", "Features", "CPU part"):
                    parts.append(line.strip())
                elif not line.strip() and len(parts) > 1:
                    break  # the first processor is enough
    except OSError:
        parts.append(platform.processor())
    return "\n".join(parts)


def _cache_root() -> Path:
    return Path(os.environ.get("SWAPPASS_CACHE", Path.home() / ".cache" / "swappass")) / "kernels"


def library_path(cxx: str) -> Path:
    """Where the library built by ``cxx`` for this source, these flags and this CPU is cached."""
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), _compiler_id(cxx).encode(), " ".join(FLAGS).encode(), _cpu_id().encode(),
                 str(ABI_VERSION).encode()):
        key.update(part)
        key.update(b"\0")
    return _cache_root() / f"swap_search_cpu-{key.hexdigest()[:20]}.so"


def _build(cxx: str, target: Path) -> None:
    """Compile into a private temporary file next to ``target``, then publish it with an atomic rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp.so", dir=target.parent)
    os.close(fd)
    try:
        cmd = [cxx, *FLAGS, str(SOURCE), "-o", tmp]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as exc:
            raise CPUKernelUnavailable(f"running {' '.join(cmd)} failed: {exc}") from None
        if out.returncode != 0:
            raise CPUKernelUnavailable(
                f"{' '.join(cmd)} exited with status {out.returncode}: {out.stderr.strip()[-1500:]}"
            )
        os.chmod(tmp, 0o755)  # mkstemp makes it private; the cache may be shared
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def open_library(path: Path) -> ctypes.CDLL:
    """Load a built kernel library file and declare its functions (raises OSError for a foreign ABI version).

    :func:`load_library` builds and opens this package's own; this is for a library built elsewhere (e.g. of
    another revision's source, to compare kernels in one process: ``tools/bench_nm_loop.py``)."""
    lib = ctypes.CDLL(str(path))
    if lib.swappass_cpu_abi_version() != ABI_VERSION:
        raise OSError(f"{path} has ABI version {lib.swappass_cpu_abi_version()}, expected {ABI_VERSION}")
    ptr, i64, cint, dbl = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_double
    signatures = {
        "search_rows": [ptr, ptr, ptr, ptr, ptr, i64, i64, i64, i64, cint, ptr, ptr, ptr],
        "search_nm": [ptr, ptr, ptr, ptr, ptr, i64, i64, i64, i64, cint, ptr, ptr, ptr],
        "refine_rows": [ptr, ptr, ptr, ptr, ptr, ptr, i64, i64, i64, i64, i64, dbl, cint, ptr, ptr, ptr],
        "refine_nm": [ptr, ptr, ptr, ptr, ptr, ptr, ptr, i64, i64, i64, i64, i64, dbl, cint, ptr, ptr, ptr],
        "refine_rows_bounded": [ptr, ptr, ptr, ptr, ptr, ptr, i64, ptr, i64, i64, i64, i64, dbl, cint, ptr, ptr, ptr,
                                ptr, ptr, ptr],
    }
    for kind, args in signatures.items():
        for suffix in ("f32", "f64"):
            fn = getattr(lib, f"swappass_{kind}_{suffix}")
            fn.argtypes, fn.restype = args, None
    return lib


class _Loader:
    """Builds (once per cache key) and loads the library; remembers a failure for the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lib: ctypes.CDLL | None = None
        self._error: str | None = None
        self._warned = False

    def load(self) -> ctypes.CDLL:
        with self._lock:
            if self._lib is None and self._error is None:
                try:
                    self._lib = self._load()
                except (CPUKernelUnavailable, OSError) as exc:
                    self._error = str(exc)
            if self._lib is None:
                raise CPUKernelUnavailable(self._error)
            return self._lib

    def _load(self) -> ctypes.CDLL:
        cxx = find_compiler()
        if cxx is None:
            raise CPUKernelUnavailable("no C++ compiler found (set $SWAPPASS_CXX or $CXX, or install g++)")
        if not SOURCE.is_file():
            raise CPUKernelUnavailable(f"kernel source {SOURCE} is missing from the installation")
        path = library_path(cxx)
        if path.is_file():
            try:
                return open_library(path)
            except OSError:
                pass  # stale or foreign file: rebuild it below
        _build(cxx, path)
        return open_library(path)

    @property
    def error(self) -> str | None:
        """Why loading failed in this process (None if it loaded or was not tried)."""
        return self._error

    def warn_once(self) -> None:
        with self._lock:
            if self._warned:
                return
            self._warned = True
        warnings.warn(
            f"swappass: the compiled CPU swap-search kernel is unavailable ({self._error}); "
            "falling back to the plain torch search (same results, slower). "
            "Pass backend='torch' to refine_mask to silence this warning.",
            RuntimeWarning,
            stacklevel=3,
        )


_LOADER = _Loader()


def load_library() -> ctypes.CDLL:
    """The compiled kernel library (built and cached at first call). Raises :class:`CPUKernelUnavailable`."""
    return _LOADER.load()


def reset_loader() -> None:
    """Forget the loaded library and any failure: the next :func:`make_search` builds or loads it again (after a
    compiler was installed, or with another ``$SWAPPASS_CACHE``)."""
    global _LOADER
    _LOADER = _Loader()


def library_error() -> str | None:
    """Why the library could not be built or loaded in this process (``None`` if it loaded or was not tried)."""
    return _LOADER.error


# ------------------------------------------------------------------------------------------------ search
def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


def _round_up(n: int, k: int) -> int:
    return (n + k - 1) // k * k


class _CompiledSearch:
    """Common argument checks, outputs and the fused refinement loop of the compiled searches over a fixed G."""

    kind = ""

    def __init__(self, lib: ctypes.CDLL, G: torch.Tensor) -> None:
        self.d = G.shape[0]
        self.dtype = G.dtype
        self.gdiag = G.diagonal().contiguous()
        suffix = "f32" if G.dtype == torch.float32 else "f64"
        self._search = getattr(lib, f"swappass_search_{self.kind}_{suffix}")
        self._refine = getattr(lib, f"swappass_refine_{self.kind}_{suffix}")
        self.lanes = _VECTOR_BYTES // G.element_size()
        self.loop_cpu_seconds = 0.0  # process CPU time spent in the fused loop's C++ calls (all refine_batch calls)

    def _inputs(self, w: torch.Tensor, c: torch.Tensor | None, keep: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Check shapes, dtypes and device; contiguous copies only where needed. ``c=None``: w and keep only."""
        cc = w if c is None else c
        if w.dim() != 2 or w.shape[1] != self.d or cc.shape != w.shape or keep.shape != w.shape:
            raise InputError(
                f"cpu swap search: w, c, keep must all be (rows, {self.d}); got {tuple(w.shape)}, "
                f"{tuple(cc.shape)}, {tuple(keep.shape)}"
            )
        if w.dtype != self.dtype or cc.dtype != self.dtype or keep.dtype != torch.bool:
            raise InputError(
                f"cpu swap search: w and c must be {self.dtype} like G and keep bool; "
                f"got {w.dtype}, {cc.dtype}, {keep.dtype}"
            )
        if w.device.type != "cpu" or cc.device.type != "cpu" or keep.device.type != "cpu":
            raise InputError("cpu swap search: w, c and keep must be CPU tensors")
        if c is None:
            return w.contiguous(), keep.contiguous()
        return w.contiguous(), c.contiguous(), keep.contiguous()

    def _call_search(self, w, c, keep, R, delta, u, p) -> None:
        raise NotImplementedError

    def _call_refine(self, w, c, keep, loss, R, iters, rtol, swaps, searches, active, state) -> None:
        raise NotImplementedError

    def _refine_state(self, R: int, max_iters: int) -> tuple[torch.Tensor, ...] | None:
        """What the fused loop keeps between its calls within one ``refine_batch`` (None: nothing)."""
        return None

    def __call__(self, w: torch.Tensor, c: torch.Tensor, keep: torch.Tensor) -> SwapChoice:
        """Best swap per row of ``w, c, keep`` (R, d); the contract of
        :func:`swappass.kernels.torch_search.search_rows_torch`."""
        w, c, keep = self._inputs(w, c, keep)
        R = w.shape[0]
        delta = torch.empty(R, dtype=self.dtype)
        u, p = torch.empty(R, dtype=torch.long), torch.empty(R, dtype=torch.long)
        if R:
            self._call_search(w, c, keep, R, delta, u, p)
        return SwapChoice(delta, u, p)

    def refine_batch(
        self, w: torch.Tensor, keep: torch.Tensor, G: torch.Tensor, max_iters: int, rtol: float, resync_every: int,
        residual: torch.Tensor | None = None,
        terms: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, int]:
        """:func:`swappass.refine.loop.refine_batch` with the iterations between two exact re-derivations of c run in C++.

        Same decisions and roundings as the Python loop (tested against it): ``keep`` (R, d) is updated in
        place; returns (swaps per row, iterations run). ``G`` is the matrix this search was made from;
        ``terms``: ``(c, loss)`` of ``keep`` already computed by the caller (as the Python loop takes them).
        """
        wc, kc = self._inputs(w, None, keep)
        R = wc.shape[0]
        if terms is None:
            c, loss = row_errors(wc, kc, G, residual=residual)  # in row tiles, exactly as refine_batch
        else:
            c, loss = terms
            if not (c.is_contiguous() and loss.is_contiguous() and c.dtype == loss.dtype == self.dtype
                    and c.shape == wc.shape and loss.shape == (R,)):
                raise InputError(f"cpu refine_batch: terms must be contiguous {self.dtype} ({R}, {self.d}) and ({R},)")
        swaps = torch.zeros(R, dtype=torch.long)
        searches = torch.zeros(R, dtype=torch.long)
        active = torch.ones(R, dtype=torch.uint8)
        state = self._refine_state(R, max_iters)
        it = 0
        while it < max_iters and R and bool(active.any()):
            n = max_iters - it
            if resync_every:
                n = min(n, resync_every - it % resync_every)
            t = time.process_time()
            self._call_refine(wc, c, kc, loss, R, n, float(rtol), swaps, searches, active, state)
            self.loop_cpu_seconds += time.process_time() - t
            it += n
            if resync_every and it % resync_every == 0:  # exactly as refine_batch re-derives c
                resync_rows(wc, kc, G, c, loss, active.nonzero()[:, 0], residual=residual)
        if kc.data_ptr() != keep.data_ptr():
            keep.copy_(kc)
        return swaps, int(searches.max()) if R else 0


class RowSearch(_CompiledSearch):
    """Kept × pruned search per row (per-row patterns).

    A single search (``__call__``) is exhaustive. The fused loop (``refine_batch``) is bound-pruned by default
    (``bounded=True``): it keeps, per row and kept input u, the minimum over the pruned inputs of the part of the
    score that depends on w and G alone, and scores exactly only the u whose lower bound can still beat the best
    pair found (same choice, bit for bit; the source's comment gives the bound). That state costs one
    ``rows × d_in`` array of G's dtype per batch. ``bounded=False``: the exhaustive search every iteration.
    ``passes``: after a bounded ``refine_batch``, its passes over a row of G per row (int64, (R,)): one per kept u
    scored or whose minimum was recomputed; the exhaustive loop makes one per kept u and iteration.
    """

    kind = "rows"

    def __init__(self, lib: ctypes.CDLL, G: torch.Tensor, tile: int = _TILE, bounded: bool = True) -> None:
        super().__init__(lib, G)
        self.bounded = bool(bounded)
        suffix = "f32" if G.dtype == torch.float32 else "f64"
        self._refine_bounded = getattr(lib, f"swappass_refine_rows_bounded_{suffix}")
        self._Gcol: torch.Tensor | None = None  # G's columns as rows (made at the first bounded refinement)
        self.passes: torch.Tensor | None = None
        self.dpad = _round_up(self.d, 4 * self.lanes)  # the inner loop takes 4 vectors per step
        if self.dpad == self.d:
            self.Gpad = G  # no padding needed (d_in a multiple of 64 / 32): no copy of G
        else:
            self.Gpad = torch.zeros(self.d, self.dpad, dtype=G.dtype)
            self.Gpad[:, : self.d] = G
        self.tile = max(1, min(_MAX_TILE, int(tile)))

    def _tile(self, R: int, threads: int) -> int:
        return max(1, min(self.tile, -(-R // threads)))  # enough tiles for every thread

    def _call_search(self, w, c, keep, R, delta, u, p) -> None:
        threads = torch.get_num_threads()
        self._search(_ptr(w), _ptr(c), _ptr(keep), _ptr(self.Gpad), _ptr(self.gdiag), R, self.d, self.dpad,
                     self._tile(R, threads), threads, _ptr(delta), _ptr(u), _ptr(p))

    def _refine_state(self, R: int, max_iters: int) -> tuple[torch.Tensor, ...] | None:
        if not self.bounded or max_iters < 2:  # the bound's set-up costs one exhaustive search: it pays from 2 on
            return None
        if self._Gcol is None:  # G itself when exactly symmetric (a Gram matrix), else its transpose
            G = self.Gpad[:, : self.d]
            self._Gcol = self.Gpad if torch.equal(G, G.T) else G.T.contiguous()
        self.passes = torch.zeros(R, dtype=torch.long)
        return torch.empty(R, self.d, dtype=self.dtype), torch.zeros(R, dtype=torch.uint8)  # minima, valid

    def _call_refine(self, w, c, keep, loss, R, iters, rtol, swaps, searches, active, state) -> None:
        threads = torch.get_num_threads()
        if state is not None:
            minima, valid = state
            self._refine_bounded(_ptr(w), _ptr(c), _ptr(keep), _ptr(loss), _ptr(self.Gpad), _ptr(self._Gcol),
                                 self._Gcol.stride(0), _ptr(self.gdiag), R, self.d, self.dpad, iters, rtol, threads,
                                 _ptr(swaps), _ptr(searches), _ptr(active), _ptr(minima), _ptr(valid),
                                 _ptr(self.passes))
            return
        self._refine(_ptr(w), _ptr(c), _ptr(keep), _ptr(loss), _ptr(self.Gpad), _ptr(self.gdiag), R, self.d,
                     self.dpad, self._tile(R, threads), iters, rtol, threads, _ptr(swaps), _ptr(searches),
                     _ptr(active))


class NMSearch(_CompiledSearch):
    """Search inside each block of ``m`` consecutive inputs (N:M patterns)."""

    kind = "nm"

    def __init__(self, lib: ctypes.CDLL, G: torch.Tensor, m: int) -> None:
        super().__init__(lib, G)
        if self.d % m:
            raise InputError(f"cpu swap search: d_in = {self.d} is not divisible by M = {m}")
        self.m = m
        nb = self.d // m
        blocks = nm_diag_blocks(G, m)  # (nb, m, m)
        if m in _IN_LANE_M:  # blocks fit inside a vector: GT[j, x] = G[x, (x // m) * m + j]
            self.nbp = _round_up(self.d, self.lanes)
            self.GT = torch.zeros(m, self.nbp, dtype=G.dtype)
            self.GT[:, : self.d] = blocks.reshape(self.d, m).T
        else:  # de-interleaved blocks: GT[i, j, k] = G[k*m + i, k*m + j]
            self.nbp = _round_up(nb, self.lanes)
            self.GT = torch.zeros(m, m, self.nbp, dtype=G.dtype)
            self.GT[:, :, :nb] = blocks.permute(1, 2, 0)
        self.G = G  # its rows update c in the fused loop

    def _call_search(self, w, c, keep, R, delta, u, p) -> None:
        self._search(_ptr(w), _ptr(c), _ptr(keep), _ptr(self.GT), _ptr(self.gdiag), R, self.d, self.m, self.nbp,
                     torch.get_num_threads(), _ptr(delta), _ptr(u), _ptr(p))

    def _call_refine(self, w, c, keep, loss, R, iters, rtol, swaps, searches, active, state) -> None:
        self._refine(_ptr(w), _ptr(c), _ptr(keep), _ptr(loss), _ptr(self.GT), _ptr(self.G), _ptr(self.gdiag), R,
                     self.d, self.m, self.nbp, iters, rtol, torch.get_num_threads(), _ptr(swaps), _ptr(searches),
                     _ptr(active))


def available(device: torch.device) -> bool:
    """The backend serves CPU tensors (the build happens at first :func:`make_search`)."""
    return torch.device(device).type == "cpu"


def make_search(pattern: SparsityPattern, G: torch.Tensor) -> SearchFn:
    """The compiled search for ``pattern`` over the symmetric ``G`` (d × d, float32/float64, CPU).

    Falls back to the plain torch search, with one warning per process, if the kernel cannot be built;
    other dtypes use the torch search silently. ``SWAPPASS_CPU_BOUND=0`` in the environment turns the
    bound-pruned refinement loop of per-row patterns off (the exhaustive loop; the same masks, slower).
    """
    if not isinstance(pattern, (RowSparsity, NMSparsity)):
        raise TypeError(f"cpu swap search handles per-row and N:M patterns, got {pattern}")
    if G.dim() != 2 or G.shape[0] != G.shape[1] or G.device.type != "cpu":
        raise InputError(f"cpu swap search: G must be a square CPU matrix, got {tuple(G.shape)} on {G.device}")
    if G.dtype not in (torch.float32, torch.float64):
        return make_torch_search(pattern, G)
    try:
        lib = load_library()
    except CPUKernelUnavailable:
        _LOADER.warn_once()
        return make_torch_search(pattern, G)
    G = G.contiguous()
    if isinstance(pattern, NMSparsity):
        return NMSearch(lib, G, pattern.m)
    return RowSearch(lib, G, bounded=os.environ.get("SWAPPASS_CPU_BOUND", "1") != "0")
