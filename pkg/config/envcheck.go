package config

import "strings"

// CheckRegistryEnv checks a registry given by the environment variable name (e.g.
// SHIP_REGISTRY) as the file's registry: is checked. Its problem names the variable
// where a file's names a line.
func CheckRegistryEnv(name, value string) error {
	p := &parser{}
	p.checkRegistry(nil, name, value)
	if len(p.problems) > 0 {
		for i := range p.problems {
			// The fix is written as the variable is set: NAME=value.
			p.problems[i].Msg = strings.ReplaceAll(p.problems[i].Msg, `"`+name+`: `, `"`+name+`=`)
		}
		return &Error{Problems: p.problems}
	}
	return nil
}
