// Command loadgen sends HTTP load to a loopback address and reports what it saw.
//
//	loadgen -url http://127.0.0.1:8080/up -rate 200 -duration 10s -fresh 0.25
//	loadgen -url http://127.0.0.1:8080/up -saturate 32 -duration 5s -json
//
// It exits 1 with -strict when any request did not get a 2xx answer, 2 on bad flags.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/shipdeploy/ship/test/loadgen"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c loadgen.Config
	fs.StringVar(&c.URL, "url", "", "URL to GET; the host must be a loopback IP (127.0.0.0/8, ::1)")
	fs.Float64Var(&c.Rate, "rate", 100, "requests per second (fixed schedule)")
	fs.DurationVar(&c.Duration, "duration", 10*time.Second, "how long to send (at most "+loadgen.MaxDuration.String()+")")
	fs.IntVar(&c.Requests, "n", 0, "at most this many requests (0: rate x duration)")
	fs.IntVar(&c.Conns, "conns", 8, "keep-alive connections")
	fs.Float64Var(&c.Fresh, "fresh", 0.25, "share of requests on a fresh connection each (0..1)")
	fs.DurationVar(&c.Timeout, "timeout", 5*time.Second, "per request, and grace for requests running at the end")
	saturate := fs.Int("saturate", 0, "instead of a rate, run this many closed-loop workers to find the maximum throughput")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	strict := fs.Bool("strict", false, "exit 1 when any request did not get a 2xx answer")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if c.URL == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "loadgen: -url is required and takes no arguments")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var rep *loadgen.Report
	var err error
	if *saturate > 0 {
		c.Workers = *saturate
		if c.Conns < c.Workers {
			c.Conns = c.Workers
		}
		rep, err = loadgen.Saturate(ctx, c)
	} else {
		rep, err = loadgen.Run(ctx, c)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	} else {
		err = rep.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "loadgen:", err)
		return 1
	}
	if *strict && rep.Failed() > 0 {
		return 1
	}
	return 0
}
