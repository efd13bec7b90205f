/* A WAGI handler in C: the request comes in as CGI environment variables
 * (the body on stdin); the response goes out on stdout as header lines, a
 * blank line, then the body.
 *
 * Built with Debian's clang + wasi-libc (`make examples` at the top level):
 *   clang --target=wasm32-wasi -O2 -s hello.c -o hello.wasm */
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    const char *greeting = getenv("GREETING");       /* a plain_text binding */
    printf("Content-Type: text/plain\n\n");
    printf("Hello from C over WAGI! %s %s\n", getenv("REQUEST_METHOD"), getenv("PATH_INFO"));
    if (greeting) printf("GREETING=%s\n", greeting);
    return 0;
}
