// Command shipctl takes a Docker Compose application from a git checkout to running servers.
package main

import (
	"os"

	"github.com/shipdeploy/ship/pkg/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], cli.System()))
}
