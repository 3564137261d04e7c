package cli

import (
	"io"
	"os"

	"golang.org/x/term"
)

// IOStreams is where a command reads and writes. Library packages never print:
// everything a user sees goes through here.
type IOStreams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer

	// InTTY and OutTTY say whether In and Out are terminals.
	InTTY  bool
	OutTTY bool
	// Getenv reads the environment; tests give their own.
	Getenv func(string) string
	// Environ lists the environment as KEY=VALUE, for compose interpolation.
	Environ func() []string
}

// System returns the process's own streams.
func System() *IOStreams {
	return &IOStreams{
		In:      os.Stdin,
		Out:     os.Stdout,
		ErrOut:  os.Stderr,
		InTTY:   term.IsTerminal(int(os.Stdin.Fd())),
		OutTTY:  term.IsTerminal(int(os.Stdout.Fd())),
		Getenv:  os.Getenv,
		Environ: os.Environ,
	}
}
