package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/shipdeploy/ship/pkg/proxy"
	"github.com/shipdeploy/ship/pkg/proxy/certs"
)

// serveFront serves a Router with n routes to target on a plain and a TLS listener.
func serveFront(addr, tlsAddr, target string, n int, certFile, keyFile string) error {
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	dir, err := os.MkdirTemp("", "proxyd-certs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	m, err := certs.New(certs.Config{Dir: dir, Directory: "https://127.0.0.1:1/none", Logger: log})
	if err != nil {
		return err
	}
	if err := m.SetCustom("bench", certFile, keyFile); err != nil {
		return err
	}
	rt := proxy.NewRouter(proxy.RouterOptions{Logger: log})
	ctx := context.Background()
	hc := proxy.HealthCheck{Path: "/up", Interval: 50 * time.Millisecond, Deadline: 10 * time.Second}
	var routes []*proxy.Route
	for i := range n {
		owner := fmt.Sprintf("app%d/web", i)
		r := proxy.NewRoute(owner, nil, proxy.RouteOptions{Logger: log})
		if err := r.Deploy(ctx, target, hc, 0); err != nil {
			return err
		}
		if err := rt.Set(proxy.Binding{Owner: owner, Hosts: []string{fmt.Sprintf("h%d.bench.test", i)}}, r); err != nil {
			return err
		}
		routes = append(routes, r)
	}
	plainLn, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	tlsLn, err := net.Listen("tcp", tlsAddr)
	if err != nil {
		return err
	}
	plain := proxy.NewListener(plainLn, rt, proxy.ListenerOptions{Logger: log})
	secure := proxy.NewListener(tlsLn, rt, proxy.ListenerOptions{TLS: m.TLSConfig(), Logger: log})
	errc := make(chan error, 2)
	go func() { errc <- plain.Serve() }()
	go func() { errc <- secure.Serve() }()
	fmt.Printf("ready %s,%s %d\n", plainLn.Addr(), tlsLn.Addr(), os.Getpid())

	if err := untilSignal(errc); err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	plain.Shutdown(sctx)
	secure.Shutdown(sctx)
	for _, r := range routes {
		r.Shutdown(sctx)
	}
	return nil
}
