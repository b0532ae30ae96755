// Package fenced is the fenced resource of the fault-injection runs: a small
// loopback HTTP server standing in for the database a lease holder writes
// to. Every write carries (domain, epoch, holder, seq); the resource
// rejects a write whose epoch is below the highest it has seen for the
// domain, and records every accept and reject in the run's history.
//
// The negative control (build tag jepsen_mutants) adds NewMutant: a resource
// that ignores epochs, which the NoOverlappingPrimaries checker must catch.
package fenced

import (
	"encoding/json"
	"net"
	"net/http"
	"sync"

	"github.com/aerodb/authority/jepsen-like/history"
)

// Write is one write to the resource.
type Write struct {
	Domain string `json:"domain"`
	Epoch  uint64 `json:"epoch"`
	Holder string `json:"holder"`
	Seq    uint64 `json:"seq"`
}

// Reply answers a write.
type Reply struct {
	Accepted bool   `json:"accepted"`
	Highest  uint64 `json:"highest"`
}

// Server is the fenced resource.
type Server struct {
	h   *history.Writer
	srv *http.Server
	ln  net.Listener

	ignoreEpochs bool // the mutant

	mu      sync.Mutex
	highest map[string]uint64
	last    map[string]string
	Accepts int
	Rejects int
}

// Start serves on a free loopback port, recording into h.
func Start(h *history.Writer) (*Server, error) { return start(h, false) }

func start(h *history.Writer, ignoreEpochs bool) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{h: h, ln: ln, highest: map[string]uint64{}, last: map[string]string{}, ignoreEpochs: ignoreEpochs}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /write", s.handle)
	s.srv = &http.Server{Handler: mux}
	go s.srv.Serve(ln)
	return s, nil
}

// URL of the write endpoint.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() + "/write" }

// Close stops the server.
func (s *Server) Close() error { return s.srv.Close() }

// Apply decides one write and records it (the decision and its record are
// one atomic step, so the history's order is the resource's order).
func (s *Server) Apply(w Write) Reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.highest[w.Domain]
	ok := w.Epoch >= h || s.ignoreEpochs
	typ := history.FencedReject
	if ok {
		typ = history.FencedAccept
		s.highest[w.Domain] = max(h, w.Epoch)
		s.Accepts++
		s.last[w.Domain] = w.Holder
	} else {
		s.Rejects++
	}
	s.h.Add(history.Record{Kind: history.KindFenced, Type: typ, Domain: w.Domain,
		Value: history.Value{Epoch: w.Epoch, Holder: w.Holder, Seq: w.Seq}})
	return Reply{Accepted: ok, Highest: s.highest[w.Domain]}
}

func (s *Server) handle(rw http.ResponseWriter, r *http.Request) {
	var w Write
	if err := json.NewDecoder(r.Body).Decode(&w); err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	rep := s.Apply(w)
	rw.Header().Set("Content-Type", "application/json")
	if !rep.Accepted {
		rw.WriteHeader(http.StatusConflict)
	}
	json.NewEncoder(rw).Encode(rep)
}

// LastHolder is the holder of the domain's last accepted write.
func (s *Server) LastHolder(domain string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last[domain]
}

// RejectCount is how many writes were rejected so far.
func (s *Server) RejectCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.Rejects
}
