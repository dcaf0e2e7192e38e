package kairostest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
)

// adminPrefix is where the admin paths live; every other path is the API.
const adminPrefix = "/_emulator/"

// Admin paths, relative to the emulator's root.
const (
	// StatsPath serves GET: the Stats as JSON.
	StatsPath = adminPrefix + "stats"
	// FaultsPath serves POST: a JSON Faults replacing the current ones; 204.
	FaultsPath = adminPrefix + "faults"
	// ResetPath serves POST: Reset; 204.
	ResetPath = adminPrefix + "reset"
)

// maxAdminBody caps an admin request body.
const maxAdminBody = 64 << 10

func (e *Emulator) serveAdmin(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	switch strings.TrimSuffix(r.URL.Path, "/") {
	case StatsPath:
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			adminError(w, http.StatusMethodNotAllowed, "use GET")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(e.Stats())
	case FaultsPath:
		if r.Method != http.MethodPost {
			adminError(w, http.StatusMethodNotAllowed, "use POST")
			return
		}
		b, err := io.ReadAll(io.LimitReader(r.Body, maxAdminBody))
		if err != nil {
			adminError(w, http.StatusBadRequest, "cannot read the body")
			return
		}
		var f Faults
		if len(strings.TrimSpace(string(b))) > 0 {
			if err := json.Unmarshal(b, &f); err != nil {
				adminError(w, http.StatusBadRequest, err.Error())
				return
			}
		}
		if err := e.SetFaults(f); err != nil {
			adminError(w, http.StatusBadRequest, err.Error())
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case ResetPath:
		if r.Method != http.MethodPost {
			adminError(w, http.StatusMethodNotAllowed, "use POST")
			return
		}
		e.Reset()
		w.WriteHeader(http.StatusNoContent)
	default:
		adminError(w, http.StatusNotFound, "unknown admin path")
	}
}

func adminError(w http.ResponseWriter, status int, msg string) {
	b, _ := json.Marshal(errorBody{Errors: []errorEntry{{Message: msg, ErrCode: status}}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
