package config

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// ErrInvalid marks every problem with a config file: errors.Is(err, ErrInvalid)
// holds for validation failures, a missing file and an unknown environment.
var ErrInvalid = errors.New("invalid config")

// Problem is one thing wrong in a config file, with where it is and what to
// write instead.
type Problem struct {
	File   string
	Line   int // 1-based; 0 when the problem is about the whole file
	Column int // 1-based; 0 when not known
	Msg    string
}

// String formats p as "file:line:col: msg", leaving out what is not known.
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
		if p.Column > 0 {
			fmt.Fprintf(&b, ":%d", p.Column)
		}
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Error holds every problem found in a config file.
type Error struct {
	Problems []Problem
}

// Error lists the problems one per line, in file order.
func (e *Error) Error() string {
	ps := sortedProblems(e.Problems)
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

func sortedProblems(ps []Problem) []Problem {
	out := append([]Problem(nil), ps...)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].File != out[j].File {
			return out[i].File < out[j].File
		}
		if out[i].Line != out[j].Line {
			return out[i].Line < out[j].Line
		}
		return out[i].Column < out[j].Column
	})
	return out
}
