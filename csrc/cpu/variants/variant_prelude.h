// What every variant file includes before opening its namespace (and target region): the standard headers
// and the shared per-element math the kernel bodies use. Included outside any target region, so nothing
// here is compiled for a variant's instruction set except where a body inlines it.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "unet_fast/amx/bf16.h"
#include "unet_fast/amx/conv_bf16.h"
#include "unet_fast/cpu_isa.h"
#include "unet_fast/cpu_pool.h"
#include "unet_fast/cpu_variant.h"
#include "unet_fast/epilogue.h"
#include "unet_fast/pixel_ops.h"
#include "unet_fast/resample.h"
