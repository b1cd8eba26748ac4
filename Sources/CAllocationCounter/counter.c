#include "allocation_counter.h"
#include <stdlib.h> /* defines __GLIBC__ on glibc */

#if defined(__GLIBC__)
#include <errno.h>
#include <stdatomic.h>

/* glibc's allocator under its internal names (exported since GLIBC_2.2.5); `free` is not
 * wrapped, so memory from these is released by glibc's free as usual. */
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *pointer, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);

static _Atomic unsigned long long total_calls, total_bytes;
/* Initial-exec TLS of the executable: reading it never allocates. */
static _Thread_local unsigned long long thread_calls, thread_bytes;

static inline void count(size_t bytes) {
    atomic_fetch_add_explicit(&total_calls, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&total_bytes, bytes, memory_order_relaxed);
    thread_calls += 1;
    thread_bytes += bytes;
}

void *malloc(size_t size) { count(size); return __libc_malloc(size); }
void *calloc(size_t n, size_t size) { count(n * size); return __libc_calloc(n, size); }
void *realloc(void *pointer, size_t size) { count(size); return __libc_realloc(pointer, size); }
void *memalign(size_t alignment, size_t size) { count(size); return __libc_memalign(alignment, size); }
void *aligned_alloc(size_t alignment, size_t size) { count(size); return __libc_memalign(alignment, size); }

int posix_memalign(void **out, size_t alignment, size_t size) {
    if (alignment == 0 || alignment % sizeof(void *) != 0 || (alignment & (alignment - 1)) != 0) return EINVAL;
    count(size);
    void *p = __libc_memalign(alignment, size);
    if (p == NULL) return ENOMEM;
    *out = p;
    return 0;
}

int neumeta_allocation_counting(void) { return 1; }
unsigned long long neumeta_allocations_total(void) { return atomic_load_explicit(&total_calls, memory_order_relaxed); }
unsigned long long neumeta_allocated_bytes_total(void) { return atomic_load_explicit(&total_bytes, memory_order_relaxed); }
unsigned long long neumeta_allocations_this_thread(void) { return thread_calls; }
unsigned long long neumeta_allocated_bytes_this_thread(void) { return thread_bytes; }

#else

int neumeta_allocation_counting(void) { return 0; }
unsigned long long neumeta_allocations_total(void) { return 0; }
unsigned long long neumeta_allocated_bytes_total(void) { return 0; }
unsigned long long neumeta_allocations_this_thread(void) { return 0; }
unsigned long long neumeta_allocated_bytes_this_thread(void) { return 0; }

#endif
