// Package term is shipctl's one renderer: the IO streams a command reads and writes,
// and what it draws on them (the event printer, the live region redrawn in place, the
// countdown, the questions and the passphrase prompt). Terminal control sequences
// live here and nowhere else.
package term

import (
	"bufio"
	"io"
	"os"
	"strings"

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

// Width is how many columns Out has: the terminal's width, else 80.
func (s *IOStreams) Width() int {
	if f, ok := s.Out.(*os.File); ok {
		if width, _, err := term.GetSize(int(f.Fd())); err == nil && width > 20 {
			return width
		}
	}
	return 80
}

// ReadPassword reads a line from In without echoing it when In is a terminal; the
// line ending is not part of it.
func (s *IOStreams) ReadPassword() ([]byte, error) {
	if f, ok := s.In.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return term.ReadPassword(int(f.Fd()))
	}
	line, err := bufio.NewReader(s.In).ReadString('\n')
	if err != nil && line == "" {
		return nil, err
	}
	return []byte(strings.TrimRight(line, "\r\n")), nil
}
