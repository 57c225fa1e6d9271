// The CPU variant table generated from UF_CPU_VARIANTS (unet_fast/cpu_isa.h), the run-time dispatch of both
// kinds of rows, and the table as Python sees it (`unet_fast._C.cpu_isa_table()`).
#include "unet_fast/cpu_isa.h"

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "unet_fast/amx/conv_bf16.h"
#include "unet_fast/checks.h"
#include "unet_fast/cpu_variant.h"

namespace py = pybind11;

namespace unet_fast {

namespace {
const CpuVariantOps* no_vector_ops() { return nullptr; }
const amx::TileOps* no_tile_ops() { return nullptr; }
}  // namespace

const std::vector<CpuVariant>& cpu_variants() {
#define UF_KIND_VECTOR VariantKind::kVector
#define UF_KIND_TILES VariantKind::kTiles
#define UF_OPS_VECTOR(id) +[]() -> const CpuVariantOps* { return &ops_##id(); }, &no_tile_ops
#define UF_OPS_TILES(id) &no_vector_ops, +[]() -> const amx::TileOps* { return &tile_ops_##id(); }
#define UF_ENTRY(id, name, kind, target, isa, rank, emulator, detect, reason)                               \
  CpuVariant{name, UF_KIND_##kind, target, isa, rank, emulator, +[]() -> bool { return detect; },           \
             +[]() -> std::string { return reason; }, UF_OPS_##kind(id)},
  static const std::vector<CpuVariant> table{UF_CPU_VARIANTS(UF_ENTRY)};
#undef UF_ENTRY
#undef UF_OPS_TILES
#undef UF_OPS_VECTOR
#undef UF_KIND_TILES
#undef UF_KIND_VECTOR
  return table;
}

bool cpu_variant_runnable(int index) {
  static const std::vector<bool> runnable = [] {
    std::vector<bool> r;
    for (const CpuVariant& v : cpu_variants()) r.push_back(v.detect());
    return r;
  }();
  return index >= 0 && index < static_cast<int>(runnable.size()) && runnable[static_cast<std::size_t>(index)];
}

namespace {
const CpuVariant& checked_row(int index, VariantKind kind) {
  const auto& table = cpu_variants();
  const char* what = kind == VariantKind::kVector ? "CPU kernel variant" : "bf16 tile backend";
  UF_CHECK(index >= 0 && index < static_cast<int>(table.size()),
           "unknown " << what << " index " << index << " (the table has " << table.size() << " rows)");
  const CpuVariant& v = table[static_cast<std::size_t>(index)];
  UF_CHECK(v.kind == kind, "row " << index << " ('" << v.name << "') is not a " << what);
  UF_CHECK(cpu_variant_runnable(index), what << " '" << v.name << "' cannot run here: " << v.reason());
  return v;
}
}  // namespace

const CpuVariantOps& cpu_variant(int isa) { return *checked_row(isa, VariantKind::kVector).vector_ops(); }

const amx::TileOps& tile_variant(int backend) { return *checked_row(backend, VariantKind::kTiles).tile_ops(); }

std::vector<std::string> available_isas() {
  std::vector<std::string> names;
  const auto& table = cpu_variants();
  for (std::size_t i = 0; i < table.size(); ++i)
    if (table[i].kind == VariantKind::kVector && cpu_variant_runnable(static_cast<int>(i)))
      names.emplace_back(table[i].name);
  return names;
}

// The table as Python sees it: one dict per row, table order (= the ops' `isa` / `backend` index). What each
// kind of row provides (dtypes, ops) and the blocking its packed weights follow come from the row's entry
// points, so the Python mirror (unet_fast/kernels/cpu_isa.py) copies nothing by hand.
py::list cpu_isa_table() {
  py::list rows;
  const auto& table = cpu_variants();
  for (std::size_t i = 0; i < table.size(); ++i) {
    const CpuVariant& v = table[i];
    const bool vector = v.kind == VariantKind::kVector;
    py::dict row;
    row["name"] = v.name;
    row["index"] = static_cast<int>(i);
    row["kind"] = vector ? "vector" : "tiles";
    row["target"] = v.target;
    row["isa"] = v.isa;
    row["rank"] = v.rank;
    row["emulator"] = v.emulator;
    row["runnable"] = cpu_variant_runnable(static_cast<int>(i));
    row["reason"] = v.reason();
    if (vector) {
      const CpuVariantOps& ops = *v.vector_ops();
      row["dtypes"] = std::vector<std::string>{"float32", "bfloat16"};  // bf16: the Winograd's activations
      row["ops"] = std::vector<std::string>{"winograd_conv3x3", "conv_transpose2x2", "head", "gather_view",
                                            "maxpool2x2", "activation"};
      row["lanes"] = ops.lanes;
      row["winograd_mr"] = ops.winograd.mr;
      row["winograd_nr"] = ops.winograd.nr;
      row["conv_transpose_mr"] = ops.conv_transpose.mr;
      row["conv_transpose_nr"] = ops.conv_transpose.nr;
    } else {
      const amx::TileOps& ops = *v.tile_ops();
      row["dtypes"] = std::vector<std::string>{"bfloat16"};
      row["ops"] = std::vector<std::string>{"conv2d", "conv_transpose2x2", "head", "tile_dot", "tile_peak"};
      row["direct_conv"] = ops.direct_conv;
      row["chunk_cin"] = ops.chunk_cin;
      row["block_cout"] = ops.block_cout;
      row["block_pixels"] = ops.block_pixels;
      row["tile_rows"] = ops.tile_rows;
      row["max_sources"] = ops.max_sources;
    }
    rows.append(row);
  }
  return rows;
}

}  // namespace unet_fast
