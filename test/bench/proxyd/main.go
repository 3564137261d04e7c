// Command proxyd is the proxy benchmark's two servers. It stands in for shipd (one route
// of pkg/proxy in a process of its own) until shipd runs its routes, and for the app.
//
//	proxyd backend -listen 127.0.0.1:0            answers every request with 100 bytes
//	proxyd proxy -listen 127.0.0.1:0 -target ADDR  one route to ADDR (health check /up)
//	proxyd front -listen 127.0.0.1:0 -tls-listen 127.0.0.1:0 -target ADDR -hosts N -cert FILE -key FILE
//	    a Router on a plain and a TLS listener with N routes to ADDR, for the names
//	    h0.bench.test ... h<N-1>.bench.test, HTTPS with the custom certificate FILE
//
// Each prints "ready ADDR PID" on stdout when it serves (front: "ready PLAIN,TLS PID"). SIGTERM or SIGINT: a graceful
// shutdown. SIGHUP (proxy): a handover; the process starts its successor with the
// listening socket, waits until it serves, then shuts down, so that no connection is
// refused. The successor takes the socket with proxy.Inherit and prints its own ready line.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/shipdeploy/ship/pkg/proxy"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "proxyd:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: proxyd backend|proxy [flags]")
	}
	fs := flag.NewFlagSet("proxyd "+args[0], flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to serve")
	target := fs.String("target", "", "proxy: the backend's address")
	size := fs.Int("size", 100, "backend: body size in bytes")
	tlsListen := fs.String("tls-listen", "127.0.0.1:0", "front: the HTTPS address")
	hosts := fs.Int("hosts", 1, "front: routed host names")
	certFile := fs.String("cert", "", "front: certificate file (PEM) for *.bench.test")
	keyFile := fs.String("key", "", "front: its key file")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile to this file until the process stops")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if host, _, err := net.SplitHostPort(*listen); err != nil || !net.ParseIP(host).IsLoopback() {
		return fmt.Errorf("-listen %q: a loopback address is required", *listen)
	}
	switch args[0] {
	case "backend":
		return backend(*listen, *size)
	case "proxy":
		return serveProxy(*listen, *target)
	case "front":
		return serveFront(*listen, *tlsListen, *target, *hosts, *certFile, *keyFile)
	default:
		return fmt.Errorf("unknown mode %q", args[0])
	}
}

func backend(addr string, size int) error {
	body := []byte(strings.Repeat("x", size-1) + "\n")
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write(body)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Printf("ready %s %d\n", ln.Addr(), os.Getpid())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	if err := untilSignal(errc); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(ctx)
}

// untilSignal waits for SIGTERM or an interrupt (nil), or for a server's end (its
// error: a server that ends by itself has failed).
func untilSignal(errc <-chan error) error {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(sig)
	select {
	case err := <-errc:
		return err
	case <-sig:
		return nil
	}
}

func serveProxy(addr, target string) error {
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	in, err := proxy.Inherit()
	if err != nil {
		return err
	}
	ln, _, err := in.Listen(addr)
	if err != nil {
		return err
	}
	in.Close()
	// The target first, then serve: meanwhile connections wait in the listener's backlog
	// instead of getting a 503.
	route := proxy.NewRoute("bench", ln, proxy.RouteOptions{Logger: log})
	ctx := context.Background()
	hc := proxy.HealthCheck{Path: "/up", Interval: 50 * time.Millisecond, Deadline: 10 * time.Second}
	if err := route.Deploy(ctx, target, hc, 0); err != nil {
		return err
	}
	srv := proxy.NewServer(log)
	if err := srv.Add(route); err != nil {
		return err
	}
	if err := proxy.Ready(); err != nil {
		return err
	}
	fmt.Printf("ready %s %d\n", ln.Addr(), os.Getpid())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt, syscall.SIGHUP)
	for s := range sig {
		if s == syscall.SIGHUP {
			if err := handover(ctx, route.Listener(), route.Target()); err != nil {
				log.Error("handover failed; serving on", "err", err)
				continue
			}
		}
		break
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// handover starts this program again with the listener and returns once it serves.
func handover(ctx context.Context, ln net.Listener, target string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	// The listener's real address: with port 0 the successor would not find it.
	cmd := exec.Command(self, "proxy", "-listen", ln.Addr().String(), "-target", target)
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := proxy.StartSuccessor(ctx, cmd, []net.Listener{ln}); err != nil {
		return err
	}
	return cmd.Process.Release()
}
