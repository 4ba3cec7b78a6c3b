/* Relaxed atomics on ints: the runtime's count of calls in flight, and flags that the threads
   of one call share (an abort flag).  Relaxed: they order nothing else. */
#ifndef SFER_ATOMIC_H
#define SFER_ATOMIC_H

static inline int sfer_atomic_add(int *p, int v) { return __atomic_add_fetch(p, v, __ATOMIC_RELAXED); }
static inline int sfer_atomic_load(int *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void sfer_atomic_store(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

#endif  /* SFER_ATOMIC_H */
