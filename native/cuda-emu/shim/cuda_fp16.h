// Stands in for CUDA's cuda_fp16.h when kernels/*.cu are compiled for the CPU emulator: everything is in cuda_emu.h.
#pragma once
#include "../cuda_emu.h"
