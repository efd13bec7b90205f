/* The main module of the isqrt example: a WAGI handler (WASI preview1
 * command) whose q_rsqrt comes from another WebAssembly module, bound by
 * the name "isqrt" (see metadata.json).
 *
 * clang --target=wasm32-wasi -O2 -s -o main.wasm main.c */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((import_module("isqrt"), import_name("_Z7Q_rsqrtf")))
float q_rsqrt(float);

/* The value of the `n=` pair in QUERY_STRING, or 4. */
static float query_n(void) {
    const char *query = getenv("QUERY_STRING");
    for (const char *pair = query; pair && *pair; ) {
        if (strncmp(pair, "n=", 2) == 0)
            return strtof(pair + 2, NULL);
        pair = strchr(pair, '&');
        if (pair)
            pair++;
    }
    return 4;
}

int main(void) {
    float n = query_n();
    printf("Content-Type: text/plain\n\n");
    printf("Q_rsqrt(%g) = %f\n", n, q_rsqrt(n));
    return 0;
}
