package config

// CheckRegistryEnv checks a registry given by the environment variable name (e.g.
// SHIP_REGISTRY) as the file's registry: is checked. Its problem names the variable
// where a file's names a line.
func CheckRegistryEnv(name, value string) error {
	p := &parser{}
	p.checkRegistry(nil, name, value)
	if len(p.problems) > 0 {
		return &Error{Problems: p.problems}
	}
	return nil
}
