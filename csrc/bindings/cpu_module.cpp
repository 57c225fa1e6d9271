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

// The variant registry as Python sees it: one dict per entry, registry order (= the ops' `isa` index).
static py::list cpu_isa_table() {
  py::list rows;
  const auto& table = unet_fast::cpu_variants();
  for (std::size_t i = 0; i < table.size(); ++i) {
    const unet_fast::CpuVariant& v = table[i];
    const unet_fast::CpuVariantOps& ops = v.ops();
    py::dict row;
    row["name"] = v.name;
    row["index"] = static_cast<int>(i);
    row["target"] = v.target;
    row["rank"] = v.rank;
    row["runnable"] = unet_fast::cpu_variant_runnable(static_cast<int>(i));
    row["lanes"] = ops.lanes;
    row["winograd_mr"] = ops.winograd.mr;
    row["winograd_nr"] = ops.winograd.nr;
    row["conv_transpose_mr"] = ops.conv_transpose.mr;
    row["conv_transpose_nr"] = ops.conv_transpose.nr;
    rows.append(row);
  }
  return rows;
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
        "Names of the CPU kernel variants this CPU and OS can run, registry order (csrc/include/unet_fast/cpu_isa.h).");
  m.def("cpu_isa_table", &cpu_isa_table,
        "The CPU kernel variant registry: name, index (the ops' `isa`), target, rank, runnable, lanes and the "
        "Winograd / transposed-conv register blocking (mr x nr; nr = the packed weight's block width).");
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
