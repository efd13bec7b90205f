// A WAGI handler in Go: the request comes in as CGI environment variables
// (the body on stdin); the response goes out on stdout as header lines, a
// blank line, then the body.
//
// Built with Go 1.21+ (GOOS=wasip1 makes a WASI preview1 command, `_start`):
//
//	GOOS=wasip1 GOARCH=wasm go build -ldflags='-s -w' -o hello.wasm .
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
)

func main() {
	body, err := io.ReadAll(os.Stdin) // the request body (empty for a GET)
	if err != nil {
		fmt.Fprintln(os.Stderr, "reading the request body:", err) // goes to the log
		os.Exit(1)                                                // wasmgate answers 500
	}

	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()

	fmt.Fprint(out, "Content-Type: text/plain\n\n")
	fmt.Fprintf(out, "hello from Go %s %s\n", os.Getenv("REQUEST_METHOD"), os.Getenv("PATH_INFO"))
	fmt.Fprintf(out, "query: %s\n", os.Getenv("QUERY_STRING"))
	if greeting, ok := os.LookupEnv("GREETING"); ok { // a plain_text binding
		fmt.Fprintf(out, "greeting: %s\n", greeting)
	}
	fmt.Fprintf(out, "body (%d bytes): %s\n", len(body), body)
}
