// The variant table generated from the registry (unet_fast/cpu_isa.h) and the run-time choice.
#include "unet_fast/cpu_isa.h"

#include <string>
#include <vector>

#include "unet_fast/checks.h"
#include "unet_fast/cpu_variant.h"

namespace unet_fast {

const std::vector<CpuVariant>& cpu_variants() {
#define UF_ENTRY(id, target, rank, detect) CpuVariant{#id, target, rank, +[]() -> bool { return detect; }, &ops_##id},
  static const std::vector<CpuVariant> table{UF_CPU_VARIANTS(UF_ENTRY)};
#undef UF_ENTRY
  return table;
}

bool cpu_variant_runnable(int isa) {
  static const std::vector<bool> runnable = [] {
    std::vector<bool> r;
    for (const CpuVariant& v : cpu_variants()) r.push_back(v.detect());
    return r;
  }();
  return isa >= 0 && isa < static_cast<int>(runnable.size()) && runnable[static_cast<std::size_t>(isa)];
}

const CpuVariantOps& cpu_variant(int isa) {
  const auto& table = cpu_variants();
  UF_CHECK(isa >= 0 && isa < static_cast<int>(table.size()),
           "unknown CPU kernel variant index " << isa << " (the registry has " << table.size() << ")");
  UF_CHECK(cpu_variant_runnable(isa), "CPU kernel variant '" << table[static_cast<std::size_t>(isa)].name
                                                             << "' cannot run on this CPU / OS");
  return table[static_cast<std::size_t>(isa)].ops();
}

std::vector<std::string> available_isas() {
  std::vector<std::string> names;
  const auto& table = cpu_variants();
  for (std::size_t i = 0; i < table.size(); ++i)
    if (cpu_variant_runnable(static_cast<int>(i))) names.emplace_back(table[i].name);
  return names;
}

}  // namespace unet_fast
