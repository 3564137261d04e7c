// Command shipd is ship's agent on a server: it swaps containers blue-green behind its
// reverse proxy. See pkg/agent.
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
