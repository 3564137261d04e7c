// Command tool runs inside test builds' RUN steps, in FROM scratch images where there
// is no shell.
//
//	tool stamp DIR   count a build in the cache mount DIR/count; write /out/greeting
//	                 ($GREETING, a build arg) and /out/count
//	tool fail        write two lines and exit 3
//	tool sleep       say so, then sleep for ten minutes
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: tool stamp DIR | tool fail | tool sleep")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "stamp":
		if err := stamp(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "tool:", err)
			os.Exit(1)
		}
	case "fail":
		fmt.Println("about to fail")
		fmt.Fprintln(os.Stderr, "tool: boom, as asked")
		os.Exit(3)
	case "sleep":
		fmt.Println("sleeping")
		time.Sleep(10 * time.Minute)
	default:
		fmt.Fprintf(os.Stderr, "tool: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}

func stamp(cache string) error {
	n := 0
	if data, err := os.ReadFile(filepath.Join(cache, "count")); err == nil {
		n, _ = strconv.Atoi(strings.TrimSpace(string(data)))
	}
	n++
	if err := os.WriteFile(filepath.Join(cache, "count"), []byte(strconv.Itoa(n)), 0o644); err != nil {
		return err
	}
	if err := os.MkdirAll("/out", 0o755); err != nil {
		return err
	}
	if err := os.WriteFile("/out/greeting", []byte(os.Getenv("GREETING")), 0o644); err != nil {
		return err
	}
	fmt.Printf("build number %d in this cache\n", n)
	return os.WriteFile("/out/count", []byte(strconv.Itoa(n)), 0o644)
}
