// Package httpapi serves /metrics, /healthz and /readyz for the long-running
// commands. /metrics and /healthz answer whatever state the agent is in
// (libvirtd unreachable included): that is when an operator needs them.
package httpapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/internal/version"
	"github.com/rarp-announce/rarp-announce/pkg/metricset"
)

// NewRegistry returns a registry with the Go and process collectors and
// rarp_announce_build_info.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	v, rev := version.Get()
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace:   metricset.Namespace,
		Name:        "build_info",
		Help:        "Always 1; the labels say which build of rarp-announce is running.",
		ConstLabels: prometheus.Labels{"version": v, "revision": rev, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	reg.MustRegister(buildInfo, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Server is the HTTP endpoint.
type Server struct {
	srv *http.Server
	ln  net.Listener
	log *zap.Logger
}

// Listen binds addr now, so a port conflict fails the start (exit 1)
// instead of being logged later. ready says whether /readyz is 200.
func Listen(addr string, reg *prometheus.Registry, ready func() (bool, string), log *zap.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := true, "ready"
		if ready != nil {
			ok, why = ready()
		}
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = w.Write([]byte(why + "\n"))
	})
	s := &Server{
		// A scraper that stalls or keeps idle connections open must not
		// hold goroutines and sockets of the agent for ever.
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          zap.NewStdLog(log),
		},
		ln:  ln,
		log: log,
	}
	return s, nil
}

// Addr is the bound address (useful with port 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until ctx is done, then shuts down.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err := s.srv.Shutdown(sctx)
		if e := <-errc; !errors.Is(e, http.ErrServerClosed) && err == nil {
			err = e
		}
		return err
	}
}
