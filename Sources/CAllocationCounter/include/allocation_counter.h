#pragma once
/* Counts heap allocations of the process that links this target (the coordinator and the test
 * runner; never the library or the worker): malloc, calloc, realloc, memalign, aligned_alloc and
 * posix_memalign are defined here, count, and forward to glibc's own implementations. */

/* 1 where the counters work (glibc), 0 elsewhere (every count then stays 0). */
int neumeta_allocation_counting(void);

/* Allocation calls and requested bytes since the process started: of all threads, and of the
 * calling thread only. */
unsigned long long neumeta_allocations_total(void);
unsigned long long neumeta_allocated_bytes_total(void);
unsigned long long neumeta_allocations_this_thread(void);
unsigned long long neumeta_allocated_bytes_this_thread(void);
