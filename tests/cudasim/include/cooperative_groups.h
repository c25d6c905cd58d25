// cudasim stand-in for <cooperative_groups.h>: this_grid().sync() is the emulator's grid barrier
// (an error in a launch that is not cooperative).
#pragma once
#include "cudasim_runtime.h"

namespace cooperative_groups {

struct grid_group {
    void sync(const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        ::cudasim::grid_sync(file, line);
    }
    unsigned long long size() const {
        return 1ull * gridDim.x * gridDim.y * gridDim.z * blockDim.x * blockDim.y * blockDim.z;
    }
};

inline grid_group this_grid() { return grid_group{}; }

}  // namespace cooperative_groups
