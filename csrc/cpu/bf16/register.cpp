// The standalone bf16 ops' bindings in one call (csrc/bindings/cpu_module.cpp calls register_bf16_ops).
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace unet_fast {
namespace bf16ops {
void register_maxpool2x2_bf16(py::module_& m);
void register_gather_view_bf16(py::module_& m);
void register_head_bf16(py::module_& m);

void register_bf16_ops(py::module_& m) {
  register_maxpool2x2_bf16(m);
  register_gather_view_bf16(m);
  register_head_bf16(m);
}
}  // namespace bf16ops
}  // namespace unet_fast
