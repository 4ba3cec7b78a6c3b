/* The CPUs in this thread's affinity mask, as os.sched_getaffinity(0) counts them, without
   building a Python set (sfer._runtime.runnable_cpus asks on every large call that may run more
   threads than CPUs); -1 where there is no such call or it fails (more than CPU_SETSIZE CPUs):
   the caller then asks Python. */
#ifndef SFER_CPUS_H
#define SFER_CPUS_H

#if defined(__linux__)
#include <sched.h>
static inline int sfer_affinity_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) != 0)
        return -1;
    return CPU_COUNT(&set);
}
#else
static inline int sfer_affinity_cpus(void) { return -1; }
#endif

#endif  /* SFER_CPUS_H */
