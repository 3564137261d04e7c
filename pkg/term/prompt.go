package term

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"
	"time"
)

// AskYesNo asks question on ErrOut and reads the answer from In; only y or yes is yes.
// Ctrl-C (ctx) while it waits cancels.
func (s *IOStreams) AskYesNo(ctx context.Context, question string) (bool, error) {
	fmt.Fprintf(s.ErrOut, "? %s [y/N] ", question)
	answer := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(s.In).ReadString('\n')
		answer <- strings.ToLower(strings.TrimSpace(line))
	}()
	select {
	case <-ctx.Done():
		fmt.Fprintln(s.ErrOut)
		return false, ctx.Err()
	case a := <-answer:
		return a == "y" || a == "yes", nil
	}
}

// Asker asks questions with a default on a terminal, reading the answers from one
// buffered In.
type Asker struct {
	in  *bufio.Reader
	out io.Writer
}

// Asker returns an Asker on the streams.
func (s *IOStreams) Asker() *Asker { return &Asker{in: bufio.NewReader(s.In), out: s.ErrOut} }

// Ask prompts for one value with its default shown; an empty answer or the end of
// input keeps the default. An answer check refuses is asked again, three times at
// most.
func (a *Asker) Ask(question, def string, check func(string) error) string {
	for range 3 {
		fmt.Fprintf(a.out, "? %s [%s]: ", question, def)
		line, err := a.in.ReadString('\n')
		answer := strings.TrimSpace(line)
		if answer == "" {
			if err != nil {
				fmt.Fprintln(a.out)
			}
			return def
		}
		if cerr := check(answer); cerr != nil {
			fmt.Fprintf(a.out, "  %v\n", cerr)
			if err != nil {
				return def
			}
			continue
		}
		return answer
	}
	fmt.Fprintf(a.out, "  keeping %s\n", def)
	return def
}

// Passphrase asks for the passphrase of the key in file on ErrOut, and reads it
// without echo.
func (s *IOStreams) Passphrase(file string) ([]byte, error) {
	fmt.Fprintf(s.ErrOut, "Passphrase for %s: ", file)
	defer fmt.Fprintln(s.ErrOut)
	return s.ReadPassword()
}

// Countdown waits for d. On a terminal (live) it counts the seconds down on one line
// of ErrOut, erased at the end. It returns ctx's error when ctx ends first.
func (s *IOStreams) Countdown(ctx context.Context, d time.Duration, live bool) error {
	deadline := time.Now().Add(d)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	erase := func() {
		if live {
			fmt.Fprint(s.ErrOut, clearLine)
		}
	}
	for {
		left := time.Until(deadline)
		if left <= 0 {
			erase()
			return nil
		}
		if live {
			fmt.Fprintf(s.ErrOut, "%sstarting in %ds (Ctrl-C cancels)", clearLine, int(left.Round(time.Second).Seconds()))
		}
		select {
		case <-ctx.Done():
			erase()
			return ctx.Err()
		case <-tick.C:
		case <-time.After(left):
		}
	}
}
