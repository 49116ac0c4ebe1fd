package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHealthzAnswersOk(t *testing.T) {
	rec := httptest.NewRecorder()
	newHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if rec.Code != http.StatusOK || rec.Body.String() != "ok\n" {
		t.Fatalf("GET /healthz = %d %q", rec.Code, rec.Body.String())
	}
}

func TestUnknownPathIs404(t *testing.T) {
	rec := httptest.NewRecorder()
	newHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/missing", nil))
	if rec.Code != http.StatusNotFound {
		t.Fatalf("GET /missing = %d", rec.Code)
	}
}

func TestAddressDefaultsTo8080(t *testing.T) {
	t.Setenv("PORT", "")
	if got := address(); got != ":8080" {
		t.Fatalf("address() = %q", got)
	}
}
