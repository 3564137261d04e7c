package cli

import (
	"github.com/shipdeploy/ship/pkg/term"
)

// IOStreams is where a command reads and writes (pkg/term).
type IOStreams = term.IOStreams

// System returns the process's own streams.
func System() *IOStreams { return term.System() }

// newPrinter is the printer of a command's events on g's streams.
func newPrinter(g *Globals) *term.Printer { return term.NewPrinter(g.IO, g.JSON) }
