/* The EMU execution layer as seen from C: device-memory accounting and limits, for tests and
 * for checking the memory planner against what a run really allocates. */
#ifndef DOPPEL_EMU_API_H
#define DOPPEL_EMU_API_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

size_t dp_emu_device_bytes(void);      /* "device" bytes allocated now */
size_t dp_emu_device_peak_bytes(void); /* the most ever allocated at once since the last reset */
void dp_emu_reset_peak(void);          /* peak := current */
/* Emulated device capacity (0 = unlimited): an allocation past it fails with
 * cudaErrorMemoryAllocation, as on a card with that much memory. */
void dp_emu_set_device_limit(size_t bytes);
/* Kernel launches, blocks and fiber switches since start-up (for the tests' reports). */
void dp_emu_counters(size_t *launches, size_t *blocks, size_t *switches);

#ifdef __cplusplus
}
#endif
#endif
