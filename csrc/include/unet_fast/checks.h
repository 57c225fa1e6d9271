// Argument checks for the bindings, in one place. The Python launchers validate everything first with
// clear ValueErrors; these re-check what could make a kernel read or write out of bounds.
#pragma once

#include <sstream>
#include <stdexcept>

#define UF_CHECK(cond, msg)                                                              \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::ostringstream uf_os_;                                                         \
      uf_os_ << __func__ << ": " << msg << " (failed: " #cond ")";                       \
      throw std::invalid_argument(uf_os_.str());                                         \
    }                                                                                    \
  } while (0)

#define UF_CHECK_POSITIVE(x) UF_CHECK((x) > 0, #x " must be positive, got " << (x))
#define UF_CHECK_NONNEG(x) UF_CHECK((x) >= 0, #x " must be non-negative, got " << (x))
#define UF_CHECK_PTR(p) UF_CHECK((p) != 0, #p " is a null pointer")
