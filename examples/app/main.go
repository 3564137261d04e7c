// Command app is the example application that ship's demo and tests deploy: a tiny HTTP
// server with a health endpoint, built as a static binary into a FROM scratch image.
//
//	app serve           serve HTTP on $PORT (default 8080)
//	app check URL...    GET each URL until it answers 200 (the test suite's client)
//
// Environment for serve: VERSION (shown by /version), SLOW_START (a duration to wait
// before listening), FAIL_HEALTH=1 (/up answers 503), GREETING, ADMIN_PORT (a second
// port serving the same, each answer with the header X-App-Port naming it).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	args := os.Args[1:]
	if len(args) == 0 {
		args = []string{"serve"}
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(os.Getenv)
	case "check":
		err = check(args[1:], os.Stdout)
	case "health":
		// For a compose healthcheck in a scratch image: exit 0 when /up answers 200.
		err = check([]string{"-timeout=2s", "http://127.0.0.1:" + port(os.Getenv) + "/up"}, io.Discard)
	default:
		err = fmt.Errorf("unknown command %q (want serve, check or health)", args[0])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "app:", err)
		os.Exit(1)
	}
}

func port(getenv func(string) string) string {
	if p := getenv("PORT"); p != "" {
		return p
	}
	return "8080"
}

func serve(getenv func(string) string) error {
	if d := getenv("SLOW_START"); d != "" {
		wait, err := time.ParseDuration(d)
		if err != nil {
			return fmt.Errorf("SLOW_START: %w", err)
		}
		fmt.Printf("starting slowly: %s\n", wait)
		time.Sleep(wait)
	}
	ver := getenv("VERSION")
	if ver == "" {
		ver = "dev"
	}
	failHealth := getenv("FAIL_HEALTH") == "1"
	host, _ := os.Hostname()

	mux := http.NewServeMux()
	mux.HandleFunc("/up", func(w http.ResponseWriter, r *http.Request) {
		if failHealth {
			http.Error(w, "unhealthy (FAIL_HEALTH=1)", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/version", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"version": ver, "host": host})
	})
	// What a proxy in front said of the client, for the tests of shipd's front door.
	mux.HandleFunc("/headers", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{
			"x-real-ip":       r.Header.Get("X-Real-IP"),
			"x-forwarded-for": r.Header.Get("X-Forwarded-For"),
		})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		greeting := getenv("GREETING")
		if greeting == "" {
			greeting = "hello from ship's example app"
		}
		fmt.Fprintf(w, "%s (%s)\n", greeting, ver)
	})
	srv := &http.Server{Addr: ":" + port(getenv), Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	fmt.Printf("app %s listening on %s\n", ver, srv.Addr)
	var admin *http.Server
	if p := getenv("ADMIN_PORT"); p != "" {
		tagged := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-App-Port", p)
			mux.ServeHTTP(w, r)
		})
		admin = &http.Server{Addr: ":" + p, Handler: tagged, ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- admin.ListenAndServe() }()
		fmt.Printf("app %s listening on %s (admin)\n", ver, admin.Addr)
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	fmt.Println("shutting down")
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if admin != nil {
		go admin.Shutdown(shutdown)
	}
	return srv.Shutdown(shutdown)
}

// check GETs every URL until it answers 200, or fails after -timeout. With -expect,
// the body must contain that text.
func check(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 30*time.Second, "how long to keep trying")
	expect := fs.String("expect", "", "text the body must contain")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("check: no URL given")
	}
	client := &http.Client{Timeout: 2 * time.Second}
	for _, url := range fs.Args() {
		deadline := time.Now().Add(*timeout)
		for {
			err := get(client, url, *expect)
			if err == nil {
				fmt.Fprintf(out, "ok   %s\n", url)
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintf(out, "FAIL %s: %v\n", url, err)
				return fmt.Errorf("%s: %w", url, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

func get(client *http.Client, url, expect string) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if expect != "" && !strings.Contains(string(body), expect) {
		return fmt.Errorf("body %q does not contain %q", strings.TrimSpace(string(body)), expect)
	}
	return nil
}
