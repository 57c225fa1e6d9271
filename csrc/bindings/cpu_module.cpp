// unet_fast._C: the C++ CPU ops. Each op file defines register_<op>(m); add one line per op here.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "unet_fast/cpu_isa.h"
#include "unet_fast/cpu_variant.h"

namespace py = pybind11;

namespace unet_fast {
void register_activation(py::module_& m);
void register_maxpool2x2(py::module_& m);
void register_upsample_concat(py::module_& m);
void register_conv_epilogue(py::module_& m);
void register_head(py::module_& m);
void register_conv_transpose2x2(py::module_& m);
void register_winograd(py::module_& m);
void register_conv_bf16(py::module_& m);  // csrc/cpu/amx/
py::list cpu_isa_table();                  // csrc/cpu/cpu_isa.cpp
namespace bf16ops {
void register_bf16_ops(py::module_& m);  // csrc/cpu/bf16/
}
}  // namespace unet_fast

#ifndef UNET_FAST_GIT_COMMIT
#define UNET_FAST_GIT_COMMIT "unknown"
#endif

static py::dict build_info() {
  py::dict info;
  info["git_commit"] = UNET_FAST_GIT_COMMIT;
  info["compiler"] = __VERSION__;
  info["cplusplus"] = static_cast<long>(__cplusplus);
#ifdef _OPENMP
  info["openmp"] = static_cast<int>(_OPENMP);
#else
  info["openmp"] = py::none();
#endif
  return info;
}

static int omp_max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "unet_fast C++ CPU ops (raw pointers; the Python launchers in unet_fast.kernels.cpu check arguments)";
  m.def("build_info", &build_info, "Compile-time metadata: compiler, OpenMP version, git commit.");
  m.def("omp_max_threads", &omp_max_threads, "omp_get_max_threads() as seen by this module's OpenMP runtime.");
  m.def("cpu_isas", &unet_fast::available_isas,
        "Names of the vector variants this CPU and OS can run, table order (csrc/include/unet_fast/cpu_isa.h).");
  m.def("cpu_isa_table", &unet_fast::cpu_isa_table,
        "The CPU variant table (csrc/include/unet_fast/cpu_isa.h), vector variants and bf16 tile backends: name, "
        "index (the ops' `isa` / `backend`), kind, target, isa, rank, emulator, runnable, reason, dtypes, ops, and "
        "the blocking (vector: lanes, Winograd / transposed-conv mr x nr, nr = the packed weight's block width; "
        "tiles: chunk_cin, block_cout, block_pixels, tile_rows, max_sources).");
  unet_fast::register_activation(m);
  unet_fast::register_maxpool2x2(m);
  unet_fast::register_upsample_concat(m);
  unet_fast::register_conv_epilogue(m);
  unet_fast::register_head(m);
  unet_fast::register_conv_transpose2x2(m);
  unet_fast::register_winograd(m);
  unet_fast::register_conv_bf16(m);
  unet_fast::bf16ops::register_bf16_ops(m);
}
