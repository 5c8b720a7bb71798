// How fast one and two threads read 178 MiB (the 270M's q8_0 output projection) from 4 KiB
// pages and from 2 MiB transparent huge pages (madvise(MADV_HUGEPAGE)): the measurement behind
// copying the CPU's weights onto huge pages (gemma-gguf/src/model.rs, copy_weights; README,
// "Speed against llama.cpp"). Best of 20 reads each; prints GB/s, then AnonHugePages.
//
//   gcc -O2 -mavx512f -fopenmp scripts/page_bandwidth.c -o target/page_bandwidth
//   target/page_bandwidth
//
// x86-64 with AVX-512 only (the reads are 512-bit loads).
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define SIZE ((size_t)178 << 20)
#define HUGE ((size_t)2 << 20)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

// Sums the buffer's 32-bit lanes over `threads` threads, each reading its own contiguous part.
static long long read_all(const char *buf, int threads) {
    long long total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
        size_t part = SIZE / threads;
        const char *p = buf + omp_get_thread_num() * part;
        __m512i acc = _mm512_setzero_si512();
        for (size_t i = 0; i < part; i += 256) {
            acc = _mm512_add_epi32(acc, _mm512_load_si512(p + i));
            acc = _mm512_add_epi32(acc, _mm512_load_si512(p + i + 64));
            acc = _mm512_add_epi32(acc, _mm512_load_si512(p + i + 128));
            acc = _mm512_add_epi32(acc, _mm512_load_si512(p + i + 192));
        }
        total += _mm512_reduce_add_epi32(acc);
    }
    return total;
}

int main(void) {
    for (int huge = 0; huge < 2; huge++) {
        char *map = mmap(NULL, SIZE + HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (map == MAP_FAILED) {
            perror("mmap");
            return 1;
        }
        char *buf = (char *)(((size_t)map + HUGE - 1) & ~(HUGE - 1));
        madvise(buf, SIZE, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
        memset(buf, 1, SIZE);
        for (int threads = 1; threads <= 2; threads++) {
            double best = 1e9;
            long long sink = 0;
            for (int r = 0; r < 20; r++) {
                double t0 = now();
                sink += read_all(buf, threads);
                double dt = now() - t0;
                best = dt < best ? dt : best;
            }
            printf("%s pages, %d thread(s): %.2f ms per 178 MiB, %.1f GB/s (checksum %lld)\n",
                   huge ? "2 MiB" : "4 KiB", threads, best * 1e3, SIZE / best / 1e9, sink);
        }
    }
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "AnonHugePages")) fputs(line, stdout);
    return 0;
}
