// The __NAME__ service: a small HTTP server on the standard library, on $PORT (default 8080).
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
)

// newHandler answers GET /healthz with "ok" and GET / with the service's name.
func newHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintln(w, `{"service":"__NAME__"}`)
	})
	return mux
}

func address() string {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	return ":" + port
}

func main() {
	addr := address()
	log.Printf("__NAME__: listening on %s", addr)
	log.Fatal(http.ListenAndServe(addr, newHandler()))
}
